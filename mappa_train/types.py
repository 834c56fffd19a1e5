"""The trainer's data contracts: what a generation returns and what one training sample is.

One sample = one action of one agent: the exact token ids the policy sampled (never re-tokenised from text), the
log-probabilities the behaviour policy gave them, and the scalar reward the coach (or the outcome) assigned to the
action. Everything downstream — advantages, losses, logs — is a function of lists of these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

Message = dict[str, str]


@dataclass
class Generation:
    """One sampled reply: text for the env, token ids and behaviour log-probs for the update."""

    text: str
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    truncated: bool  # stopped by max_new_tokens rather than by an end-of-turn token


@dataclass
class Sample:
    """One action as a training example.

    ``reward`` is the per-action reward (coach score / 10, or the outcome for outcome-only training), placed on the
    action's last token by the advantage estimators. ``outcome_reward`` is the episode's graded outcome (kept for
    baselines and logs). ``group`` ties samples that answer the same prompt (GRPO-style baselines).
    ``correction``: the coach's corrected reply for this action (a supervised target, never an observation) and
    ``coach_score`` the judgement's score in [0, 10] that decides whether the action fell short; None without them.
    """

    role: str
    prompt_ids: list[int]
    completion_ids: list[int]
    behaviour_logprobs: list[float]
    reward: float
    truncated: bool = False
    outcome_reward: float = 0.0
    task_id: str = ""
    task_tags: tuple[str, ...] = ()
    episode_id: str = ""
    step: int = 0
    group: str = ""
    correction: str | None = None
    coach_score: float | None = None


class Policy(Protocol):
    """What rollouts need from a team policy (see :class:`mappa_train.policy.TeamPolicy`)."""

    roles: list[str]

    def generate(self, role: str, prompts: list[list[Message]]) -> list[Generation]:
        """Sample one reply per prompt with ``role``'s weights, in one batch."""
        ...
