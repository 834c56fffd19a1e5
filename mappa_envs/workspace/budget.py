"""One memory budget for every sandbox of this process, sized from the machine.

Each sandbox has its own memory cap (:class:`~.sandbox.SandboxPolicy`), but B parallel episodes (and the warm kernels of
the pool) each get one: eight episodes capped at 8 GiB on a 24 GiB machine can together take the host down — the
trainer with it. So all sandboxes of a process live in one parent memory cgroup whose limit is this budget: a cell
that pushes the total over it is OOM-killed *inside its sandbox* (the agent sees a tool error, the kernel restarts),
never the env process. A single sandbox asking for more than the whole budget is a configuration error, raised
when the env is built (:func:`check`).

The budget is ``MAPPA_MEMORY_BUDGET_GB`` when set, else 80 % of the smaller of the machine's memory and this
process's own memory cgroup limit (a container's limit counts, not the host's RAM).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

GiB = 1024**3
FRACTION = 0.8
ENV_VAR = "MAPPA_MEMORY_BUDGET_GB"


class MemoryBudgetError(ValueError):
    """A configuration asks for more memory than this machine (the process's budget) has; says how to fix it."""


def _meminfo_total() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_limit() -> int | None:
    """This process's own memory cgroup limit (v1 or v2), None when unlimited or unknown."""
    from mappa_envs.workspace import cgroups

    for name, rel in cgroups._own_paths().items():
        if name not in ("memory", ""):
            continue
        for fstype, mount, root, opts in cgroups._mounts():
            v2 = fstype == "cgroup2"
            if (name == "" and not v2) or (name == "memory" and (v2 or "memory" not in opts.split(","))):
                continue
            knob = cgroups._join(mount, root, rel) / ("memory.max" if v2 else "memory.limit_in_bytes")
            try:
                text = knob.read_text().strip()
            except OSError:
                continue
            if text.isdigit() and int(text) < 1 << 60:
                return int(text)
    return None


def host_bytes() -> int:
    """The memory this process may use at most: the machine's, or its cgroup's limit when smaller."""
    sizes = [s for s in (_meminfo_total(), _cgroup_limit()) if s]
    return min(sizes) if sizes else 0


@functools.cache
def total_bytes() -> int:
    """This process's budget for all its sandboxes together (see the module docstring)."""
    raw = os.environ.get(ENV_VAR, "").strip()
    if raw:
        try:
            value = float(raw)
        except ValueError:
            raise MemoryBudgetError(f"{ENV_VAR}={raw!r} is not a number of GiB (e.g. {ENV_VAR}=16)") from None
        if value <= 0:
            raise MemoryBudgetError(f"{ENV_VAR}={raw!r} must be a positive number of GiB")
        return int(value * GiB)
    return int(host_bytes() * FRACTION)


def check(requested: int | None, what: str) -> None:
    """Raise :class:`MemoryBudgetError` when one sandbox alone would need more than the whole budget."""
    budget = total_bytes()
    if requested and budget and requested > budget:
        raise MemoryBudgetError(
            f"{what} asks for {requested / GiB:.3g} GiB of memory, but this process's budget for all sandboxes "
            f"together is {budget / GiB:.3g} GiB ({FRACTION:.0%} of the {host_bytes() / GiB:.3g} GiB this "
            f"machine gives it). Lower cell_memory_gb (or sandbox_policy=SandboxPolicy(memory_bytes=...)), or set "
            f"{ENV_VAR} if you know the machine has more"
        )
