"""Reward wrappers: PettingZoo ``BaseWrapper`` s that decide what the agents are paid.

- :class:`CoachReward` — a coach scores every action 0–10; the action's reward is ``score / 10``.
  ``when="online"`` judges each action right after its step (the acting agent's reward arrives at once; only the
  last action of the episode is judged knowing the outcome, like the MAPPA reference). ``when="hindsight"``
  judges every action of the episode in one batch once the outcome is known, so an upstream agent can be credited
  or blamed for what happened downstream (the data engineer who forgot ``X_test.pkl`` is blamed for the analyst's
  ``FileNotFoundError``); every reward then arrives at the end.
- :class:`OutcomeReward` — every agent gets the bare env's own terminal reward, the graded outcome (the baseline).
- :class:`MixedReward` — explicit weights over coaches and the outcome, e.g. ``{"rules": 0.5, "outcome": 0.5}``.

How rewards reach the agents (the PettingZoo way): after each step the wrapper rewrites the inner env's
``rewards`` (what this step paid) and ``_cumulative_rewards`` (what each agent collected since it last acted),
editing both dicts in place — rebinding them breaks ``api_test``. ``last()`` therefore shows an agent everything it
was paid since its previous action. The bare env's terminal outcome reward is *replaced*, not added, unless the
outcome has a weight. An agent's total PettingZoo reward over an episode is the sum of its actions' rewards.

Per action, without PettingZoo bookkeeping: each judged record carries ``record.judgement`` (the same object is
in ``infos[agent]["record"]`` and ``env.unwrapped.records``); the action's coach reward is
``record.judgement.score / 10`` and :func:`action_rewards` turns a list of records into per-action rewards (the
wrapper's :meth:`RewardWrapper.action_rewards` gives the same for its current episode). The outcome part of a
mixture is attributed to each agent's last action, so summing an agent's action rewards gives its PettingZoo
reward.

Failures of the coach are never silent: ``fallback="error"`` (default) lets the coach's exception propagate with a
note naming the env, episode and mode; a number ``fallback=5.0`` replaces the failed judgements by that score
with ``source="fallback"``, counts them (``stats_dict()``), logs a warning and puts the episode's counts in every
agent's final ``infos[agent]["coach"]``.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pettingzoo import AECEnv
from pettingzoo.utils.wrappers import BaseWrapper

from mappa_envs.coach.base import Coach, MixtureCoach
from mappa_envs.coach.monitor import BiasMonitor
from mappa_envs.coach.rules import RuleCoach
from mappa_envs.pipeline import Role
from mappa_envs.records import ActionRecord, Judgement

log = logging.getLogger(__name__)

OUTCOME = "outcome"
"""The key that names the bare env's terminal outcome reward in a weights mapping."""

When = Literal["online", "hindsight"]
Fallback = Literal["error"] | float
CoachSpec = Coach | str
"""A coach, or a name :func:`make_coach` understands: ``"rules"`` or ``"openai:MODEL"``."""


# ------------------------------------------------------------------------------------------ building coaches


