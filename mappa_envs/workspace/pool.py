"""A small warm pool of started (and pre-imported) kernels, so an episode's first cell does not wait.

Kernels are started in a background thread while agents are still generating; ``acquire()`` hands one out and
starts its replacement. One pool per configuration (limits, preload, sandbox wrapper, python), shared by every
env in the process; ``shutdown_all()`` runs at exit so no kernel outlives the program.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Hashable
from pathlib import Path

from mappa_envs.workspace.kernel import CellLimits, Kernel, Wrapper

Workdirs = tuple[Callable[[], Path], Callable[[Path], None]]
"""``(make, remove)``: fresh folders for sandboxed pooled kernels (see :class:`KernelPool`)."""


class KernelPool:
    """Warm kernels of one configuration.

    ``workdirs`` is for sandboxed kernels, which can only write to a folder bound when they start: each pooled
    kernel is then started in a fresh folder of its own, which becomes the episode's workspace when the kernel is
    handed out; the folders of kernels never handed out are removed with them.
    """

    def __init__(
        self, factory: Callable[[], Kernel], size: int = 1, workdirs: Workdirs | None = None
    ) -> None:
        self.factory = factory
        self.size = size
        self.workdirs = workdirs
        self._ready: list[Kernel] = []
        self._lock = threading.Lock()
        self._starting = 0
        self._closed = False
        self._threads: list[threading.Thread] = []

    def _launch(self) -> Kernel:
        """Start one kernel (in a fresh folder of its own when the pool has ``workdirs``)."""
        if self.workdirs is None:
            return self.factory().start()
        make, remove = self.workdirs
        folder = make()
        try:
            return self.factory().start(cwd=folder)
        except BaseException:
            remove(folder)
            raise

    def _discard(self, kernel: Kernel) -> None:
        """Shut down a kernel never handed out (and remove its own folder)."""
        folder = kernel.cwd
        kernel.shutdown()
        if self.workdirs is not None and folder is not None:
            self.workdirs[1](folder)

    def _start_one(self) -> None:
        try:
            kernel = self._launch()
        except Exception:
            kernel = None
        with self._lock:
            self._starting -= 1
            if kernel is not None and not self._closed:
                self._ready.append(kernel)
                kernel = None
        if kernel is not None:
            self._discard(kernel)

    def fill(self) -> None:
        """Start kernels in the background until ``size`` are ready or starting."""
        with self._lock:
            if self._closed:
                return
            need = self.size - len(self._ready) - self._starting
            self._starting += max(need, 0)
        self._threads = [t for t in self._threads if t.is_alive()]
        for _ in range(max(need, 0)):
            t = threading.Thread(target=self._start_one, daemon=True, name="mappa-kernel-pool")
            t.start()
            self._threads.append(t)

    def acquire(self) -> Kernel:
        """A started kernel: a warm one if ready, else a fresh one started now; refills in the background."""
        with self._lock:
            kernel = self._ready.pop() if self._ready else None
        if kernel is not None and not kernel.is_alive():
            self._discard(kernel)
            kernel = None
        if kernel is None:
            kernel = self._launch()
        self.fill()
        return kernel

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            ready, self._ready = self._ready, []
        for t in self._threads:
            t.join(timeout=30)
        with self._lock:
            ready += self._ready
            self._ready = []
        for k in ready:
            self._discard(k)


_POOLS: dict[Hashable, KernelPool] = {}
_POOLS_LOCK = threading.Lock()


def shared_pool(
    limits: CellLimits,
    preload: str,
    wrapper: Wrapper | None,
    python: str,
    size: int,
    key: Hashable = None,
    workdirs: Workdirs | None = None,
) -> KernelPool:
    """The process-wide pool for one kernel configuration (created on first use).

    ``key`` identifies the wrapper's configuration (default: the wrapper object); with ``workdirs`` it must also
    say where the folders go.
    """
    pool_key = (limits, preload, key if key is not None else id(wrapper) if wrapper else None, python)
    with _POOLS_LOCK:
        pool = _POOLS.get(pool_key)
        if pool is None:
            pool = KernelPool(
                lambda: Kernel(limits, preload=preload, wrapper=wrapper, python=python),
                size=size,
                workdirs=workdirs,
            )
            _POOLS[pool_key] = pool
        pool.size = max(pool.size, size)
    return pool


def shutdown_all() -> None:
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for p in pools:
        p.shutdown()


atexit.register(shutdown_all)
