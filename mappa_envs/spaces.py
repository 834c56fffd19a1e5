"""Spaces for text agents that PettingZoo's conformance tests accept.

Gymnasium's stock ``Text`` rejects what real models write (newlines are fine, but ANSI escapes from tracebacks,
emoji and anything outside its charset are not, and ``min_length`` defaults to 1, so an empty answer would be
"out of bounds"). ``AgentText`` accepts any ``str`` up to ``max_length`` and samples printable text.
Observations are chat messages, a structure no stock space describes: ``ChatMessages`` declares and checks it.
"""

from __future__ import annotations

import string
from typing import Any

import numpy as np
from gymnasium import spaces

CHAT_ROLES = ("system", "user", "assistant", "tool")


class AgentText(spaces.Text):
    """Any Python string of at most ``max_length`` characters (samples use printable ASCII incl. newlines)."""

    def __init__(self, max_length: int = 32_768, seed: int | np.random.Generator | None = None) -> None:
        super().__init__(max_length=max_length, min_length=0, charset=string.printable, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        # Uniform lengths up to 32k would make random-agent tests slow and unreadable; short replies suffice.
        length = int(self.np_random.integers(0, min(self.max_length, 256) + 1))
        chars = self.np_random.choice(list(self.characters), size=length)
        return "".join(chars)

    def __repr__(self) -> str:
        return f"AgentText(max_length={self.max_length})"


class ChatMessages(spaces.Space):
    """A list of ``{"role": one of CHAT_ROLES, "content": str}`` dicts (JSON-serialisable)."""

    def __init__(self, max_content: int = 1_000_000, seed: int | np.random.Generator | None = None) -> None:
        self.max_content = max_content
        super().__init__(shape=None, dtype=None, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def contains(self, x: Any) -> bool:
        if not isinstance(x, list) or not x:
            return False
        for m in x:
            if not isinstance(m, dict) or set(m) != {"role", "content"}:
                return False
            if m["role"] not in CHAT_ROLES or not isinstance(m["content"], str):
                return False
            if len(m["content"]) > self.max_content:
                return False
        return True

    def sample(self, mask: Any = None, probability: Any = None) -> list[dict[str, str]]:
        text = AgentText(max_length=64, seed=int(self.np_random.integers(2**31)))
        return [{"role": "system", "content": text.sample()}, {"role": "user", "content": text.sample()}]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChatMessages) and other.max_content == self.max_content

    def __repr__(self) -> str:
        return "ChatMessages()"


def observation_space() -> spaces.Dict:
    """``{"messages": ChatMessages}`` — text under a key other than ``"observation"`` (PettingZoo compares dtypes there)."""
    return spaces.Dict({"messages": ChatMessages()})