def make_coach(
    coach: CoachSpec,
    *,
    hindsight: bool = True,
    base_url: str | None = None,
    api_key: str | None = None,
    fallback: Fallback | None = None,
    **kwargs: Any,
) -> tuple[Coach, bool]:
    """``(coach, owned)`` for a coach or a coach name; ``owned`` is True when it was built here (close it after).

    - a :class:`Coach` instance is used as it is (no other argument may be given);
    - ``"rules"`` builds :class:`RuleCoach` ``(hindsight=hindsight, **kwargs)``;
    - ``"openai:MODEL"`` builds :class:`~mappa_envs.coach.openai_coach.OpenAICoach` for ``MODEL`` with
      ``base_url`` / ``api_key`` (default: the openai client's own ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``),
      ``fallback`` when given (and not in ``kwargs``) and the other ``kwargs`` (``cache_dir=``, ``timeout_s=``, ...).
    """
    if not isinstance(coach, str):
        if not isinstance(coach, Coach):
            raise TypeError(
                f"coach must be a Coach (judge/ajudge methods and a name) or one of 'rules', 'openai:MODEL'; "
                f"got {type(coach).__name__}"
            )
        extra = [k for k, v in (("base_url", base_url), ("api_key", api_key)) if v is not None] + list(kwargs)
        if extra:
            raise ValueError(
                f"{', '.join(extra)} configure a coach built from a name; the coach instance {coach.name!r} is "
                "already built, so configure it directly"
            )
        return coach, False
    if coach == "rules":
        if base_url is not None or api_key is not None:
            raise ValueError(
                "the rule coach runs offline: base_url/api_key apply to 'openai:MODEL' coaches only"
            )
        return RuleCoach(hindsight=hindsight, **kwargs), True
    if coach.startswith("openai:") and coach[len("openai:") :].strip():
        from mappa_envs.coach.openai_coach import OpenAICoach

        if fallback is not None:
            kwargs.setdefault("fallback", fallback)
        return OpenAICoach(
            coach[len("openai:") :].strip(), base_url=base_url, api_key=api_key, **kwargs
        ), True
    raise ValueError(
        f"unknown coach {coach!r}: use 'rules' (offline), 'openai:MODEL' (any OpenAI-compatible server) or a "
        "Coach instance"
    )


def _check_fallback(fallback: Fallback) -> None:
    if fallback == "error":
        return
    if isinstance(fallback, bool) or not isinstance(fallback, int | float) or not 0.0 <= fallback <= 10.0:
        raise ValueError(f'fallback must be "error" or a score in [0, 10], got {fallback!r}')


def _check_weight(name: str, weight: Any) -> float:
    if (
        isinstance(weight, bool)
        or not isinstance(weight, int | float)
        or not math.isfinite(weight)
        or weight < 0
    ):
        raise ValueError(f"the weight of {name!r} must be a finite number >= 0, got {weight!r}")
    return float(weight)


# ------------------------------------------------------------------------------------ per-action rewards


def action_rewards(
    records: Sequence[ActionRecord], *, coach_weight: float = 1.0, outcome_weight: float = 0.0
) -> list[float]:
    """One reward per record, in order: ``coach_weight * judgement.score / 10`` plus, on each role's last action
    of its episode, ``outcome_weight * outcome["reward"]``.

    With the defaults this is the coach reward of :class:`CoachReward`; the weights of a :class:`MixedReward`
    (its ``coach_weight`` and ``outcome_weight``) give that wrapper's per-action rewards. Summing the rewards of
    one agent's actions in an episode gives the agent's PettingZoo reward for it. A record without a judgement is
    an error when ``coach_weight`` > 0 (it was never coached); an outcome part needs ``record.outcome``.
    """
    last_of_role: dict[tuple[str, str], int] = {}
    for i, r in enumerate(records):
        key = (r.episode_id, r.role)
        if key not in last_of_role or r.step >= records[last_of_role[key]].step:
            last_of_role[key] = i
    last = set(last_of_role.values())
    out = []
    for i, r in enumerate(records):
        value = 0.0
        if coach_weight:
            if r.judgement is None:
                raise ValueError(
                    f"record {r.episode_id} step {r.step} ({r.role}) has no judgement: coach the episode first "
                    "(a CoachReward/MixedReward wrapper fills record.judgement)"
                )
            value += coach_weight * r.judgement.score / 10.0
        if outcome_weight and i in last:
            if r.outcome is None:
                raise ValueError(f"record {r.episode_id} step {r.step} ({r.role}) has no outcome yet")
            value += outcome_weight * float(r.outcome.get("reward", 0.0))
        out.append(value)
    return out


