"""The env registry: versioned ids (``math-chat-v0``), lazy entry points, ``make()`` with a visible wrapper stack.

Mirrors PettingZoo's (and Gymnasium's) registry conventions: an unversioned id resolves to the highest version,
entry points are ``"module:function"`` strings imported only when the env is made, and ``make()`` returns the
wrapped env while ``raw_env()`` returns the bare one. The stack ``make()`` builds is::

    raw PipelineEnv  →  reward wrapper  →  OrderEnforcingWrapper

where the reward wrapper (:mod:`mappa_envs.rewards`) is, by ``reward=``:

- ``"coach"`` (default): :class:`~mappa_envs.rewards.CoachReward` — every action scored 0–10 by the coach
  (default ``coach="rules"``, the offline rule coach; ``"openai:MODEL"`` for a model behind any OpenAI-compatible
  server), reward = score / 10, judged in hindsight by default (``hindsight=False`` judges online);
- ``"outcome"``: :class:`~mappa_envs.rewards.OutcomeReward` — every action of every agent is paid the graded
  outcome (the baseline);
- a weights mapping, e.g. ``{"coach": 0.5, "outcome": 0.5}``: :class:`~mappa_envs.rewards.MixedReward`.

Every wrapper pays by one definition (:func:`mappa_envs.rewards.action_rewards`); an env id's version may fix how
(``reward_kwargs`` of its :class:`EnvSpec`: the ``-v0``/``-v1`` envs book the outcome on each agent's last action).

Anyone can rebuild it by hand with other wrappers, e.g.
``OrderEnforcingWrapper(CoachReward(raw_env("math-chat"), "rules", when="online"))``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pettingzoo.utils.wrappers import OrderEnforcingWrapper

_ID = re.compile(r"^(?P<name>[a-z0-9][a-z0-9_\-]*?)(?:-v(?P<version>\d+))?$")


@dataclass(frozen=True)
class EnvSpec:
    id: str
    entry_point: str
    description: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    reward_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """What this version's reward wrapper is built with (``outcome_to=``), whatever ``reward=`` is chosen."""

    @property
    def name(self) -> str:
        return _parse(self.id)[0]

    @property
    def version(self) -> int:
        return _parse(self.id)[1] or 0


class Registry(Mapping[str, EnvSpec]):
    """Read-only view of the registered envs, ``id -> EnvSpec``; ``print(registry)`` lists them."""

    def __init__(self) -> None:
        self._specs: dict[str, EnvSpec] = {}

    def __getitem__(self, env_id: str) -> EnvSpec:
        return self._specs[resolve(env_id)]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._specs))

    def __len__(self) -> int:
        return len(self._specs)

    def __str__(self) -> str:
        width = max((len(i) for i in self._specs), default=0)
        return "\n".join(f"{i.ljust(width)}  {self._specs[i].description}" for i in self)


registry = Registry()


def _parse(env_id: str) -> tuple[str, int | None]:
    m = _ID.match(env_id)
    if not m:
        raise ValueError(f"malformed env id {env_id!r}; ids look like 'math-chat-v0' or 'math-chat'")
    version = m.group("version")
    return m.group("name"), int(version) if version is not None else None


