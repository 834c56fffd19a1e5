"""Rewards: one definition of what an action is paid (:mod:`.definition`) and the wrappers that pay it.

``make()`` builds ``raw env → reward wrapper → OrderEnforcingWrapper`` with one of :class:`CoachReward`,
:class:`OutcomeReward` or :class:`MixedReward`; :func:`paid` reads back what the wrapper paid each action, which is
what a trainer trains on.
"""

from mappa_envs.rewards.definition import OUTCOME, OUTCOME_TO, OutcomeTo, RewardWeights, action_rewards
from mappa_envs.rewards.wrappers import (
    CoachReward,
    MixedReward,
    OutcomeReward,
    RewardStats,
    RewardWrapper,
    paid,
    reward_wrapper,
)

__all__ = [
    "OUTCOME",
    "OUTCOME_TO",
    "CoachReward",
    "MixedReward",
    "OutcomeReward",
    "OutcomeTo",
    "RewardStats",
    "RewardWeights",
    "RewardWrapper",
    "action_rewards",
    "paid",
    "reward_wrapper",
]
