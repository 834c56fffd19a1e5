"""The env registry: versioned ids (``math-chat-v0``), lazy entry points, ``make()`` with a visible wrapper stack.

Mirrors PettingZoo's (and Gymnasium's) registry conventions: an unversioned id resolves to the highest version,
entry points are ``"module:function"`` strings imported only when the env is made, and ``make()`` returns the
wrapped env while ``raw_env()`` returns the bare one. The stack ``make()`` builds is::

    raw PipelineEnv  →  reward wrapper (outcome | coach)  →  OrderEnforcingWrapper

so anyone can rebuild it by hand with other wrappers.
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


def register(env_id: str, entry_point: str, description: str, **kwargs: Any) -> None:
    """Register ``env_id`` (must carry a version, ``-vN``) with a lazy ``"module:function"`` entry point."""
    name, version = _parse(env_id)
    if version is None:
        raise ValueError(f"register() needs a versioned id like '{name}-v0', got {env_id!r}")
    if env_id in registry._specs:
        raise ValueError(f"env id {env_id!r} is already registered")
    registry._specs[env_id] = EnvSpec(env_id, entry_point, description, dict(kwargs))


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


def make(env_id: str, reward: str = "outcome", **kwargs: Any):
    """Build ``env_id`` with its wrapper stack (see the module docstring).

    ``reward="outcome"`` keeps the bare env's terminal outcome reward for every agent (the baseline); other
    reward choices come from the coach wrappers. Remaining keyword arguments go to the raw env (``tasks=``,
    ``cell_timeout_s=``, ...).
    """
    if reward != "outcome":
        raise ValueError(f"reward must be 'outcome', got {reward!r}")
    env = raw_env(env_id, **kwargs)
    return OrderEnforcingWrapper(env)