def register(
    env_id: str,
    entry_point: str,
    description: str,
    /,
    reward_kwargs: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> None:
    """Register ``env_id`` (must carry a version, ``-vN``) with a lazy ``"module:function"`` entry point.

    ``kwargs`` are the factory's defaults for this version, so versions can share one factory (mappa's own
    pipelines take ``version=N``); ``make()``'s own keyword arguments override them. ``reward_kwargs`` go to the
    reward wrapper ``make()`` builds (``{"outcome_to": "last_action"}`` for the ``-v0``/``-v1`` envs).
    """
    name, version = _parse(env_id)
    if version is None:
        raise ValueError(f"register() needs a versioned id like '{name}-v0', got {env_id!r}")
    if env_id in registry._specs:
        raise ValueError(f"env id {env_id!r} is already registered")
    registry._specs[env_id] = EnvSpec(
        env_id, entry_point, description, dict(kwargs), dict(reward_kwargs or {})
    )


def resolve(env_id: str) -> str:
    """The registered id for ``env_id``; an unversioned id means its highest registered version."""
    name, version = _parse(env_id)
    if version is not None:
        if env_id not in registry._specs:
            raise KeyError(f"unknown env id {env_id!r}; registered: {', '.join(sorted(registry._specs))}")
        return env_id
    versions = [s for s in registry._specs.values() if s.name == name]
    if not versions:
        raise KeyError(f"unknown env {env_id!r}; registered: {', '.join(sorted(registry._specs))}")
    return max(versions, key=lambda s: s.version).id


def raw_env(env_id: str, **kwargs: Any):
    """The bare env for ``env_id``: the graded outcome at the end for every agent, no wrappers."""
    spec = registry[env_id]
    module, _, func = spec.entry_point.partition(":")
    factory = getattr(importlib.import_module(module), func)
    return factory(**{**spec.kwargs, **kwargs})


def make(
    env_id: str,
    reward: str | Mapping[Any, float] = "coach",
    *,
    coach: Any = "rules",
    hindsight: bool = True,
    coach_kwargs: Mapping[str, Any] | None = None,
    coach_base_url: str | None = None,
    coach_api_key: str | None = None,
    coach_fallback: str | float = "error",
    monitor: Any = None,
    **kwargs: Any,
):
    """Build ``env_id`` with its wrapper stack (see the module docstring); works offline with the defaults.

    Args:
        reward: ``"coach"`` (per-action coach scores / 10; the bare env's outcome reward is replaced),
            ``"outcome"`` (the graded outcome for every action of every agent: the baseline), or weights such as
            ``{"coach": 0.7, "outcome": 0.3}`` (used as given; ``"coach"`` means the ``coach`` argument, other
            keys may be coach names or instances).
        coach: ``"rules"`` (offline :class:`~mappa_envs.coach.rules.RuleCoach`, with hindsight blame when
            ``hindsight``), ``"openai:MODEL"`` (an :class:`~mappa_envs.coach.openai_coach.OpenAICoach`; needs the
            ``openai`` package) or a ready Coach instance.
        hindsight: judge the whole episode once its outcome is known (True) or each action right after it
            (False).
        coach_kwargs: more arguments for the coach built from a name (``cache_dir=``, ``timeout_s=``, ...).
        coach_base_url / coach_api_key: the OpenAI-compatible server and key; by default the openai client's own
            ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``.
        coach_fallback: ``"error"`` (a coach that cannot judge raises) or a score in [0, 10] given, counted and
            marked ``source="fallback"``, to actions the coach could not judge.
        monitor: a :class:`~mappa_envs.coach.monitor.BiasMonitor` updated at every episode end.
        **kwargs: go to the raw env (``tasks=``, ``cell_timeout_s=``, ...).
    """
    from mappa_envs.coach.backends import make_coach
    from mappa_envs.rewards import OUTCOME, CoachReward, MixedReward, OutcomeReward

    coach_kwargs = dict(coach_kwargs or {})
    reward_kwargs = dict(registry[env_id].reward_kwargs)
    when = "hindsight" if hindsight else "online"
    uses_coach = reward == "coach" or (isinstance(reward, Mapping) and "coach" in reward)
    if not uses_coach and (coach_kwargs or coach_base_url is not None or coach_api_key is not None):
        raise ValueError(
            "coach_kwargs/coach_base_url/coach_api_key configure the coach, but reward="
            f"{reward!r} does not use the 'coach' argument"
        )
    if reward == "outcome" and monitor is not None:
        raise ValueError("a bias monitor needs coach rewards; reward='outcome' calls no coach")
    env = raw_env(env_id, **kwargs)
    built, owned = None, False
    if uses_coach:
        if isinstance(coach, str):
            built, owned = make_coach(
                coach,
                hindsight=hindsight,
                base_url=coach_base_url,
                api_key=coach_api_key,
                fallback=None if coach_fallback == "error" else coach_fallback,
                **coach_kwargs,
            )
        else:
            built, owned = make_coach(coach, base_url=coach_base_url, api_key=coach_api_key, **coach_kwargs)
    closes = [built] if owned else []  # a coach built here is closed with the env
    try:
        if reward == "coach":
            wrapped = CoachReward(
                env, built, when, fallback=coach_fallback, monitor=monitor, owned=closes, **reward_kwargs
            )
        elif reward == OUTCOME:
            wrapped = OutcomeReward(env, **reward_kwargs)
        elif isinstance(reward, Mapping):
            weights = {(built if k == "coach" else k): w for k, w in reward.items()}
            wrapped = MixedReward(
                env,
                weights,
                when=when,
                fallback=coach_fallback,
                monitor=monitor,
                owned=closes,
                **reward_kwargs,
            )
        else:
            raise ValueError(
                f"reward must be 'coach', 'outcome' or a weights mapping like {{'coach': 0.5, 'outcome': 0.5}}, "
                f"got {reward!r}"
            )
    except BaseException:
        env.close()
        if owned and callable(getattr(built, "close", None)):
            built.close()
        raise
    return OrderEnforcingWrapper(wrapped)
