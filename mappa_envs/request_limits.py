"""The limits every OpenAI-compatible client in mappa runs under: concurrency, per-call timeout, bounded retries
with jittered exponential backoff. One definition, so a served agent and the coach bound their calls alike.

Worst-case time of one logical request: ``(1 + max_retries)`` calls of at most ``timeout_s`` plus the backoff
sleeps, each at most ``max_backoff_s``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RequestLimits:
    concurrency: int = 16
    timeout_s: float = 60.0
    max_retries: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError(
                f"backoff_s and max_backoff_s must be >= 0, got {self.backoff_s}, {self.max_backoff_s}"
            )

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based): doubling, capped, ±25 % jitter."""
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        return delay * (0.75 + 0.5 * random.random())