# ------------------------------------------------------------------------------------------------ wrappers


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
    """Pays each agent ``coach_weight · Σ score/10`` over its actions plus ``outcome_weight ·`` the bare env's reward.

    The common machinery of :class:`CoachReward`, :class:`OutcomeReward` and :class:`MixedReward` (see the module
    docstring for the AEC semantics). ``roles`` / ``context`` default to the unwrapped env's pipeline spec.
    ``monitor`` (a :class:`~mappa_envs.coach.monitor.BiasMonitor`) is updated with every finished episode.
    ``owned``: objects with a ``close()`` to close with the env (a coach built for it).
    """

    def __init__(
        self,
        env: AECEnv,
        coach: Coach | None = None,
        *,
        when: When = "hindsight",
        coach_weight: float = 1.0,
        outcome_weight: float = 0.0,
        fallback: Fallback = "error",
        monitor: BiasMonitor | None = None,
        roles: Mapping[str, Role] | None = None,
        context: str | None = None,
        owned: Sequence[Any] = (),
    ) -> None:
        super().__init__(env)
        if when not in ("online", "hindsight"):
            raise ValueError(f"when must be 'online' or 'hindsight', got {when!r}")
        _check_fallback(fallback)
        self.coach_weight = _check_weight("coach", coach_weight) if coach is not None else 0.0
        self.outcome_weight = _check_weight(OUTCOME, outcome_weight)
        if coach is not None and not isinstance(coach, Coach):
            raise TypeError(f"coach must be a Coach, got {type(coach).__name__}")
        if monitor is not None and coach is None:
            raise ValueError("a bias monitor compares coach scores with outcomes: it needs a coach")
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
        self._rewards: list[float] = []
        self._unattributed: dict[str, float] = {}
        self._ended = False
        self._episode_judged = 0
        self._episode_fallbacks = 0

    # ------------------------------------------------------------------------------------------- PettingZoo

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        self._episode, self._rewards, self._unattributed, self._ended = [], [], {}, False
        self._episode_judged = self._episode_fallbacks = 0
        self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> None:
        env = self.env
        agent = env.agent_selection
        if env.terminations.get(agent, False) or env.truncations.get(agent, False):
            env.step(action)  # a dead step: nothing is paid (api: the agent leaves, the rewards dict clears)
            return
        before = dict(env._cumulative_rewards)
        env.step(action)
        rewards, cumulative = env.rewards, env._cumulative_rewards
        paid = {a: self.outcome_weight * float(rewards.get(a, 0.0)) for a in env.agents}
        record = env.infos.get(agent, {}).get("record")
        if isinstance(record, ActionRecord) and (not self._episode or self._episode[-1] is not record):
            self._episode.append(record)
            self._rewards.append(0.0)
        self._attribute_outcome(paid)
        if self.coach is not None and self.when == "online" and self._episode and record is self._episode[-1]:
            [j] = self._judge([record])
            paid[agent] = paid.get(agent, 0.0) + self._pay(len(self._episode) - 1, j)
        if not self._ended and env.agents and all(self._done(a) for a in env.agents):
            self._ended = True
            self._end_episode(paid)
        # Rewrite in place (api_test holds references to these dicts). The inner step reset the acting agent's
        # cumulative reward to 0 and added its own rewards to everyone's; recompute from the snapshot instead of
        # subtracting, so the arithmetic is exactly "cumulative += rewards".
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
        """This episode's reward per action so far, aligned with :attr:`episode_records` (final once it ends)."""
        return list(self._rewards)

    def agent_rewards(self) -> dict[str, float]:
        """This episode's total reward per agent so far (equals the sum of its ``last()`` rewards)."""
        totals: dict[str, float] = dict(self._unattributed)
        for r, value in zip(self._episode, self._rewards, strict=True):
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

    def _attribute_outcome(self, paid: Mapping[str, float]) -> None:
        """Book the outcome part paid this step on each agent's latest action (or as unattributed)."""
        for a, value in paid.items():
            if not value:
                continue
            index = next(
                (i for i in range(len(self._episode) - 1, -1, -1) if self._episode[i].role == a), None
            )
            if index is None:
                self._unattributed[a] = self._unattributed.get(a, 0.0) + value
            else:
                self._rewards[index] += value

    def _pay(self, index: int, judgement: Judgement) -> float:
        value = self.coach_weight * judgement.score / 10.0
        self._rewards[index] += value
        return value

    def _end_episode(self, paid: dict[str, float]) -> None:
        self.stats.episodes += 1
        if self.coach is None:
            return
        if self.when == "hindsight" and self._episode:
            judgements = self._judge(self._episode)
            for i, (r, j) in enumerate(zip(self._episode, judgements, strict=True)):
                value = self._pay(i, j)
                if r.role in paid:
                    paid[r.role] += value
                else:
                    log.warning(
                        "%s: %s left the episode before it ended; its hindsight reward %.3f for step %d cannot "
                        "be delivered through last() (it is in action_rewards())",
                        self,
                        r.role,
                        value,
                        r.step,
                    )
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

    ``coach``: a :class:`Coach`, or ``"rules"`` (a :class:`RuleCoach` with hindsight blame when
    ``when="hindsight"``) or ``"openai:MODEL"`` (see :func:`make_coach`; a coach built from a name is closed with
    the env). ``when``: ``"online"`` — judged right after each step, the acting agent's reward is in
    ``rewards``/``_cumulative_rewards`` at once and shows at its next ``last()``; ``"hindsight"`` — the whole
    episode judged in one batch when it ends (the coach sees ``record.outcome``), every agent's final ``last()``
    shows the sum of its scores / 10. ``fallback``: ``"error"`` or a score for failed coach calls (counted).
    ``monitor``: a :class:`~mappa_envs.coach.monitor.BiasMonitor` updated at every episode end.

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
    ) -> None:
        built, is_owned = make_coach(coach, hindsight=when == "hindsight")
        super().__init__(
            env,
            built,
            when=when,
            coach_weight=1.0,
            outcome_weight=0.0,
            fallback=fallback,
            monitor=monitor,
            roles=roles,
            context=context,
            owned=[*owned, built] if is_owned else list(owned),
        )


