"""A coach that removes its own per-tag bias as training goes (the MAPPA paper's "stateful coaching").

The paper's coach scored regression tasks 0.5–1.8 points above equivalent classification tasks, and training
amplified it. :class:`CalibratedCoach` wraps any coach and keeps, per role, a
:class:`~mappa_envs.coach.monitor.BiasMonitor` over task tags fed with the wrapped coach's *raw* scores and the
episodes' real outcomes. A tag slice's ``excess`` is how much more that slice's mean coach score exceeds its outcome
rate than the role's actions do overall; once the slice has ``min_count`` episodes, ``strength × 10 × excess``
points (the mean over the record's tags) are taken off every new score of that role on that tag, clipped to
[0, 10]. A coach that is equally generous everywhere is left alone: only differences between tags are removed, and
per-role generosity is what the trainer's per-role normalisation already absorbs.

Calibration learns only from finished episodes (:meth:`CalibratedCoach.observe`, which the reward wrappers call at
every episode end), so an episode's own scores never shift its correction, online and hindsight alike. The raw
score and the correction are written at the head of each judgement's rationale, so transcripts log both, and
:meth:`CalibratedCoach.metrics` gives the current offsets for a logger.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from mappa_envs.coach.base import Coach
from mappa_envs.coach.monitor import BiasMonitor
from mappa_envs.pipeline import Role
from mappa_envs.records import ActionRecord, Judgement

log = logging.getLogger(__name__)


class CalibratedCoach:
    """``coach`` with per-role, per-tag score offsets removed (see the module docstring).

    Args:
        coach: the coach whose scores are calibrated.
        min_count: episodes a (role, tag) slice needs before its offset is applied.
        window: episodes each slice remembers (older ones are forgotten, so the correction follows the coach as
            the team's behaviour changes); None keeps everything.
        strength: the fraction of the measured offset removed (1.0 removes all of it).
        outcome: what the coach's scores are compared with: ``"reward"`` or ``"success"``.
    """

    def __init__(
        self,
        coach: Coach,
        *,
        min_count: int = 20,
        window: int | None = 200,
        strength: float = 1.0,
        outcome: str = "reward",
        owns: bool = False,
    ) -> None:
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength!r}")
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count!r}")
        self.coach = coach
        self.min_count = int(min_count)
        self.window = window
        self.strength = float(strength)
        self.outcome = outcome
        self.name = f"calibrated({getattr(coach, 'name', type(coach).__name__)})"
        self._owns = owns
        self._monitors: dict[str, BiasMonitor] = {}
        self._raw: dict[tuple[str, int], Judgement] = {}

    # ---------------------------------------------------------------------------------------------- judging

    def judge(
        self, records: Sequence[ActionRecord], roles: Mapping[str, Role], context: str = ""
    ) -> list[Judgement]:
        return self._calibrate(records, self.coach.judge(records, roles, context))

    async def ajudge(
        self, records: Sequence[ActionRecord], roles: Mapping[str, Role], context: str = ""
    ) -> list[Judgement]:
        return self._calibrate(records, await self.coach.ajudge(records, roles, context))

    def offset(self, role: str, tags: Sequence[str]) -> float:
        """Points taken off a score of ``role`` on a task with ``tags`` right now (negative: points added)."""
        monitor = self._monitors.get(role)
        if monitor is None:
            return 0.0
        rows = {row["slice"]: row for row in monitor.summary()}
        excess = [
            rows[f"tag:{t}"]["excess"]
            for t in tags
            if f"tag:{t}" in rows and rows[f"tag:{t}"]["episodes"] >= self.min_count
        ]
        excess = [e for e in excess if math.isfinite(e)]
        return self.strength * 10.0 * sum(excess) / len(excess) if excess else 0.0

    def _calibrate(self, records: Sequence[ActionRecord], raw: Sequence[Judgement]) -> list[Judgement]:
        out = []
        for record, judgement in zip(records, raw, strict=True):
            self._raw[(record.episode_id, record.step)] = judgement
            shift = self.offset(record.role, record.task_tags)
            if judgement.source == "fallback" or shift == 0.0:
                out.append(judgement)
                continue
            score = min(10.0, max(0.0, judgement.score - shift))
            note = f"calibrated {score:.2f} = raw {judgement.score:g} - offset {shift:+.2f} for tags {list(record.task_tags)}"
            out.append(replace(judgement, score=score, rationale=f"{note}\n{judgement.rationale}"))
        return out

    # ------------------------------------------------------------------------------------------- calibration

    def observe(self, records: Sequence[ActionRecord]) -> None:
        """Learn from one finished episode: its raw scores from this coach against its real outcome."""
        by_role: dict[str, list[ActionRecord]] = {}
        for r in records:
            raw = self._raw.pop((r.episode_id, r.step), None)
            if raw is None or raw.source == "fallback":
                continue
            by_role.setdefault(r.role, []).append(replace(r, judgement=raw))
        for role, rs in by_role.items():
            monitor = self._monitors.get(role)
            if monitor is None:
                monitor = self._monitors[role] = BiasMonitor(
                    threshold=1.0,  # warnings are the plain monitor's job; this one only measures
                    min_count=self.min_count,
                    window=self.window,
                    relative=True,
                    outcome=self.outcome,  # type: ignore[arg-type]
                    slices=("tag",),
                )
            before = {t: self.offset(role, (t,)) for t in rs[0].task_tags}
            monitor.update(rs)
            for t, old in before.items():
                new = self.offset(role, (t,))
                if abs(new - old) >= 0.25 or (old == 0.0 and new != 0.0):
                    log.info(
                        "coach calibration: %s on tag %s now %+.2f points (was %+.2f)", role, t, -new, -old
                    )

    def metrics(self, prefix: str = "coach_calibration") -> dict[str, float]:
        """The offset (points removed) of every (role, tag) slice that has one: ``{prefix}/{role}/{tag}``."""
        out = {}
        for role, monitor in sorted(self._monitors.items()):
            for row in monitor.summary():
                if row["kind"] == "tag" and row["episodes"] >= self.min_count:
                    out[f"{prefix}/{role}/{row['value']}"] = self.offset(role, (row["value"],))
        return out

    def stats_dict(self) -> dict[str, Any]:
        inner = getattr(self.coach, "stats_dict", None)
        return {**(inner() if callable(inner) else {}), "calibration": self.metrics()}

    def close(self) -> None:
        if self._owns:
            close = getattr(self.coach, "close", None)
            if callable(close):
                close()


def calibrated(model: str, **kwargs: Any) -> CalibratedCoach:
    """The ``"calibrated:<coach>"`` backend: ``make_coach("calibrated:rules")``, ``"calibrated:openai:MODEL"``."""
    from mappa_envs.coach.backends import make_coach

    options = {k: kwargs.pop(k) for k in ("min_count", "window", "strength") if k in kwargs}
    inner, owned = make_coach(model or "rules", **kwargs)
    return CalibratedCoach(inner, owns=owned, **options)
