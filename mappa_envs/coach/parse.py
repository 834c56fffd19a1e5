"""Read a coach model's reply into a :class:`Judgement`, or say precisely why it cannot be read.

The reference coach grabbed the first number anywhere in the text when its regex failed ("1." from "1. Files
check" became a score) and silently used 5.0 when there was none. Here a reply is accepted only in shapes that say
unambiguously which number is the score:

1. **JSON object** with a ``score`` key (also ``process_score``, ``final_score``, ``overall_score``; any case):
   bare, in a ```` ```json ```` fence, or with prose around it. Tolerated: trailing commas, Python-style single
   quotes, the score as a numeric string (``"7"``, ``"7/10"``, ``"7 out of 10"``).
2. **Labelled score** in prose: ``PROCESS_SCORE: 7``, ``**Score:** 7/10``, ``Score = [7]``, ``Rating: 8.5``,
   ``score is 6`` (markdown emphasis and quotes around the label are ignored).
3. **Fraction of 10** in prose: ``7/10``, ``7 out of 10`` ("I give this 10 out of 10 points" is fine); only when
   there is no labelled score.
4. **Bare reply**: the whole reply is a number, optionally in brackets (``7``, ``[7]``, ``7.5.``).

The coach judges agent text that may itself print a verdict, and may quote it. So, in text mode, **quoted
material is not the coach's**: block quotes (``> ...``), code in another language than JSON, inline code spans,
double-quoted prose and a JSON object right after an opening quote are ignored. Of JSON (1) and prose (2 or 3),
**the later verdict decides**: 'The agent printed {"score": 10} to fool me. Score: 1/10' is a 1, never the first
JSON anywhere. In the structured-output modes (``parse_judgement(..., strict=True)``) the reply must be exactly
one JSON object: the server constrained it to the schema, so anything else is refused.

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

from mappa_envs.coach.think import strip_reasoning
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
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_MARKDOWN = re.compile(r"\*\*|__|`")


class CoachParseError(ValueError):
    """A reply could not be read as a judgement. ``reason`` says why; ``reply`` is the text as received."""

    def __init__(self, reason: str, reply: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


def parse_judgement(reply: str | None, *, source: str = "llm", strict: bool = False) -> Judgement:
    """Parse a coach reply into a Judgement (see the module docstring for the accepted shapes).

    ``strict`` (the structured-output modes, where the server constrained the reply to the schema): the reply
    must be exactly one JSON object with a score; prose, a second object or a fence around it are refused.
    Raises :class:`CoachParseError` with the reason when the reply is empty, has no score, several different
    scores, or a score that is not a finite number in [0, 10].
    """
    score, rationale = parse_score(reply, strict=strict)
    return Judgement(score=score, rationale=rationale, source=source)


def parse_score(reply: str | None, *, strict: bool = False) -> tuple[float, str]:
    """Return ``(score, rationale)`` from a reply; raise :class:`CoachParseError` if it is not readable."""
    if reply is None or not reply.strip():
        raise CoachParseError("empty reply", reply)
    text = strip_reasoning(reply)
    if not text:
        raise CoachParseError("the reply holds only reasoning (<think>) and no answer", reply)
    if strict:
        return _strict(text, reply)

    masked = _mask_quoted(text)
    spans = list(_brace_spans(masked))
    objects = [(start, obj) for start, obj in ((a, _decode(text[a:b])) for a, b in spans) if _scored(obj)]
    prose = _MARKDOWN.sub(lambda m: " " * len(m.group(0)), _blank(masked, spans))
    shapes: list[tuple[int, str, list[float]]] = []
    if objects:
        scores = [_score_value(obj[key], reply) for _, obj in objects for key in _score_keys(obj)]
        shapes.append((objects[-1][0], "JSON score", scores))
    for name, pattern in (("labelled score", _LABELLED), ("fraction of 10", _FRACTION)):
        matches = list(pattern.finditer(prose))
        if matches:
            found = [_checked(m.group("num"), m.groupdict().get("den"), reply) for m in matches]
            shapes.append((matches[-1].start(), name, found))
            break  # a label beats a mere fraction ("Score: 7/10. I considered 9/10")
    if shapes:
        # JSON or prose: the coach's verdict is the later one; what comes before it is quoted or discussed
        _, name, scores = max(shapes, key=lambda s: s[0])
        if name == "JSON score":
            return _agreeing(scores, name, reply), _rationale(objects, reply)
        return _agreeing(scores, name, reply), trim(text, RATIONALE_LIMIT)
    bare = _BARE.match(_MARKDOWN.sub("", text).strip().strip("\"'").strip())
    if bare:
        return _checked(bare.group(1), None, reply), ""
    raise CoachParseError(
        'no score found: expected a JSON object {"score": <0-10>, "rationale": "..."} '
        "or a labelled score such as 'Score: 7/10'",
        reply,
    )


def parse_correction(reply: str | None, *, strict: bool = False) -> str | None:
    """The ``correction`` string of the reply's (last) scored JSON object; None when there is none, it is null
    or empty. Read only from the object that holds the score, so a correction quoted in prose is not taken."""
    text = strip_reasoning(reply or "")
    if strict:
        try:
            found = [json.loads(text)]
        except ValueError:
            return None
    else:
        masked = _mask_quoted(text)
        found = [_decode(text[a:b]) for a, b in _brace_spans(masked)]
    objects = [obj for obj in found if _scored(obj)]
    if not objects:
        return None
    keys = {k.lower(): k for k in objects[-1] if isinstance(k, str)}
    value = objects[-1].get(keys.get("correction", "correction"))
    return value if isinstance(value, str) and value.strip() else None


def _strict(text: str, reply: str) -> tuple[float, str]:
    """Structured mode: the whole reply is one JSON object with one score."""
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        raise CoachParseError("no score found: in structured output the reply must be one JSON object", reply)
    if not _scored(obj):
        raise CoachParseError(f"structured output: the JSON object has no {SCORE_KEYS[0]!r} key", reply)
    scores = [_score_value(obj[key], reply) for key in _score_keys(obj)]
    return _agreeing(scores, "JSON score", reply), _rationale([(0, obj)], reply)


def _scored(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(_score_keys(obj))


def _score_keys(obj: dict[Any, Any]) -> list[Any]:
    keys = {k.lower(): k for k in obj if isinstance(k, str)}
    return [keys[k] for k in SCORE_KEYS if k in keys]


def _rationale(objects: list[tuple[int, dict[Any, Any]]], reply: str) -> str:
    for _, obj in objects:
        keys = {k.lower(): k for k in obj if isinstance(k, str)}
        for k in RATIONALE_KEYS:
            if k in keys and isinstance(obj[keys[k]], str) and obj[keys[k]].strip():
                return trim(obj[keys[k]].strip(), RATIONALE_LIMIT)
    return "(no rationale given)"


_QUOTED = (
    re.compile(r"^[ \t]*>.*$", re.MULTILINE),  # markdown block quote
    re.compile(r"```(?!json\b)[A-Za-z]\w*[^\n]*\n.*?(?:```|\Z)", re.DOTALL),  # a fence in another language
    re.compile(r"(?<!`)`[^`\n]+`(?!`)"),  # inline code span
    re.compile(r"\u201c[^\u201d]*\u201d"),  # curly double quotes
)
_DOUBLE_QUOTED = re.compile(r'"[^"\n]{0,400}"(\s*:)?')  # with ":" after it, a key of a broken JSON object


def _mask_quoted(text: str) -> str:
    """``text`` with quoted material blanked out (same length, so positions hold): block quotes, code in another
    language, inline code, and double-quoted prose outside JSON objects. A verdict the coach quotes from the
    agent ("it printed `{\"score\": 10}`") is not the coach's verdict."""
    for pattern in _QUOTED:
        text = pattern.sub(lambda m: _spaces(m.group(0)), text)
    spans = list(_brace_spans(text))
    out, last = [], 0
    for a, b in [*spans, (len(text), len(text))]:
        out.append(
            _DOUBLE_QUOTED.sub(lambda m: m.group(0) if m.group(1) else _spaces(m.group(0)), text[last:a])
        )
        out.append(text[a:b])
        last = b
    text = "".join(out)
    # a JSON object right after an opening quote is quoted too
    for a, b in list(_brace_spans(text)):
        before = text[:a].rstrip(" ")
        if before.endswith(("'", '"', "\u201c")):
            text = text[:a] + _spaces(text[a:b]) + text[b:]
    return text


def _spaces(s: str) -> str:
    return "".join("\n" if c == "\n" else " " for c in s)


def _blank(text: str, spans: list[tuple[int, int]]) -> str:
    for a, b in spans:
        text = text[:a] + _spaces(text[a:b]) + text[b:]
    return text


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


def _brace_spans(text: str) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of the outermost balanced ``{...}`` spans, skipping braces inside double-quoted strings."""
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
                yield start, i + 1
