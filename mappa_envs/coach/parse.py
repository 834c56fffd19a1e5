"""Read a coach model's reply into a :class:`Judgement`, or say precisely why it cannot be read.

The reference coach grabbed the first number anywhere in the text when its regex failed ("1." from "1. Files
check" became a score) and silently used 5.0 when there was none. Here a reply is accepted only in shapes that say
unambiguously which number is the score, tried in this order (the first shape present decides):

1. **JSON object** with a ``score`` key (also ``process_score``, ``final_score``, ``overall_score``; any case),
   anywhere in the reply: bare, in a ```` ```json ```` fence, or with prose around it. Tolerated: trailing commas,
   Python-style single quotes, the score as a numeric string (``"7"``, ``"7/10"``, ``"7 out of 10"``).
2. **Labelled score** in prose: ``PROCESS_SCORE: 7``, ``**Score:** 7/10``, ``Score = [7]``, ``Rating: 8.5``,
   ``score is 6`` (markdown emphasis and quotes around the label are ignored).
3. **Fraction of 10** in prose: ``7/10``, ``7 out of 10`` ("I give this 10 out of 10 points" is fine).
4. **Bare reply**: the whole reply is a number, optionally in brackets (``7``, ``[7]``, ``7.5.``).

Within the deciding shape every score must agree; several different scores are ambiguous and rejected. Every score
must be a finite number in [0, 10] (no clamping: 11 is a misunderstanding, not a 10), and a fraction must be out of
10 (``4/5`` is another scale; the caller re-asks). Reasoning in ``<think>`` blocks is ignored. A bracketed number
inside prose (``[7]``) is *not* accepted: it is as likely a citation or a list index as a score.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Iterator
from typing import Any

from mappa_envs.coach.think import strip_think
from mappa_envs.records import Judgement, trim

SCORE_KEYS = ("score", "process_score", "final_score", "overall_score")
RATIONALE_KEYS = ("rationale", "reason", "reasoning", "explanation", "justification", "analysis", "feedback")
RATIONALE_LIMIT = 2000

_NUM = r"[-+]?\d+(?:\.\d+)?"
_NUMERIC_STRING = re.compile(rf"^\s*\[?\s*({_NUM})\s*(?:(?:/|out\s+of)\s*({_NUM}))?\s*\]?\s*$", re.IGNORECASE)
_LABELLED = re.compile(
    r"(?<![A-Za-z])[\"']?(?:process[ _-]?score|final[ _-]?score|overall[ _-]?score|score|rating)[\"']?"
    r"(?:\s*\([^)\n]{0,20}\))?"  # "Score (0-10): 7"
    r"\s*(?:[:=]|\bis\b)\s*\[?\s*"
    rf"(?P<num>{_NUM})(?!\.?\d)"
    rf"(?:\s*(?:/|out\s+of)\s*(?P<den>{_NUM}))?",
    re.IGNORECASE,
)
_FRACTION = re.compile(rf"(?<![\w.])(?P<num>{_NUM})\s*(?:/|\bout\s+of)\s*10(?!\.?\d)(?!\s*/)", re.IGNORECASE)
_BARE = re.compile(rf"^\[?\s*({_NUM})\s*\]?\.?$")
_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_MARKDOWN = re.compile(r"\*\*|__|`")


class CoachParseError(ValueError):
    """A reply could not be read as a judgement. ``reason`` says why; ``reply`` is the text as received."""

    def __init__(self, reason: str, reply: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


def parse_judgement(reply: str | None, *, source: str = "llm") -> Judgement:
    """Parse a coach reply into a Judgement (see the module docstring for the accepted shapes).

    Raises :class:`CoachParseError` with the reason when the reply is empty, has no score, several different
    scores, or a score that is not a finite number in [0, 10].
    """
    score, rationale = parse_score(reply)
    return Judgement(score=score, rationale=rationale, source=source)


def parse_score(reply: str | None) -> tuple[float, str]:
    """Return ``(score, rationale)`` from a reply; raise :class:`CoachParseError` if it is not readable."""
    if reply is None or not reply.strip():
        raise CoachParseError("empty reply", reply)
    text = strip_think(reply)
    if not text:
        raise CoachParseError("the reply holds only reasoning (<think>) and no answer", reply)

    from_json = _from_json(text, reply)
    if from_json is not None:
        return from_json

    prose = _MARKDOWN.sub("", text)
    rationale = trim(text, RATIONALE_LIMIT)
    for name, pattern in (("labelled score", _LABELLED), ("fraction of 10", _FRACTION)):
        found = [_checked(m.group("num"), m.groupdict().get("den"), reply) for m in pattern.finditer(prose)]
        if found:
            return _agreeing(found, name, reply), rationale
    bare = _BARE.match(prose.strip().strip("\"'").strip())
    if bare:
        return _checked(bare.group(1), None, reply), ""
    raise CoachParseError(
        'no score found: expected a JSON object {"score": <0-10>, "rationale": "..."} '
        "or a labelled score such as 'Score: 7/10'",
        reply,
    )


def _from_json(text: str, reply: str) -> tuple[float, str] | None:
    """Scores from every JSON object in the text that has a score key; None when there is no such object."""
    scores: list[float] = []
    rationale = ""
    for obj in _json_objects(text):
        keys = {k.lower(): k for k in obj if isinstance(k, str)}
        present = [keys[k] for k in SCORE_KEYS if k in keys]
        if not present:
            continue
        for key in present:
            scores.append(_score_value(obj[key], reply))
        if not rationale:
            for k in RATIONALE_KEYS:
                if k in keys and isinstance(obj[keys[k]], str):
                    rationale = obj[keys[k]].strip()
                    break
    if not scores:
        return None
    return _agreeing(scores, "JSON score", reply), trim(rationale or "(no rationale given)", RATIONALE_LIMIT)


def _score_value(value: Any, reply: str) -> float:
    if isinstance(value, bool) or value is None:
        raise CoachParseError(f"score {value!r} is not a number", reply)
    if isinstance(value, int | float):
        return _in_range(float(value), reply)
    if isinstance(value, str):
        m = _NUMERIC_STRING.match(value)
        if m:
            return _checked(m.group(1), m.group(2), reply)
    raise CoachParseError(f"score {value!r} is not a number", reply)


def _checked(num: str, den: str | None, reply: str) -> float:
    if den is not None and float(den) != 10.0:
        raise CoachParseError(f"score {num}/{den} is not on the 0-10 scale", reply)
    return _in_range(float(num), reply)


def _in_range(x: float, reply: str) -> float:
    if not math.isfinite(x):
        raise CoachParseError(f"score {x!r} is not a finite number", reply)
    if not 0.0 <= x <= 10.0:
        raise CoachParseError(f"score {x:g} is outside [0, 10]", reply)
    return x


def _agreeing(scores: list[float], what: str, reply: str) -> float:
    distinct = sorted(set(scores))
    if len(distinct) > 1:
        listed = ", ".join(f"{s:g}" for s in distinct)
        raise CoachParseError(f"ambiguous: several different {what}s ({listed})", reply)
    return distinct[0]


def _json_objects(text: str) -> Iterator[dict[Any, Any]]:
    """Dicts decoded from fenced blocks and from every outermost ``{...}`` span of the text."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)]
    candidates += list(_brace_spans(text))
    for candidate in candidates:
        obj = _decode(candidate.strip())
        if isinstance(obj, dict):
            yield obj


def _decode(candidate: str) -> Any:
    for attempt in (candidate, _TRAILING_COMMA.sub(r"\1", candidate)):
        try:
            return json.loads(attempt)
        except ValueError:
            pass
    try:  # single-quoted keys/strings, True/None: a Python literal, never evaluated as code
        return ast.literal_eval(_TRAILING_COMMA.sub(r"\1", candidate))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def _brace_spans(text: str) -> Iterator[str]:
    """Outermost balanced ``{...}`` spans, skipping braces inside double-quoted strings."""
    depth, start, in_string, escaped = 0, -1, False, False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"' and depth > 0:
            in_string = True
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                yield text[start : i + 1]
