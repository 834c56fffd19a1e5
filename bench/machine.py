"""What the machine is and how busy it was: shared by the bench scripts (CPU name, CPU taken by other processes).

Timings on a shared 2-core machine mean little when something else ran meanwhile, so every bench prints how much
CPU other processes took during its run.
"""

from __future__ import annotations

import os
import platform


def system_busy_s() -> float:
    """CPU seconds all processes have spent busy since boot (``/proc/stat``; 0 where it is missing)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(root: int | None = None) -> float:
    """CPU seconds of this process and its live descendants, reaped children included (``/proc/PID/stat``)."""
    root = os.getpid() if root is None else root
    parent, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(entry)] = int(rest[1])
        cpu[int(entry)] = sum(int(x) for x in rest[11:15]) / os.sysconf(
            "SC_CLK_TCK"
        )  # utime stime cutime cstime
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += cpu.get(pid, 0.0)
        stack.extend(p for p, pp in parent.items() if pp == pid)
    return total


def foreign_load(busy0: float, tree0: float, wall: float) -> str:
    """How much CPU other processes took while we ran: a contended run's timings mean little."""
    other = max(0.0, (system_busy_s() - busy0) - (tree_cpu_s() - tree0))
    share = other / max(wall * (os.cpu_count() or 1), 1e-9)
    warn = "  WARNING: contended, timings are pessimistic" if share > 0.05 else ""
    return f"CPU taken by other processes during the run: {other:.1f} core-s ({share:.0%} of capacity){warn}"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
