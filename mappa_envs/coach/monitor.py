"""Coach bias monitor: does the coach's opinion of a slice of actions match how that slice really turns out?

The MAPPA paper found its coach favouring regression tasks, and training amplified it: the agents learned what the
coach liked, not what the grader rewarded. This monitor keeps, per role and per task tag (and over everything),
the running mean coach score next to the real outcome rate of the same episodes, and reports a slice whose two
numbers drift apart.

Units: the coach rate is ``mean score / 10`` (the coach reward), the outcome rate is the mean outcome reward
(``outcome="reward"``, in [0, 1]; for maths this is the success rate) or the success rate (``outcome="success"``).
``gap = coach rate − outcome rate``; ``excess = gap − the gap over all episodes`` (how much more this slice is
favoured than the rest — a coach that is generous everywhere has a large gap but no excess).

A slice drifts when it has at least ``min_count`` episodes and ``|gap|`` (or ``|excess|`` with ``relative=True``)
exceeds ``threshold``. The first time a slice drifts the monitor warns (a :class:`CoachBiasWarning` through
``warnings`` and a ``logging`` warning); it stays quiet about that slice until the slice recovers (falls back
within the threshold), after which a new drift warns again. ``summary()`` gives one dict row per slice for a
trainer's logger; ``metrics()`` the same flattened into scalar names.

Feed it finished, coached episodes: ``monitor.update(records)`` (a :class:`~mappa_envs.rewards.CoachReward`
built with ``monitor=`` does this at every episode end).
"""

from __future__ import annotations

import logging
import warnings
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mappa_envs.records import ActionRecord

log = logging.getLogger(__name__)

ALL = "all"


class CoachBiasWarning(UserWarning):
    """A slice's mean coach score and its real outcome rate have drifted apart."""


@dataclass
class _Episode:
    score_sum: float  # sum of coach scores (0-10) of the slice's actions in this episode
    actions: int
    reward: float
    success: float


@dataclass
class _Slice:
    window: int | None
    episodes: deque[_Episode] = field(init=False)
    score_sum: float = 0.0
    actions: int = 0
    reward_sum: float = 0.0
    success_sum: float = 0.0

    def __post_init__(self) -> None:
        self.episodes = deque(maxlen=self.window)

    def add(self, e: _Episode) -> None:
        if self.window is not None and len(self.episodes) == self.window:
            old = self.episodes[0]
            self.score_sum -= old.score_sum
            self.actions -= old.actions
            self.reward_sum -= old.reward
            self.success_sum -= old.success
        self.episodes.append(e)
        self.score_sum += e.score_sum
        self.actions += e.actions
        self.reward_sum += e.reward
        self.success_sum += e.success

    @property
    def count(self) -> int:
        return len(self.episodes)

    def coach_score(self) -> float:
        return self.score_sum / self.actions if self.actions else float("nan")

    def reward_rate(self) -> float:
        return self.reward_sum / self.count if self.count else float("nan")

    def success_rate(self) -> float:
        return self.success_sum / self.count if self.count else float("nan")


