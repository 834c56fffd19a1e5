"""A team policy whose served roles answer from OpenAI-compatible endpoints (:class:`mappa_envs.agents.ServedTeam`).

It speaks the rollout :class:`~mappa_train.types.Policy` protocol, so ``run_rollouts`` and ``Trainer.evaluate`` play
it like a trained team: the lockstep batch of one role's pending turns goes out as concurrent requests, and the
held-out metrics and transcripts are the trainer's own. Roles the served team does not cover are played by
``rest``: a trained :class:`~mappa_train.policy.TeamPolicy` (its adapters, checkpoint loading and sampling
settings are delegated to it) or a callable team such as a scripted one.

Served replies carry no token ids or log-probs (an API returns text), so this policy evaluates; it does not train
the served roles.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mappa_envs.agents import ServedTeam
from mappa_envs.records import Message
from mappa_train.types import Generation


class ServedPolicy:
    """Served roles from ``served``, every other role from ``rest`` (a Policy or a ``(agent, messages) -> str``)."""

    def __init__(self, served: ServedTeam, roles: list[str], rest: Any = None) -> None:
        served.check_roles(roles, others=rest is not None)
        self.served = served
        self.roles = list(roles)
        self.rest = rest

    @property
    def _rest_policy(self) -> Any:
        return self.rest if hasattr(self.rest, "generate") else None

    def generate(self, role: str, prompts: list[list[Message]]) -> list[Generation]:
        if self.served.serves(role):
            return [
                Generation(text=r, prompt_ids=[], completion_ids=[], logprobs=[], truncated=r.truncated)
                for r in self.served.generate(role, prompts)
            ]
        if self._rest_policy is not None:
            return self._rest_policy.generate(role, prompts)
        act: Callable[[str, list[Message]], str] = self.rest
        return [Generation(act(role, p), [], [], [], False) for p in prompts]

    def __call__(self, agent: str, messages: list[Message]) -> str:
        """The callable-team shape (``mappa play``): the served reply keeps its ``agent_error`` for the receipt."""
        if self.served.serves(agent):
            return self.served(agent, messages)
        return self.generate(agent, [messages])[0].text

    # The trainer's hooks, delegated to the trained part of the team (nothing to do for served/scripted roles).
    @contextlib.contextmanager
    def sampling(self, **kwargs: Any) -> Iterator[None]:
        if self._rest_policy is not None and hasattr(self._rest_policy, "sampling"):
            with self._rest_policy.sampling(**kwargs):
                yield
        else:
            yield

    def eval(self) -> ServedPolicy:
        if self._rest_policy is not None:
            self._rest_policy.eval()
        return self

    def train(self) -> ServedPolicy:
        if self._rest_policy is not None:
            self._rest_policy.train()
        return self

    def trainable_parameters(self, role: str) -> list[Any]:
        if self.served.serves(role) or self._rest_policy is None:
            return []
        return list(self._rest_policy.trainable_parameters(role))

    def metrics(self, prefix: str) -> dict[str, float]:
        """Per-role usage and failures of the served roles, logged beside the held-out metrics."""
        keys = ("turns", "failed_turns", "retries", "prompt_tokens", "completion_tokens")
        return {
            f"{prefix}/served/{role}/{k}": float(s[k])
            for role, s in self.served.stats_dict().items()
            for k in keys
        }

    def load(self, path: Path) -> None:
        if self._rest_policy is None:
            raise ValueError(
                "a checkpoint holds trained adapters, but no role of this team is trained: drop --checkpoint or "
                "let the trained team play the unserved roles (--others model)"
            )
        self._rest_policy.load(path)


def served_policy(args: Any, config: Any) -> ServedPolicy:
    """``mappa eval --team served``: the team of ``--served``, the other roles scripted or the config's model."""
    import mappa_envs
    from mappa_envs.agents import team_from_specs
    from mappa_envs.scripted import scripted_team
    from mappa_train.trainer import build_policy

    if not args.served:
        raise ValueError(
            "--team served needs --served ROLE=URL@MODEL ('*' for every role) or a .yaml/.json team map"
        )
    served = team_from_specs(args.served)
    probe = mappa_envs.make(config.env, reward="outcome", tasks=config.eval_tasks)
    roles, name = list(probe.unwrapped.possible_agents), probe.unwrapped.spec.name
    probe.close()
    rest: Any = None
    if not all(served.serves(r) for r in roles):
        if args.others == "model":
            rest = build_policy(config, roles)
        elif args.others == "scripted":
            rest = scripted_team(name)
        else:
            raise ValueError(f"--others {args.others!r}: choose 'scripted' or 'model'")
    return ServedPolicy(served, roles, rest)