class OutcomeReward(RewardWrapper):
    """Every agent gets the bare env's own terminal reward — the graded outcome — and nothing per action.

    This is exactly what the unwrapped env pays (math: 1 if the final ``\\boxed{}`` answer is right, else 0;
    tabular: the relative score), made explicit as a wrapper so the baseline and the coach arms build the same
    stack. Each agent's outcome is booked on its last action in :meth:`action_rewards`; no coach is called.
    """

    def __init__(self, env: AECEnv) -> None:
        super().__init__(env, None, outcome_weight=1.0)


class MixedReward(RewardWrapper):
    """A weighted mixture of coaches and the outcome, with the weights used as given (no normalisation).

    ``weights`` maps a coach (a :class:`Coach` or a name for :func:`make_coach`) or ``"outcome"`` to a weight
    >= 0. An agent is paid ``Σ_coach w_c · Σ_actions score_c / 10 + w_outcome · outcome``: per action the coaches'
    scores combine into one :class:`~mappa_envs.coach.base.MixtureCoach` judgement (their weighted mean, every
    component visible in its rationale, ``source="fallback"`` if any component fell back) stored in
    ``record.judgement``, and the action's reward is ``(Σ w_c) · judgement.score / 10``; the outcome part is booked
    on each agent's last action. ``{"rules": 1}`` is :class:`CoachReward`, ``{"outcome": 1}`` is
    :class:`OutcomeReward`.
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
    ) -> None:
        if not weights:
            raise ValueError('MixedReward needs weights, e.g. {"rules": 0.5, "outcome": 0.5}')
        outcome_weight = 0.0
        components: dict[str, tuple[Coach, float]] = {}
        owned = list(owned)
        for key, weight in weights.items():
            name = key if isinstance(key, str) else getattr(key, "name", type(key).__name__)
            w = _check_weight(name, weight)
            if key == OUTCOME:
                outcome_weight = w
                continue
            built, is_owned = make_coach(key, hindsight=when == "hindsight")
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
            fallback=fallback,
            monitor=monitor,
            roles=roles,
            context=context,
            owned=owned,
        )
