"""Coaches: turn action receipts into per-action scores (:class:`~mappa_envs.records.Judgement`).

- :class:`Coach` — the protocol (``judge`` / ``ajudge`` over a batch of records).
- :class:`OpenAICoach` — any OpenAI-compatible endpoint; needs the ``openai`` package (``pip install
  'mappa-rl[coach]'``), imported only when used.
- :class:`RuleCoach` — deterministic, offline rules (online or hindsight blame), built from :class:`Rubric`
  objects (:mod:`mappa_envs.coach.rubrics`); a pipeline adds one with ``Role(rubrics=...)``.
- :class:`MixtureCoach` — a weighted mean of coaches with every component observable.
- :class:`SimpleCoach` / :func:`coach_from` — your own coach from one method or one function.
- :class:`CalibratedCoach` — any coach with its per-tag bias removed as training goes (``"calibrated:<coach>"``).
- :func:`parse_judgement` — the strict reply parser; :func:`coach_messages` — the coach prompt.
- :func:`make_coach` / :func:`register_coach` — coach backends by name (``"rules"``, ``"openai:MODEL"``, yours).
- :class:`BiasMonitor` — running coach score vs real outcome per role and task tag, with drift warnings.

The reward wrappers that turn judgements into PettingZoo rewards live in :mod:`mappa_envs.rewards`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mappa_envs.coach.backends import coach_backends, make_coach, register_coach
from mappa_envs.coach.base import Coach, MixtureCoach
from mappa_envs.coach.cache import JudgementCache, cache_key, default_cache_dir
from mappa_envs.coach.calibrated import CalibratedCoach
from mappa_envs.coach.monitor import BiasMonitor, CoachBiasWarning
from mappa_envs.coach.parse import CoachParseError, parse_judgement
from mappa_envs.coach.prompts import JUDGEMENT_SCHEMA, PromptLimits, coach_messages
from mappa_envs.coach.rubrics import Fired, Rubric, RubricContext
from mappa_envs.coach.rules import RuleCoach, RuleWeights
from mappa_envs.coach.simple import SimpleCoach, coach_from

if TYPE_CHECKING:
    from mappa_envs.coach.openai_coach import CoachStats, CoachUnavailable, OpenAICoach

__all__ = [
    "JUDGEMENT_SCHEMA",
    "BiasMonitor",
    "CalibratedCoach",
    "Coach",
    "CoachBiasWarning",
    "CoachParseError",
    "CoachStats",
    "CoachUnavailable",
    "Fired",
    "JudgementCache",
    "MixtureCoach",
    "OpenAICoach",
    "SimpleCoach",
    "PromptLimits",
    "Rubric",
    "RubricContext",
    "RuleCoach",
    "RuleWeights",
    "coach_messages",
    "cache_key",
    "coach_backends",
    "coach_from",
    "default_cache_dir",
    "make_coach",
    "parse_judgement",
    "register_coach",
]

_LAZY = {"OpenAICoach", "CoachUnavailable", "CoachStats"}


def __getattr__(name: str) -> Any:
    """Import the OpenAI backend on first use, so the rule coach works without the ``openai`` package."""
    if name in _LAZY:
        from mappa_envs.coach import openai_coach

        return getattr(openai_coach, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
