"""How many threads torch may use: the cores this process may run on, less the work already running on them.

torch's default is one thread per core whatever else runs. On a small machine with another job beside it the
threads then wait on each other at every operation: the same evaluation took 28 min beside another torch job and
~1 min alone on 2 cores. Asking for the idle cores only (by the 1-minute load average) keeps a run steady.
"""

from __future__ import annotations

import os


def idle_cores() -> int:
    """Cores available to this process minus the current load, rounded, at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return max(1, min(cores, round(cores - load)))


def configure(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (or ``$MAPPA_THREADS``, or :func:`idle_cores`); returns it."""
    import torch

    n = threads or int(os.environ.get("MAPPA_THREADS", "0") or 0) or idle_cores()
    torch.set_num_threads(n)
    return n
