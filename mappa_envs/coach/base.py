"""The coach contract, the sync/async bridge, and weighted mixtures of coaches.

A coach turns receipts (:class:`ActionRecord`) into :class:`Judgement` s, one per record, in order. It is called
in batches because an LLM coach is only fast when many actions are judged concurrently, and because a hindsight
judgement needs the whole episode at once. Every coach offers both ``judge`` (sync: scripts, notebooks, the
PettingZoo wrappers) and ``ajudge`` (async: a trainer that overlaps coaching with other work).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from mappa_envs.pipeline import Role
from mappa_envs.records import ActionRecord, Judgement

T = TypeVar("T")


@runtime_checkable
class Coach(Protocol):
    """Anything that scores actions: ``judge(records, roles, context) -> one Judgement per record``.

    ``roles`` maps a record's ``role`` to its :class:`Role` (title, rubric, required artifacts); ``context`` is the
    pipeline's ``coach_context`` (what the team does and how it is graded).
    """

    name: str

    def judge(
        self, records: Sequence[ActionRecord], roles: Mapping[str, Role], context: str = ""
    ) -> list[Judgement]: ...

    async def ajudge(
        self, records: Sequence[ActionRecord], roles: Mapping[str, Role], context: str = ""
    ) -> list[Judgement]: ...


def role_of(record: ActionRecord, roles: Mapping[str, Role]) -> Role:
    """The record's role, or a KeyError that names the roles that were given."""
    try:
        return roles[record.role]
    except KeyError:
        raise KeyError(f"no Role for record role {record.role!r}; roles given: {sorted(roles)}") from None


def episodes(records: Sequence[ActionRecord]) -> dict[str, list[ActionRecord]]:
    """Records grouped by ``episode_id``, each group in step order (hindsight coaches look across a group)."""
    groups: dict[str, list[ActionRecord]] = {}
    for r in records:
        groups.setdefault(r.episode_id, []).append(r)
    return {k: sorted(v, key=lambda r: r.step) for k, v in groups.items()}


class LoopThread:
    """A private event loop on a daemon thread, so sync code can run coroutines even inside a running loop.

    ``asyncio.run`` fails when the caller is already in a loop (Jupyter, an async trainer) and creates a fresh loop
    per call, which breaks clients whose connection pools are bound to one loop. This runs every coroutine on one
    long-lived loop instead and blocks the calling thread until the result is ready.
    """

    def __init__(self, name: str = "mappa-coach-loop") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def main() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=main, name=self._name, daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the private loop and wait for it (from any thread but the loop's own)."""
        loop = self.loop
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("LoopThread.run called from its own loop; await the coroutine instead")
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` running on the private loop from another loop (cancellation propagates)."""
        loop = self.loop
        if asyncio.get_running_loop() is loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    def close(self) -> None:
        """Stop the loop and join its thread (idempotent)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(timeout=5)
            if not loop.is_running():
                loop.close()


_SOURCE_PRIORITY = ("fallback", "llm", "cache", "rules")


class MixtureCoach:
    """A weighted mean of several coaches' scores, with every component kept observable.

    The combined score is ``sum(w_i * s_i) / sum(w_i)``. The rationale starts with a line naming each component's
    score and weight, then each component's own rationale; ``last_components`` holds, per record of the last call,
    ``{name: Judgement}``. The combined ``source`` is the most telling of the components' sources: ``fallback`` if
    any component fell back (so a fallback is never hidden inside a mean), else ``llm``, else ``cache``, else
    ``rules``, else the alphabetically first of a user coach's own sources.
    """

    def __init__(self, components: Mapping[str, tuple[Coach, float]] | Sequence[tuple[Coach, float]]) -> None:
        items = (
            list(components.items())
            if isinstance(components, Mapping)
            else [(getattr(c, "name", type(c).__name__), (c, w)) for c, w in components]
        )
        if not items:
            raise ValueError("MixtureCoach needs at least one component")
        names = [n for n, _ in items]
        if len(set(names)) != len(names):
            raise ValueError(
                f"MixtureCoach component names must be unique, got {names}; pass a dict to name them"
            )
        for n, (_, w) in items:
            if not w >= 0:
                raise ValueError(f"MixtureCoach weight of {n!r} must be >= 0, got {w!r}")
        if sum(w for _, (_, w) in items) <= 0:
            raise ValueError("MixtureCoach weights must not all be zero")
        self.components: dict[str, tuple[Coach, float]] = dict(items)
        self.name = "mixture(" + ",".join(f"{n}*{w:g}" for n, (_, w) in items) + ")"
        self.last_components: list[dict[str, Judgement]] = []

    def judge(
        self, records: Sequence[ActionRecord], roles: Mapping[str, Role], context: str = ""
    ) -> list[Judgement]:
        parts = {n: c.judge(records, roles, context) for n, (c, _) in self.components.items()}
        return self._combine(parts, len(records))

    async def ajudge(
        self, records: Sequence[ActionRecord], roles: Mapping[str, Role], context: str = ""
    ) -> list[Judgement]:
        names = list(self.components)
        results = await asyncio.gather(
            *(self.components[n][0].ajudge(records, roles, context) for n in names)
        )
        return self._combine(dict(zip(names, results, strict=True)), len(records))

    def _combine(self, parts: dict[str, list[Judgement]], n: int) -> list[Judgement]:
        for name, js in parts.items():
            if len(js) != n:
                raise RuntimeError(f"coach {name!r} returned {len(js)} judgements for {n} records")
        total = sum(w for _, w in self.components.values())
        out, comps = [], []
        for i in range(n):
            here = {name: parts[name][i] for name in self.components}
            score = sum(self.components[k][1] * j.score for k, j in here.items()) / total
            score = min(10.0, max(0.0, score))
            head = ", ".join(
                f"{k}={j.score:g}x{self.components[k][1]:g}({j.source})" for k, j in here.items()
            )
            body = "\n".join(f"[{k}] {j.rationale}" for k, j in here.items())
            sources = {j.source for j in here.values()}
            source = next((s for s in _SOURCE_PRIORITY if s in sources), min(sources))
            correction = next((j.correction for j in here.values() if j.correction is not None), None)
            out.append(
                Judgement(
                    score=score,
                    rationale=f"mixture {score:.2f} = {head}\n{body}",
                    source=source,
                    correction=correction,
                )
            )
            comps.append(here)
        self.last_components = comps
        return out