class BiasMonitor:
    """Running coach-score vs outcome-rate per slice (``role:<name>``, ``tag:<tag>``, ``all``), with drift warnings.

    Args:
        threshold: how far apart (in [0, 1] units, coach score / 10 vs outcome rate) counts as drift.
        min_count: episodes a slice needs before it can drift.
        window: keep only the last ``window`` episodes per slice (None: everything since creation).
        relative: compare ``excess`` (the slice's gap minus the overall gap) instead of the gap itself.
        outcome: ``"reward"`` (mean outcome reward) or ``"success"`` (success rate) as the outcome rate.
        slices: which slice kinds to keep: ``"role"``, ``"tag"`` (``"all"`` is always kept).
    """

    def __init__(
        self,
        threshold: float = 0.3,
        min_count: int = 20,
        *,
        window: int | None = None,
        relative: bool = False,
        outcome: Literal["reward", "success"] = "reward",
        slices: Sequence[str] = ("role", "tag"),
    ) -> None:
        if not threshold > 0:
            raise ValueError(f"threshold must be > 0, got {threshold!r}")
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count!r}")
        if window is not None and window < 1:
            raise ValueError(f"window must be None or >= 1, got {window!r}")
        if outcome not in ("reward", "success"):
            raise ValueError(f"outcome must be 'reward' or 'success', got {outcome!r}")
        unknown = set(slices) - {"role", "tag"}
        if unknown:
            raise ValueError(f"slices may be 'role' and 'tag', got {sorted(unknown)}")
        self.threshold = float(threshold)
        self.min_count = int(min_count)
        self.window = window
        self.relative = relative
        self.outcome = outcome
        self.kinds = tuple(slices)
        self._slices: dict[str, _Slice] = {}
        self._warned: set[str] = set()
        self.warnings_issued = 0
        self.episodes = 0
        self.skipped = 0

    # ------------------------------------------------------------------------------------------------- input

    def update(self, records: Sequence[ActionRecord]) -> list[str]:
        """Add one finished episode (its records, coached, with the outcome); returns the slices that started
        drifting with it (each also warned about)."""
        judged = [r for r in records if r.judgement is not None]
        outcome = next((r.outcome for r in reversed(records) if r.outcome is not None), None)
        if not judged or outcome is None:
            self.skipped += 1
            log.debug("bias monitor: skipped an episode without judgements or outcome")
            return []
        self.episodes += 1
        reward = _float(outcome.get("reward"), default=float(bool(outcome.get("success"))))
        success = 1.0 if outcome.get("success") else 0.0
        groups: dict[str, list[ActionRecord]] = {ALL: judged}
        if "role" in self.kinds:
            for r in judged:
                groups.setdefault(f"role:{r.role}", []).append(r)
        if "tag" in self.kinds:
            tags = {t for r in judged for t in r.task_tags}
            for t in sorted(tags):
                groups[f"tag:{t}"] = judged
        for name, rs in groups.items():
            s = self._slices.get(name)
            if s is None:
                s = self._slices[name] = _Slice(self.window)
            score = sum(float(r.judgement.score) for r in rs)  # type: ignore[union-attr]
            s.add(_Episode(score, len(rs), reward, success))
        return self._check()

    def update_many(self, episodes: Iterable[Sequence[ActionRecord]]) -> list[str]:
        """``update`` for several episodes; returns every slice that started drifting."""
        started: list[str] = []
        for records in episodes:
            started.extend(self.update(records))
        return started

    # ------------------------------------------------------------------------------------------------ output

    def summary(self) -> list[dict[str, Any]]:
        """One row per slice (``all`` first, then roles, then tags), ready for a logger or a table.

        Keys: ``slice``, ``kind``, ``value``, ``episodes``, ``actions``, ``coach_score`` (mean 0–10),
        ``coach_rate`` (score / 10), ``outcome_rate`` (the rate compared), ``mean_reward``, ``success_rate``,
        ``gap``, ``excess``, ``drifting``.
        """
        overall = self._gap(self._slices[ALL]) if ALL in self._slices else float("nan")
        rows = []
        for name in sorted(self._slices, key=lambda n: (n != ALL, not n.startswith("role:"), n)):
            s = self._slices[name]
            kind, _, value = name.partition(":")
            gap = self._gap(s)
            rows.append(
                {
                    "slice": name,
                    "kind": kind,
                    "value": value or ALL,
                    "episodes": s.count,
                    "actions": s.actions,
                    "coach_score": s.coach_score(),
                    "coach_rate": s.coach_score() / 10.0,
                    "outcome_rate": self._rate(s),
                    "mean_reward": s.reward_rate(),
                    "success_rate": s.success_rate(),
                    "gap": gap,
                    "excess": gap - overall,
                    "drifting": name in self._warned,
                }
            )
        return rows

    def metrics(self, prefix: str = "coach_bias") -> dict[str, float]:
        """``summary()`` flattened: ``{f"{prefix}/{slice}/{key}": value}`` for the numeric keys."""
        out: dict[str, float] = {}
        for row in self.summary():
            for key in ("coach_rate", "outcome_rate", "gap", "excess", "episodes"):
                out[f"{prefix}/{row['slice']}/{key}"] = float(row[key])
            out[f"{prefix}/{row['slice']}/drifting"] = float(row["drifting"])
        return out

    def drifting(self) -> list[str]:
        """The slices currently reported as drifting."""
        return sorted(self._warned)

    def format(self) -> str:
        """``summary()`` as a fixed-width text table."""
        head = f"{'slice':<28} {'n':>5} {'coach':>6} {'outcome':>7} {'gap':>6} {'excess':>6}  drift"
        lines = [head]
        for r in self.summary():
            lines.append(
                f"{r['slice'][:28]:<28} {r['episodes']:>5} {r['coach_rate']:>6.2f} {r['outcome_rate']:>7.2f} "
                f"{r['gap']:>+6.2f} {r['excess']:>+6.2f}  {'YES' if r['drifting'] else ''}"
            )
        return "\n".join(lines)

    # ----------------------------------------------------------------------------------------------- internals

    def _rate(self, s: _Slice) -> float:
        return s.reward_rate() if self.outcome == "reward" else s.success_rate()

    def _gap(self, s: _Slice) -> float:
        return s.coach_score() / 10.0 - self._rate(s)

    def _check(self) -> list[str]:
        overall = self._gap(self._slices[ALL])
        started = []
        for name, s in self._slices.items():
            gap = self._gap(s)
            measure = gap - overall if self.relative else gap
            drifting = s.count >= self.min_count and abs(measure) > self.threshold
            if drifting and name not in self._warned:
                self._warned.add(name)
                started.append(name)
                self._warn(name, s, gap, measure)
            elif not drifting and name in self._warned and s.count >= self.min_count:
                self._warned.discard(name)
                log.info(
                    "coach bias: %s recovered (%s %+.2f within ±%.2f)",
                    name,
                    "excess" if self.relative else "gap",
                    measure,
                    self.threshold,
                )
        return started

    def _warn(self, name: str, s: _Slice, gap: float, measure: float) -> None:
        direction = "higher" if measure > 0 else "lower"
        what = "than over all episodes" if self.relative else "than its outcomes"
        message = (
            f"coach bias on {name}: mean coach score {s.coach_score():.2f}/10 (rate {s.coach_score() / 10:.2f}) vs "
            f"outcome rate {self._rate(s):.2f} ({self.outcome}) over {s.count} episodes — the coach rates this "
            f"slice {direction} {what} by {abs(measure):.2f} (threshold {self.threshold:.2f}). Agents trained on "
            "these rewards may learn to please the coach instead of the grader; check the coach's rubric for "
            "this slice or mix in the outcome reward."
        )
        self.warnings_issued += 1
        log.warning(message)
        warnings.warn(message, CoachBiasWarning, stacklevel=3)


def _float(x: Any, default: float) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return default
