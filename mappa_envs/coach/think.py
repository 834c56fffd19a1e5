"""Remove model reasoning from a *coach's* reply before the score parser reads it.

A reasoning coach model (Qwen3, DeepSeek-R1 style) writes numbers while thinking; the parser must only see its
answer. This is :func:`mappa_envs.text.strip_think` (the engine's definition of the visible answer, linear time)
extended to the ``<thinking>`` and ``<reasoning>`` tags some coach models use. Agent actions go through
:func:`mappa_envs.text.strip_think` itself, so the coach judges exactly what the next agent saw.
"""

from __future__ import annotations

import re

from mappa_envs.text import strip_think as _strip_think_tags

_OTHER_TAGS = re.compile(r"<(/?)(?:thinking|reasoning)\s*>", re.IGNORECASE)


def strip_reasoning(text: str) -> str:
    """``text`` without ``<think>``/``<thinking>``/``<reasoning>`` blocks, stripped of surrounding whitespace.

    Complete blocks are removed; everything before an unpaired closing tag is reasoning (the chat template opened
    the block); an unclosed opening tag hides the rest (generation stopped while thinking).
    """
    return _strip_think_tags(_OTHER_TAGS.sub(r"<\1think>", text))
