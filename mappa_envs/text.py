"""Text helpers shared by the engine, the graders and the coach: what part of an answer is visible, what runs.

Only the *visible* answer counts: reasoning inside ``<think>`` is neither executed, nor passed downstream, nor
graded. (The reference ran every fenced block of the whole output, thinking included, and let thinking leak to
the next agents when the model emitted only a closing ``</think>``.)
"""

from __future__ import annotations

import re

_THINK_TAG = re.compile(r"<(/?)think\s*>", re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_FENCE = re.compile(
    r"^[ \t]*```[ \t]*(?:python3?|py)[ \t]*\n(.*?)^[ \t]*```[ \t]*$",
    re.DOTALL | re.IGNORECASE | re.MULTILINE,
)


def strip_think(text: str) -> str:
    """The visible part of a model answer: without ``<think>`` blocks.

    Also drops everything before an unpaired ``</think>`` (templates that open ``<think>`` in the prompt make the
    model emit only the closing tag) and an unclosed ``<think>`` up to the end of the text (a truncated thought).
    Linear time, so a pathological answer cannot stall grading.
    """
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    visible: list[str] = []
    start = 0
    inside = False
    for m in _THINK_TAG.finditer(text):
        closing = m.group(1) == "/"
        if not closing:
            if not inside:
                visible.append(text[start : m.start()])
                inside = True
        elif inside:
            inside = False
            start = m.end()
        else:  # unpaired </think>: all that came before was thinking
            visible.clear()
            start = m.end()
    if not inside:
        visible.append(text[start:])
    return "".join(visible).strip()


def python_blocks(text: str) -> list[str]:
    """The fenced python blocks (```python / ```py) of the visible answer, in order."""
    return [m.group(1) for m in _FENCE.finditer(strip_think(text))]


def strip_ansi(text: str) -> str:
    """Kernel tracebacks are coloured; agents and coaches read plain text."""
    return _ANSI.sub("", text)
