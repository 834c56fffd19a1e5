"""Math grading: the last ``\\boxed{}`` of the visible answer, checked against the expected answer with math_verify.

Thinking models put their scratch work inside ``<think>`` tags; only the text after it counts, so a box inside the
reasoning never scores. math_verify parses LaTeX with sympy, which can be slow or hang on adversarial input: the
boxed answer is capped in length, plain integers skip sympy entirely, and everything else is parsed and compared
in the isolated grader process (:mod:`mappa_envs.grading.isolated`) under a hard wall-time limit — math_verify's
own timeouts are signal based, work only on a main thread and cannot stop a C-level power computation such as
``9^{9^{9^{9}}}``. A grade that times out is wrong, with ``reason`` saying so.
"""

from __future__ import annotations

import functools
import math
import numbers
import re
import threading
from typing import Any

from mappa_envs.text import strip_think

MAX_ANSWER_CHARS = 200
"""Boxed answers longer than this are graded incorrect without parsing (no real answer is that long)."""

TIMEOUT_S = 2
"""Seconds math_verify may spend on one parse or one comparison (whole seconds: it uses ``signal.alarm``)."""
GRADE_TIMEOUT_S = 5.0
"""Hard wall time of one isolated comparison (the grader process is killed after it)."""

_BOX_CMD = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_INTEGER = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.0*)?")


def _brace_content(text: str, open_at: int) -> str | None:
    """Content of the brace group opening at ``text[open_at] == "{"``, or None when it never closes."""
    depth = 0
    i = open_at
    while i < len(text):
        c = text[i]
        if c == "\\":  # an escaped brace (\{ or \}) does not count
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
        i += 1
    return None


def extract_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in the visible text, braces matched.

    The last box is the final answer; if it never closes (a truncated answer) there is no answer, rather than
    an earlier, possibly intermediate, box. ``\\boxed 5`` (no braces) yields ``"5"``.
    """
    visible = strip_think(text)
    last = None
    for m in _BOX_CMD.finditer(visible):
        last = m
    if last is None:
        return None
    i = last.end()
    while i < len(visible) and visible[i].isspace():
        i += 1
    if i < len(visible) and visible[i] == "{":
        content = _brace_content(visible, i)
        return None if content is None else content.strip()
    token = re.match(r"[^\s$]+", visible[i:])
    return token.group(0).rstrip(".") if token else None


def normalize_expected(value: Any) -> str:
    """The expected answer as a string: ``142.0`` -> ``"142"``, ``7`` -> ``"7"``, strings stripped.

    Reference AMC files store integer answers as floats; printing them as integers keeps prompts, logs and string
    comparisons clean. Raises TypeError/ValueError for values that are no answer (None, bool, NaN, containers).
    """
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool) or value is None:
        raise TypeError(f"expected answer must be a string or a number, got {value!r}")
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        f = float(value)
        if not math.isfinite(f):
            raise ValueError(f"expected answer must be finite, got {value!r}")
        return str(int(f)) if f.is_integer() else repr(f)
    raise TypeError(f"expected answer must be a string or a number, got {type(value).__name__}")


def _as_integer(text: str) -> int | None:
    """``"142"``, ``"142.0"``, ``"023"``, ``"1,000"`` -> int; anything else -> None (left to math_verify)."""
    t = text.strip().strip("$").strip()
    if _INTEGER.fullmatch(t):
        return int(t.split(".")[0].replace(",", ""))
    return None


def _timeout() -> int | None:
    # math_verify's timeouts use signal.alarm, which raises outside the main thread; there the length cap is the guard.
    return TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


@functools.lru_cache(maxsize=4096)
def _parse_gold(expected: str) -> tuple:
    return tuple(_parse(expected))


def _parse(latex: str) -> list:
    from math_verify import parse

    return parse("\\boxed{" + latex + "}", parsing_timeout=_timeout())


def _verify(expected: str, answer: str) -> bool:
    """math_verify's verdict, computed in the isolated grader process (raises its timeout/failure errors)."""
    from mappa_envs.grading import isolated

    return bool(
        isolated.run("mappa_envs.grading.math:_verify_direct", expected, answer, timeout_s=GRADE_TIMEOUT_S)
    )


def _verify_direct(expected: str, answer: str) -> bool:
    from math_verify import verify

    gold = list(_parse_gold(expected))
    pred = _parse(answer)
    if not gold or not pred:
        return False
    return bool(verify(gold, pred, timeout_seconds=_timeout()))


_STATEMENT = re.compile(
    r"(?:final answer|the answer|answer)\s*(?:is|:|=)\s*\$?\s*(-?[0-9][0-9,]*(?:\.[0-9]+)?|\\frac\{[^{}]*\}\{[^{}]*\})",
    re.IGNORECASE,
)


def extract_statement(text: str) -> str | None:
    """The number in the last "final answer is N" / "the answer is N" / "Answer: N" of the visible text.

    A *declared* answer format for small models that state answers in words instead of ``\boxed{}`` (the
    reference's grader falls back the same way); only used when a pipeline opts in with
    ``answer_format="boxed_or_statement"``.
    """
    matches = list(_STATEMENT.finditer(strip_think(text)[-20_000:]))
    return matches[-1].group(1).replace(",", "") if matches else None


ANSWER_FORMATS = ("boxed", "boxed_or_statement")
"""What a maths grader (and a coach that agrees with it) accepts as a stated answer."""


def grade_math(response: str, expected: Any, answer_format: str = "boxed") -> dict[str, Any]:
    """Grade a model answer: is its last boxed answer equal to ``expected``?

    Returns ``{"correct", "answer", "expected", "success", "reward"}``; ``answer`` is the boxed text (None when
    there is none), ``success`` equals ``correct`` and ``reward`` is 1.0 or 0.0; when the grader itself failed
    (e.g. ``"grader timed out after 5s"``) a ``reason`` says so. Never raises on bad input, never hangs.
    With ``answer_format="boxed_or_statement"`` a reply without ``\boxed{}`` is graded on its last
    "the answer is N" statement instead (see :func:`extract_statement`).
    """
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")
    try:
        expected_s = normalize_expected(expected)
    except (TypeError, ValueError):
        expected_s = "" if expected is None else str(expected).strip()
    from mappa_envs.grading.isolated import GraderFailed, GraderTimeout

    correct = False
    answer: str | None = None
    reason = ""
    try:
        answer = extract_boxed(response) or None
        if answer is None and answer_format == "boxed_or_statement":
            answer = extract_statement(response)
        if answer is not None and expected_s:
            if len(answer) > MAX_ANSWER_CHARS:
                answer = answer[:MAX_ANSWER_CHARS]
            else:
                a_int, e_int = _as_integer(answer), _as_integer(expected_s)
                if a_int is not None and e_int is not None:
                    correct = a_int == e_int
                else:
                    correct = _verify(expected_s, answer)
    except (GraderTimeout, GraderFailed) as e:  # an answer that hangs or bloats the grader is simply wrong
        correct, reason = False, str(e)
    except Exception:  # grading must never crash an episode; an ungradable answer is simply wrong
        correct = False
    except BaseException as e:  # math_verify's TimeoutException derives from BaseException
        if type(e).__name__ != "TimeoutException":
            raise
        correct = False
    out = {
        "correct": correct,
        "answer": answer,
        "expected": expected_s,
        "success": correct,
        "reward": 1.0 if correct else 0.0,
    }
    if reason:
        out["reason"] = reason
    return out
