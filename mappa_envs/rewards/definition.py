"""The per-action reward: one pure definition, read by the reward wrappers, the trainer and anyone else.

An action's reward is

    coach_weight · judgement.score / 10  +  outcome_weight · outcome["reward"]   (on the actions ``outcome_to`` names)

``outcome_to="every_action"`` (the ``-v2`` envs) pays the graded outcome to every action of every agent, as the
MAPPA paper's outcome-only baseline does: a coder that runs code and then answers is paid the outcome on both
turns, so a successful episode gives no turn a reward below the others. ``"last_action"`` books it on each
agent's last action only (how the ``-v0`` / ``-v1`` envs paid it, kept so their published configs reproduce).

An agent's PettingZoo reward over an episode is the sum of its actions' rewards, so the AEC view and the
per-action view can never disagree: the wrappers pay, step by step, the change in these sums.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mappa_envs.records import ActionRecord

OUTCOME = "outcome"
"""The key that names the bare env's graded outcome in a weights mapping (``{"coach": 0.5, "outcome": 0.5}``)."""

OutcomeTo = Literal["every_action", "last_action"]
OUTCOME_TO: tuple[OutcomeTo, ...] = ("every_action", "last_action")


def check_weight(name: str, weight: object) -> float:
    """``weight`` as a float, or a ValueError naming the weight: finite, >= 0, not a bool."""
    if (
        isinstance(weight, bool)
        or not isinstance(weight, int | float)
        or not math.isfinite(weight)
        or weight < 0
    ):
        raise ValueError(f"the weight of {name!r} must be a finite number >= 0, got {weight!r}")
    return float(weight)


@dataclass(frozen=True)
class RewardWeights:
    """How much of the coach's score and of the outcome an action is paid, and which actions get the outcome."""

    coach: float = 1.0
    outcome: float = 0.0
    outcome_to: OutcomeTo = "every_action"

    def __post_init__(self) -> None:
        object.__setattr__(self, "coach", check_weight("coach", self.coach))
        object.__setattr__(self, "outcome", check_weight(OUTCOME, self.outcome))
        if self.outcome_to not in OUTCOME_TO:
            raise ValueError(f"outcome_to must be one of {OUTCOME_TO}, got {self.outcome_to!r}")


def action_rewards(
    records: Sequence[ActionRecord],
    *,
    coach_weight: float = 1.0,
    outcome_weight: float = 0.0,
    outcome_to: OutcomeTo = "every_action",
    partial: bool = False,
) -> list[float]:
    """One reward per record, in order (see the module docstring for the formula).

    ``records`` may hold several episodes (grouped by ``episode_id``; "last action" is per episode and role).
    By default a record without a judgement (when ``coach_weight`` > 0) or without an outcome (when
    ``outcome_weight`` > 0) is an error: it was never coached, or its episode has not ended. ``partial=True`` counts
    what is not known yet as 0 — what has been paid so far in an unfinished episode (the wrappers use it).
    """
    weights = RewardWeights(coach_weight, outcome_weight, outcome_to)
    last: set[int] | None = None
    if weights.outcome_to == "last_action":
        latest: dict[tuple[str, str], int] = {}
        for i, r in enumerate(records):
            key = (r.episode_id, r.role)
            if key not in latest or r.step >= records[latest[key]].step:
                latest[key] = i
        last = set(latest.values())
    out = []
    for i, r in enumerate(records):
        value = 0.0
        if weights.coach:
            if r.judgement is not None:
                value += weights.coach * r.judgement.score / 10.0
            elif not partial:
                raise ValueError(
                    f"record {r.episode_id} step {r.step} ({r.role}) has no judgement: coach the episode first "
                    "(a CoachReward/MixedReward wrapper fills record.judgement)"
                )
        if weights.outcome and (last is None or i in last):
            if r.outcome is not None:
                value += weights.outcome * float(r.outcome.get("reward", 0.0))
            elif not partial:
                raise ValueError(
                    f"record {r.episode_id} step {r.step} ({r.role}) has no outcome yet: its episode has not ended"
                )
        out.append(value)
    return out
