"""Text helpers shared by the engine, the graders and the coach: what part of an answer is visible, what runs.

Only the *visible* answer counts: reasoning inside ``<think>`` is neither executed, nor passed downstream, nor
graded. (The reference ran every fenced block of the whole output, thinking included, and let thinking leak to
the next agents when the model emitted only a closing ``</think>``.)
"""

from __future__ import annotations

import re

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_FENCE = re.compile(
    r"^[ \t]*```[ \t]*(?:python3?|py)[ \t]*\n(.*?)^[ \t]*```[ \t]*$",
    re.DOTALL | re.IGNORECASE | re.MULTILINE,
)


def strip_think(text: str) -> str:
    """Remove reasoning: paired ``<think>…</think>``, a prefix ending in an orphan ``</think>``, an unclosed tail."""
    text = _THINK_BLOCK.sub("", text)
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:  # the template opened <think> in the prompt: everything up to the last orphan close is thinking
        text = text[closes[-1].end() :]
    opened = _THINK_OPEN.search(text)
    if opened:  # generation stopped while still thinking
        text = text[: opened.start()]
    return text.strip()


def python_blocks(text: str) -> list[str]:
    """The fenced python blocks (```python / ```py) of the visible answer, in order."""
    return [m.group(1) for m in _FENCE.finditer(strip_think(text))]


def strip_ansi(text: str) -> str:
    """Kernel tracebacks are coloured; agents and coaches read plain text."""
    return _ANSI.sub("", text)
