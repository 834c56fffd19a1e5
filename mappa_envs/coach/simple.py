"""A coach in a few lines: write ``score`` (one action) or ``judge`` (a batch); the rest is derived.

The :class:`~mappa_envs.coach.base.Coach` protocol asks for a sync ``judge`` and an async ``ajudge`` because the
built-in LLM coach is only fast when many actions are judged concurrently. A user's coach rarely needs that, so
:class:`SimpleCoach` derives ``judge`` from ``score`` and ``ajudge`` from ``judge`` (in a worker thread, so an
async caller's event loop is never blocked by it), and :func:`coach_from` turns a plain function into a coach.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

from mappa_envs.coach.base import role_of
from mappa_envs.pipeline import Role
from mappa_envs.records import ActionRecord, Judgement

Verdict = float | int | tuple[float, str] | Judgement
"""What ``score`` may return: a score in [0, 10], ``(score, rationale)``, or a full :class:`Judgement`."""


class SimpleCoach:
    """Subclass and override :meth:`score` (or :meth:`judge` for batch logic, e.g. hindsight over an episode).

    ``name`` names the coach in logs and receipts; ``source`` is the :attr:`Judgement.source` of its verdicts.
    """

    name = "simple"
    source = "custom"

    def score(self, record: ActionRecord, role: Role, context: str) -> Verdict:
        """Score one action 0–10 from its receipt (``record``), its role and the pipeline's coach context."""
        raise NotImplementedError(f"{type(self).__name__} must override score() or judge()")

    def judge(
        self, records: Sequence[ActionRecord], roles: Mapping[str, Role], context: str = ""
    ) -> list[Judgement]:
        return [self.verdict(self.score(r, role_of(r, roles), context)) for r in records]

    async def ajudge(
        self, records: Sequence[ActionRecord], roles: Mapping[str, Role], context: str = ""
    ) -> list[Judgement]:
        return await asyncio.to_thread(self.judge, records, roles, context)

    def verdict(self, value: Verdict) -> Judgement:
        """A :class:`Judgement` from what :meth:`score` returned, with a message naming the coach if it is wrong."""
        if isinstance(value, Judgement):
            return value
        if isinstance(value, tuple) and len(value) == 2:
            score, rationale = value
        else:
            score, rationale = value, ""
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise TypeError(
                f"coach {self.name!r}: score() must return a number in [0, 10], (score, rationale) or a "
                f"Judgement; got {value!r}"
            )
        if not 0.0 <= float(score) <= 10.0:
            raise ValueError(f"coach {self.name!r}: score() returned {score!r}, outside [0, 10]")
        return Judgement(score=float(score), rationale=str(rationale), source=self.source)


class _FunctionCoach(SimpleCoach):
    def __init__(self, fn: Callable[[ActionRecord, Role, str], Verdict], name: str, source: str) -> None:
        self._fn = fn
        self.name = name
        self.source = source

    def score(self, record: ActionRecord, role: Role, context: str) -> Verdict:
        return self._fn(record, role, context)


def coach_from(
    fn: Callable[[ActionRecord, Role, str], Verdict], *, name: str | None = None, source: str = "custom"
) -> SimpleCoach:
    """A coach from a function ``fn(record, role, context) -> score | (score, rationale) | Judgement``."""
    return _FunctionCoach(fn, name or getattr(fn, "__name__", "custom"), source)
