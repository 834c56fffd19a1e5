"""A single-agent Gymnasium view of any mappa env: one learning role, the other roles played by given teammates.

Single-agent RL libraries (Gymnasium loops, TRL, verifiers, ...) see one agent and one stream of steps. This view
gives them one role of a pipeline::

    import gymnasium, mappa_envs
    env = gymnasium.make("mappa/math-chat-v2", role="coder")        # teammates: the pipeline's scripted team
    obs, info = env.reset(seed=0)                                   # obs["messages"]: the coder's chat
    obs, reward, terminated, truncated, info = env.step("```python\\nprint(7 + 5)\\n```")

- **Steps are the learner's turns.** ``reset`` and ``step`` play the teammates' turns (callables
  ``(agent, messages) -> str``: a scripted team, a served model, a frozen local model) until the learner acts
  next or the episode ends; teammates' turns are never steps.
- **The reward is what the reward wrapper paid the role**, read from the AEC env's own per-agent reward
  (``_cumulative_rewards``: what the role collected since it last acted), never recomputed. So the sum of a view
  episode's rewards is the role's PettingZoo return, which equals the sum of :func:`mappa_envs.rewards.paid` over
  the role's actions (``info["paid"]`` at the end). With a hindsight coach every reward arrives on the last step.
- ``info["record"]`` is the learner's receipt (:class:`~mappa_envs.records.ActionRecord`) for the step; the last
  step's info adds ``outcome`` and ``paid`` (the role's per-action rewards, in step order).
- Spaces are the env's own: observation ``Dict({"messages": ChatMessages})``, action ``AgentText`` (a lenient
  ``gymnasium.spaces.Text``). ``reset(seed=...)`` seeds the AEC env (task choice, episode id) and the view's
  ``np_random``; scripted teammates are deterministic, so a seed reproduces an episode.

Every mappa env ``<id>`` registered at import is registered with Gymnasium as ``mappa/<id>`` (``import mappa_envs``
does it; no env is built until ``gymnasium.make``); for an env you register later, call
``register_gymnasium([id])`` or build ``SingleAgentEnv(id, role)`` directly. Keyword arguments of ``gymnasium.make`` go to :class:`SingleAgentEnv`
and from there to :func:`mappa_envs.make` (``reward=``, ``coach=``, ``tasks=``, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import gymnasium
from pettingzoo import AECEnv

from mappa_envs.records import ActionRecord, Message
from mappa_envs.rewards import reward_wrapper

Teammate = Callable[[str, list[Message]], str]
"""``(agent, messages) -> reply``: how a teammate acts (e.g. ``mappa_envs.scripted.scripted_team("math-chat")``)."""

GYM_NAMESPACE = "mappa"


def _default_teammates(aec: AECEnv) -> Teammate:
    from mappa_envs.scripted import SCRIPTED_TEAMS, scripted_team

    name = getattr(getattr(aec.unwrapped, "spec", None), "name", None)
    if name not in SCRIPTED_TEAMS:
        raise ValueError(
            f"{getattr(aec.unwrapped, 'env_id', aec)} has no scripted team to play the other roles: pass "
            "teammates= (a callable (agent, messages) -> str, or a dict role -> such a callable)"
        )
    return scripted_team(name)


class SingleAgentEnv(gymnasium.Env):
    """One role of a mappa AEC env as a Gymnasium env (see the module docstring).

    Args:
        env: a registered env id (built with :func:`mappa_envs.make` and ``make_kwargs``) or a built AEC env with
            a reward wrapper in its chain (the view then owns it and closes it).
        role: the learning role (one of the env's ``possible_agents``).
        teammates: a callable ``(agent, messages) -> str`` for every other role, or a dict ``role -> callable``
            naming each other role; default: the pipeline's scripted team.
        render_mode: passed to the AEC env (``"human"`` prints every turn, ``"ansi"`` returns the transcript).
        **make_kwargs: go to :func:`mappa_envs.make` when ``env`` is an id (``reward=``, ``tasks=`` ...).
    """

    metadata = {"render_modes": ["human", "ansi"]}

    def __init__(
        self,
        env: str | AECEnv,
        role: str,
        teammates: Teammate | Mapping[str, Teammate] | None = None,
        render_mode: str | None = None,
        **make_kwargs: Any,
    ) -> None:
        if isinstance(env, str):
            from mappa_envs.registry import make

            aec = make(env, render_mode=render_mode, **make_kwargs)
        else:
            if make_kwargs:
                raise ValueError(
                    f"make_kwargs {sorted(make_kwargs)} are for building an env from an id; "
                    "an env instance is used as given"
                )
            aec = env
        try:
            reward_wrapper(aec)  # the reward is what this wrapper pays: fail now, not at the first step
            agents = list(aec.possible_agents)
            if role not in agents:
                raise ValueError(f"role {role!r} is not an agent of {self._name(aec)}; its agents: {agents}")
            others = [a for a in agents if a != role]
            if teammates is None:
                teammates = _default_teammates(aec)
            if isinstance(teammates, Mapping):
                missing = [a for a in others if a not in teammates]
                if missing:
                    raise ValueError(f"teammates has no policy for {missing} of {self._name(aec)}")
                self._teammates: dict[str, Teammate] = {a: teammates[a] for a in others}
            elif callable(teammates):
                self._teammates = {a: teammates for a in others}
            else:
                raise TypeError(
                    f"teammates must be a callable (agent, messages) -> str or a dict of them, got "
                    f"{type(teammates).__name__}"
                )
        except BaseException:
            aec.close()
            raise
        self.aec = aec
        self.role = role
        self.render_mode = render_mode
        self.observation_space = aec.observation_space(role)
        self.action_space = aec.action_space(role)
        self._records: list[ActionRecord] = []
        self._done = True

    @staticmethod
    def _name(aec: AECEnv) -> str:
        return str(getattr(aec.unwrapped, "env_id", aec))

    # ------------------------------------------------------------------------------------------- Gymnasium

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.aec.reset(seed=seed, options=options)
        self._records = []
        self._done = False
        obs, _, done = self._advance()
        if done:
            raise RuntimeError(
                f"{self._name(self.aec)}: the episode ended before {self.role!r} acted (its schedule gives the "
                "role no turn)"
            )
        raw = self.aec.unwrapped
        return obs, {"task_id": raw.task.id, "episode_id": raw.episode_id}

    def step(self, action: str):
        if self._done:
            raise RuntimeError("the episode is over: call reset() before step()")
        aec = self.aec
        if aec.agent_selection != self.role:  # an invariant of _advance: it stops only at the learner's turn
            raise RuntimeError(f"internal error: it is {aec.agent_selection!r}'s turn, not {self.role!r}'s")
        aec.step(action)
        record = aec.infos[self.role].get("record")
        if isinstance(record, ActionRecord):
            self._records.append(record)
        obs, reward, done = self._advance()
        info: dict[str, Any] = {"record": record}
        if done:
            self._done = True
            raw = aec.unwrapped
            info["outcome"] = raw.outcome
            info["paid"] = self.paid()
            obs = {"messages": raw.observe(self.role)["messages"]}
        return obs, reward, done, False, info

    def render(self) -> str | None:
        return self.aec.render()

    def close(self) -> None:
        self.aec.close()
        super().close()

    # ---------------------------------------------------------------------------------------------- readers

    @property
    def records(self) -> list[ActionRecord]:
        """The learner's receipts of the current (or just finished) episode, in step order."""
        return list(self._records)

    def paid(self) -> list[float]:
        """What the reward wrapper paid each of the learner's actions so far this episode (final once it ends)."""
        wrapper = reward_wrapper(self.aec)
        return [
            value
            for r, value in zip(wrapper.episode_records, wrapper.action_rewards(), strict=True)
            if r.role == self.role
        ]

    # ---------------------------------------------------------------------------------------------- internals

    def _advance(self) -> tuple[dict[str, Any] | None, float, bool]:
        """Play teammates until the learner's turn or the episode's end: ``(obs, learner's reward, done)``.

        The reward is the learner's AEC ``_cumulative_rewards`` entry at that moment: what the wrapper paid it
        since its last action (read before any dead step can drop the entry).
        """
        aec = self.aec
        role = self.role
        while True:
            if not aec.agents or aec.terminations.get(role, False) or aec.truncations.get(role, False):
                return None, float(aec._cumulative_rewards.get(role, 0.0)), True
            agent = aec.agent_selection
            if agent == role:
                return aec.observe(role), float(aec._cumulative_rewards[role]), False
            if aec.terminations[agent] or aec.truncations[agent]:
                aec.step(None)
                continue
            aec.step(self._teammates[agent](agent, aec.observe(agent)["messages"]))


def register_gymnasium(env_ids: list[str]) -> None:
    """Register ``mappa/<id>`` with Gymnasium for each mappa env id (lazy: nothing is imported or built)."""
    registered = gymnasium.envs.registration.registry
    for env_id in env_ids:
        gym_id = f"{GYM_NAMESPACE}/{env_id}"
        if gym_id not in registered:
            gymnasium.register(
                id=gym_id, entry_point="mappa_envs.views:SingleAgentEnv", kwargs={"env": env_id}
            )
