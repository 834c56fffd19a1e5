"""Reward wrappers: PettingZoo ``BaseWrapper`` s that pay the agents by :func:`~.definition.action_rewards`.

- :class:`CoachReward` — a coach scores every action 0–10; the action's reward is ``score / 10``.
  ``when="online"`` judges each action right after its step (the acting agent's reward arrives at once; only the
  last action of the episode is judged knowing the outcome, like the MAPPA reference). ``when="hindsight"``
  judges every action of the episode in one batch once the outcome is known, so an upstream agent can be credited
  or blamed for what happened downstream (the data engineer who forgot ``X_test.pkl`` is blamed for the analyst's
  ``FileNotFoundError``); every reward then arrives at the end.
- :class:`OutcomeReward` — every action of every agent is paid the graded outcome (the baseline).
- :class:`MixedReward` — explicit weights over coaches and the outcome, e.g. ``{"rules": 0.5, "outcome": 0.5}``.

How rewards reach the agents (the PettingZoo way): after each step the wrapper rewrites the inner env's
``rewards`` (what this step paid) and ``_cumulative_rewards`` (what each agent collected since it last acted),
editing both dicts in place — rebinding them breaks ``api_test``. What a step pays an agent is the change, over
that step, of the sum of its actions' rewards under :func:`~.definition.action_rewards`; so an agent's PettingZoo
reward over an episode is exactly the sum of its actions' rewards, and :meth:`RewardWrapper.action_rewards` (what
the trainer reads, through :func:`paid`) is exactly what was paid. The bare env's own terminal reward is
*replaced*; the outcome enters only through the outcome weight.

Failures of the coach are never silent: ``fallback="error"`` (default) lets the coach's exception propagate with a
note naming the env, episode and mode; a number ``fallback=5.0`` replaces the failed judgements by that score
with ``source="fallback"``, counts them (``stats_dict()``), logs a warning and puts the episode's counts in every
agent's final ``infos[agent]["coach"]``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pettingzoo import AECEnv
from pettingzoo.utils.wrappers import BaseWrapper

from mappa_envs.coach.backends import CoachSpec, make_coach
from mappa_envs.coach.base import Coach, MixtureCoach
from mappa_envs.coach.monitor import BiasMonitor
from mappa_envs.pipeline import Role
from mappa_envs.records import ActionRecord, Judgement
from mappa_envs.rewards.definition import OUTCOME, OutcomeTo, RewardWeights, action_rewards, check_weight

log = logging.getLogger(__name__)

When = Literal["online", "hindsight"]
Fallback = Literal["error"] | float


def check_fallback(fallback: Fallback) -> None:
    if fallback == "error":
        return
    if isinstance(fallback, bool) or not isinstance(fallback, int | float) or not 0.0 <= fallback <= 10.0:
        raise ValueError(f'fallback must be "error" or a score in [0, 10], got {fallback!r}')


@dataclass
class RewardStats:
    """Counters since the wrapper was created (see :meth:`RewardWrapper.stats_dict`).

    ``judgements``: actions judged; ``fallbacks``: judgements with ``source="fallback"`` (the coach's own counted
    fallbacks plus the wrapper's); ``coach_errors``: coach calls that raised and were replaced by the wrapper's
    fallback score; ``sources``: judgements per source.
    """

    episodes: int = 0
    judgements: int = 0
    fallbacks: int = 0
    coach_errors: int = 0
    sources: Counter[str] = field(default_factory=Counter)


class RewardWrapper(BaseWrapper):
    """Pays each action ``coach_weight · score/10 + outcome_weight · outcome`` (see :mod:`.definition`).

    The common machinery of :class:`CoachReward`, :class:`OutcomeReward` and :class:`MixedReward` (see the module
    docstring for the AEC semantics). ``outcome_to`` says which actions are paid the outcome (``"every_action"``,
    or ``"last_action"`` as the ``-v0``/``-v1`` envs did). ``roles`` / ``context`` default to the unwrapped env's
    pipeline spec. ``monitor`` (a :class:`~mappa_envs.coach.monitor.BiasMonitor`) is updated with every finished
    episode. ``owned``: objects with a ``close()`` to close with the env (a coach built for it).
    """

    def __init__(
        self,
        env: AECEnv,
        coach: Coach | None = None,
        *,
        when: When = "hindsight",
        coach_weight: float = 1.0,
        outcome_weight: float = 0.0,
        outcome_to: OutcomeTo = "every_action",
        fallback: Fallback = "error",
        monitor: BiasMonitor | None = None,
        roles: Mapping[str, Role] | None = None,
        context: str | None = None,
        owned: Sequence[Any] = (),
    ) -> None:
        super().__init__(env)
        if when not in ("online", "hindsight"):
            raise ValueError(f"when must be 'online' or 'hindsight', got {when!r}")
        check_fallback(fallback)
        if coach is not None and not isinstance(coach, Coach):
            raise TypeError(f"coach must be a Coach, got {type(coach).__name__}")
        if monitor is not None and coach is None:
            raise ValueError("a bias monitor compares coach scores with outcomes: it needs a coach")
        self.reward_weights = RewardWeights(
            check_weight("coach", coach_weight) if coach is not None else 0.0, outcome_weight, outcome_to
        )
        self.coach = coach
        self.when: When = when
        self.fallback = fallback
        self.monitor = monitor
        spec = getattr(env.unwrapped, "spec", None)
        if roles is None and coach is not None:
            if spec is None or not hasattr(spec, "roles"):
                raise ValueError("the unwrapped env has no pipeline spec: pass roles= (role name -> Role)")
            roles = {r.name: r for r in spec.roles}
        self.roles: dict[str, Role] = dict(roles or {})
        self.context = context if context is not None else getattr(spec, "coach_context", "")
        self.stats = RewardStats()
        self._owned = list(owned)
        self._episode: list[ActionRecord] = []
        self._ended = False
        self._episode_judged = 0
        self._episode_fallbacks = 0

    @property
    def coach_weight(self) -> float:
        return self.reward_weights.coach

    @property
    def outcome_weight(self) -> float:
        return self.reward_weights.outcome

    # ------------------------------------------------------------------------------------------- PettingZoo

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        self._episode, self._ended = [], False
        self._episode_judged = self._episode_fallbacks = 0
        self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> None:
        env = self.env
        agent = env.agent_selection
        if env.terminations.get(agent, False) or env.truncations.get(agent, False):
            env.step(action)  # a dead step: nothing is paid (api: the agent leaves, the rewards dict clears)
            return
        before = dict(env._cumulative_rewards)
        totals_before = self.agent_rewards()
        env.step(action)
        record = env.infos.get(agent, {}).get("record")
        if isinstance(record, ActionRecord) and (not self._episode or self._episode[-1] is not record):
            self._episode.append(record)
            if self.coach is not None and self.when == "online":
                self._judge([record])
        if not self._ended and env.agents and all(self._done(a) for a in env.agents):
            self._ended = True
            self._end_episode()
        totals = self.agent_rewards()
        paid = {a: totals.get(a, 0.0) - totals_before.get(a, 0.0) for a in env.agents}
        for role in set(totals) - set(env.agents):
            if totals[role] != totals_before.get(role, 0.0):
                log.warning(
                    "%s: %s left the episode before it ended; its reward %.3f cannot be delivered through last() "
                    "(it is in action_rewards())",
                    self,
                    role,
                    totals[role] - totals_before.get(role, 0.0),
                )
        # Rewrite in place (api_test holds references to these dicts). The inner step reset the acting agent's
        # cumulative reward to 0 and added its own rewards to everyone's; recompute from the snapshot instead of
        # subtracting, so the arithmetic is exactly "cumulative += rewards".
        rewards, cumulative = env.rewards, env._cumulative_rewards
        for a in env.agents:
            rewards[a] = paid.get(a, 0.0)
            cumulative[a] = (0.0 if a == agent else before.get(a, 0.0)) + rewards[a]

    def close(self) -> None:
        try:
            self.env.close()
        finally:
            for c in self._owned:
                close = getattr(c, "close", None)
                if callable(close):
                    close()
            self._owned = []

    # ----------------------------------------------------------------------------------------- for trainers

    @property
    def episode_records(self) -> list[ActionRecord]:
        """The current (or just finished) episode's records, in step order."""
        return list(self._episode)

    def action_rewards(self) -> list[float]:
        """This episode's reward per action so far, aligned with :attr:`episode_records` (final once it ends):
        :func:`~.definition.action_rewards` of the episode under this wrapper's weights."""
        w = self.reward_weights
        return action_rewards(
            self._episode,
            coach_weight=w.coach,
            outcome_weight=w.outcome,
            outcome_to=w.outcome_to,
            partial=not self._ended,
        )

    def agent_rewards(self) -> dict[str, float]:
        """This episode's total reward per agent so far (equals the sum of its ``last()`` rewards)."""
        totals: dict[str, float] = {}
        for r, value in zip(self._episode, self.action_rewards(), strict=True):
            totals[r.role] = totals.get(r.role, 0.0) + value
        return totals

    def stats_dict(self) -> dict[str, Any]:
        """Counters for logging as metrics; the coach's own counters (if it keeps any) under ``"coach"``."""
        s = self.stats
        d: dict[str, Any] = {
            "episodes": s.episodes,
            "judgements": s.judgements,
            "fallbacks": s.fallbacks,
            "fallback_rate": s.fallbacks / s.judgements if s.judgements else 0.0,
            "coach_errors": s.coach_errors,
            "sources": dict(s.sources),
        }
        coach_stats = getattr(self.coach, "stats_dict", None)
        if callable(coach_stats):
            d["coach"] = coach_stats()
        return d

    # ---------------------------------------------------------------------------------------------- internals

    def _done(self, agent: str) -> bool:
        return bool(self.env.terminations.get(agent, False) or self.env.truncations.get(agent, False))

    def _end_episode(self) -> None:
        self.stats.episodes += 1
        if self.coach is None:
            return
        if self.when == "hindsight" and self._episode:
            self._judge(self._episode)
        summary = {
            "coach": getattr(self.coach, "name", type(self.coach).__name__),
            "when": self.when,
            "judgements": self._episode_judged,
            "fallbacks": self._episode_fallbacks,
        }
        for a in self.env.agents:
            info = self.env.infos.get(a)
            if isinstance(info, dict):
                info["coach"] = summary
        if self.monitor is not None and self._episode:
            self.monitor.update(self._episode)
        observe = getattr(self.coach, "observe", None)  # a stateful coach learns from finished episodes
        if callable(observe) and self._episode:
            observe(self._episode)

    def _judge(self, records: Sequence[ActionRecord]) -> list[Judgement]:
        assert self.coach is not None
        try:
            judgements = list(self.coach.judge(records, self.roles, self.context))
            if len(judgements) != len(records) or not all(isinstance(j, Judgement) for j in judgements):
                raise RuntimeError(
                    f"coach {self.coach.name!r} returned {len(judgements)} judgements for {len(records)} records "
                    "(the Coach protocol wants one Judgement per record, in order)"
                )
        except Exception as e:
            where = (
                f"{getattr(self.env.unwrapped, 'env_id', self.env)}, episode {records[0].episode_id}, "
                f"{self.when} judging of {len(records)} action(s)"
            )
            if self.fallback == "error":
                e.add_note(
                    f"raised by coach {getattr(self.coach, 'name', '?')!r} in {where}; pass fallback=<score> to "
                    "the reward wrapper (or coach_fallback= to make()) to continue with counted fallback scores"
                )
                raise
            self.stats.coach_errors += 1
            log.warning(
                "coach %s failed in %s (%s: %s); %d action(s) get the fallback score %s",
                getattr(self.coach, "name", "?"),
                where,
                type(e).__name__,
                e,
                len(records),
                self.fallback,
            )
            reason = f"coach fallback: the coach raised {type(e).__name__}: {str(e).splitlines()[0][:300]}"
            judgements = [
                Judgement(score=float(self.fallback), rationale=reason, source="fallback") for _ in records
            ]
        for r, j in zip(records, judgements, strict=True):
            r.judgement = j
            self.stats.judgements += 1
            self.stats.sources[j.source] += 1
            self._episode_judged += 1
            if j.source == "fallback":
                self.stats.fallbacks += 1
                self._episode_fallbacks += 1
        return judgements


class CoachReward(RewardWrapper):
    """Each action's reward is its coach score / 10; the bare env's outcome reward is replaced.

    ``coach``: a :class:`Coach`, or a name for :func:`~mappa_envs.coach.backends.make_coach` (``"rules"``: a
    :class:`~mappa_envs.coach.rules.RuleCoach` with hindsight blame when ``when="hindsight"``;
    ``"openai:MODEL"``; a coach built from a name is closed with the env). ``when``: ``"online"`` — judged right
    after each step, the acting agent's reward is in ``rewards``/``_cumulative_rewards`` at once and shows at its
    next ``last()``; ``"hindsight"`` — the whole episode judged in one batch when it ends (the coach sees
    ``record.outcome``), every agent's final ``last()`` shows the sum of its scores / 10. ``fallback``:
    ``"error"`` or a score for failed coach calls (counted). ``monitor``: a
    :class:`~mappa_envs.coach.monitor.BiasMonitor` updated at every episode end.

    A coach instance is used as given: a ``RuleCoach()`` built without ``hindsight=True`` scores a hindsight
    episode without cross-role blame (an ablation); ``"rules"`` picks the matching rule coach.
    """

    def __init__(
        self,
        env: AECEnv,
        coach: CoachSpec = "rules",
        when: When = "hindsight",
        *,
        fallback: Fallback = "error",
        monitor: BiasMonitor | None = None,
        roles: Mapping[str, Role] | None = None,
        context: str | None = None,
        owned: Sequence[Any] = (),
        outcome_to: OutcomeTo = "every_action",
    ) -> None:
        built, is_owned = (
            make_coach(coach, hindsight=when == "hindsight") if isinstance(coach, str) else (coach, False)
        )
        super().__init__(
            env,
            built,
            when=when,
            coach_weight=1.0,
            outcome_weight=0.0,
            outcome_to=outcome_to,
            fallback=fallback,
            monitor=monitor,
            roles=roles,
            context=context,
            owned=[*owned, built] if is_owned else list(owned),
        )


class OutcomeReward(RewardWrapper):
    """Every action of every agent is paid the bare env's graded outcome, and no coach is called (the baseline).

    Math: 1 if the verifier's final answer is right, else 0; tabular: the relative score. With the default
    ``outcome_to="every_action"`` an agent that acted ``n`` times in an episode collects ``n`` times the outcome
    over its ``last()`` rewards; every one of its actions is trained on the outcome.
    """

    def __init__(self, env: AECEnv, *, outcome_to: OutcomeTo = "every_action") -> None:
        super().__init__(env, None, outcome_weight=1.0, outcome_to=outcome_to)


class MixedReward(RewardWrapper):
    """A weighted mixture of coaches and the outcome, with the weights used as given (no normalisation).

    ``weights`` maps a coach (a :class:`Coach` or a name for :func:`~mappa_envs.coach.backends.make_coach`) or
    ``"outcome"`` to a weight >= 0. An action is paid ``(Σ_c w_c) · judgement.score / 10 + w_outcome ·
    outcome``: per action the coaches' scores combine into one :class:`~mappa_envs.coach.base.MixtureCoach`
    judgement (their weighted mean, every component visible in its rationale, ``source="fallback"`` if any
    component fell back) stored in ``record.judgement``. ``{"rules": 1}`` is :class:`CoachReward`,
    ``{"outcome": 1}`` is :class:`OutcomeReward`.
    """

    def __init__(
        self,
        env: AECEnv,
        weights: Mapping[CoachSpec, float] | None = None,
        *,
        when: When = "hindsight",
        fallback: Fallback = "error",
        monitor: BiasMonitor | None = None,
        roles: Mapping[str, Role] | None = None,
        context: str | None = None,
        owned: Sequence[Any] = (),
        outcome_to: OutcomeTo = "every_action",
    ) -> None:
        if not weights:
            raise ValueError('MixedReward needs weights, e.g. {"rules": 0.5, "outcome": 0.5}')
        outcome_weight = 0.0
        components: dict[str, tuple[Coach, float]] = {}
        owned = list(owned)
        for key, weight in weights.items():
            name = key if isinstance(key, str) else getattr(key, "name", type(key).__name__)
            w = check_weight(name, weight)
            if key == OUTCOME:
                outcome_weight = w
                continue
            if isinstance(key, str):
                built, is_owned = make_coach(key, hindsight=when == "hindsight")
            else:
                built, is_owned = make_coach(key)
            if is_owned:
                owned.append(built)
            unique, n = name, 2
            while unique in components:
                unique, n = f"{name}#{n}", n + 1
            components[unique] = (built, w)
        coach_weight = sum(w for _, w in components.values())
        if coach_weight + outcome_weight <= 0:
            raise ValueError(f"MixedReward weights must not all be zero, got {dict(weights)!r}")
        live = {k: v for k, v in components.items() if v[1] > 0}
        coach: Coach | None
        if not live:
            coach = None
        elif len(live) == 1:
            coach = next(iter(live.values()))[0]
        else:
            coach = MixtureCoach(live)
        self.weights = {**{k: w for k, (_, w) in components.items()}, OUTCOME: outcome_weight}
        super().__init__(
            env,
            coach,
            when=when,
            coach_weight=coach_weight,
            outcome_weight=outcome_weight,
            outcome_to=outcome_to,
            fallback=fallback,
            monitor=monitor,
            roles=roles,
            context=context,
            owned=owned,
        )


def reward_wrapper(env: Any) -> RewardWrapper:
    """The :class:`RewardWrapper` in ``env``'s wrapper chain, or a TypeError saying how to add one."""
    e = env
    while e is not None:
        if isinstance(e, RewardWrapper):
            return e
        e = getattr(e, "env", None)
    raise TypeError(
        f"{env} has no reward wrapper, so it pays no per-action reward: build it with mappa_envs.make(), or wrap "
        "the raw env in CoachReward / OutcomeReward / MixedReward"
    )


def paid(env: Any) -> list[float]:
    """What ``env``'s reward wrapper paid each action of its current (or just finished) episode, in step order.

    This is the number a trainer should train each action on: the same definition the AEC rewards follow.
    """
    return reward_wrapper(env).action_rewards()
