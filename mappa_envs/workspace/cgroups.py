"""Per-kernel control groups: a hard cap on processes (fork bombs) and on memory, and a way to kill them all.

Why cgroups and not rlimits: ``RLIMIT_NPROC`` does not apply to root (and the trainer often runs as root in a
container), and ``RLIMIT_AS`` caps one process, not a hundred forked copies of it. A ``pids`` cgroup caps the number
of tasks of the whole sandbox whatever its uid, and a ``memory`` cgroup caps its total memory, tmpfs pages
included. Both need a writable cgroup hierarchy (root, or a delegated subtree); where there is none,
:func:`probe` says so and the sandbox names the gap instead of pretending.

Works with cgroup v1 (one hierarchy per controller, as on this machine) and v2 (one unified hierarchy). Groups are
created below the cgroup this process already lives in, so limits nest under whatever the host set for us.
"""

from __future__ import annotations

import atexit
import functools
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from mappa_envs.workspace import mountinfo

CONTROLLERS = ("pids", "memory")


@dataclass(frozen=True)
class Hierarchy:
    """Where one controller's groups for this process live: ``parent`` is our own group in that hierarchy."""

    controller: str
    parent: Path
    v2: bool


def _mounts() -> list[tuple[str, str, str, str]]:
    """``(fstype, mount point, root inside the fs, super options)`` of every cgroup mount."""
    return [
        (m.fstype, m.mount_point, m.root, m.super_options)
        for m in mountinfo.mounts()
        if m.fstype in ("cgroup", "cgroup2")
    ]


def _own_paths() -> dict[str, str]:
    """Our group per v1 controller name, and ``""`` → our v2 group (from ``/proc/self/cgroup``)."""
    out: dict[str, str] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        _, names, path = line.split(":", 2)
        for name in names.split(",") if names else [""]:
            out[name] = path
    return out


def _join(mount: str, root: str, path: str) -> Path:
    rel = path[len(root) :] if root != "/" and path.startswith(root) else path
    return Path(mount) / rel.lstrip("/")


def _writable(parent: Path, controller: str, v2: bool) -> bool:
    """Can we create a child group here in which ``controller`` is enforced?"""
    probe = parent / f"mappa-probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
    except OSError:
        return False
    try:
        knob = probe / (
            "pids.max" if controller == "pids" else "memory.max" if v2 else "memory.limit_in_bytes"
        )
        return knob.exists()
    finally:
        try:
            probe.rmdir()
        except OSError:
            pass


@functools.cache
def probe() -> dict[str, Hierarchy]:
    """The controllers of :data:`CONTROLLERS` we can use, by name (empty when cgroups are not writable)."""
    own = _own_paths()
    found: dict[str, Hierarchy] = {}
    for fstype, mount, root, opts in _mounts():
        if fstype == "cgroup":
            for c in CONTROLLERS:
                if c in opts.split(",") and c not in found and c in own:
                    parent = _join(mount, root, own[c])
                    if _writable(parent, c, v2=False):
                        found[c] = Hierarchy(c, parent, v2=False)
    for fstype, mount, root, _ in _mounts():
        if fstype == "cgroup2" and "" in own:
            parent = _join(mount, root, own[""])
            try:
                available = (parent / "cgroup.controllers").read_text().split()
            except OSError:
                continue
            for c in CONTROLLERS:
                if c not in found and c in available and _writable(parent, c, v2=True):
                    found[c] = Hierarchy(c, parent, v2=True)
    return found


BUDGET_GROUP = "mappa-{pid}-budget"
"""The parent memory group of all this process's sandboxes, capped at :func:`.budget.total_bytes`."""
_BUDGET_LOCK = threading.Lock()
_budget_dirs: dict[str, Path] = {}


def budget_parent(h: Hierarchy) -> Path:
    """The process-wide memory group (created once, limit = the memory budget) the sandboxes' groups go in."""
    from mappa_envs.workspace import budget

    with _BUDGET_LOCK:
        d = _budget_dirs.get(str(h.parent))
        if d is not None and d.exists():
            return d
        d = h.parent / BUDGET_GROUP.format(pid=os.getpid())
        d.mkdir(exist_ok=True)
        limit = str(budget.total_bytes())
        if h.v2:
            _try_write(h.parent / "cgroup.subtree_control", "+memory")
            _try_write(d / "cgroup.subtree_control", "+memory")
            (d / "memory.max").write_text(limit)
            _try_write(d / "memory.swap.max", "0")
        else:
            (d / "memory.limit_in_bytes").write_text(limit)
            _try_write(d / "memory.memsw.limit_in_bytes", limit)
        _budget_dirs[str(h.parent)] = d
        if len(_budget_dirs) == 1:
            atexit.register(_remove_budget_dirs)
        return d


def _remove_budget_dirs() -> None:
    for d in list(_budget_dirs.values()):
        try:
            d.rmdir()
        except OSError:
            pass


class Group:
    """One sandbox's groups (one per usable controller); ``procs_files`` are what a launcher writes its pid to.

    The memory group sits inside the process-wide budget group (:func:`budget_parent`), so the caps of all
    parallel sandboxes are bounded together as well as one by one."""

    def __init__(self, max_pids: int | None, memory_bytes: int | None) -> None:
        self.dirs: list[Path] = []
        name = f"mappa-{os.getpid()}-{uuid.uuid4().hex[:10]}"
        for c, h in probe().items():
            limit = max_pids if c == "pids" else memory_bytes
            if not limit:
                continue
            d = (budget_parent(h) if c == "memory" else h.parent) / name
            d.mkdir()
            self.dirs.append(d)
            if c == "pids":
                (d / "pids.max").write_text(str(int(limit)))
            elif h.v2:
                (d / "memory.max").write_text(str(int(limit)))
                _try_write(d / "memory.swap.max", "0")
            else:
                (d / "memory.limit_in_bytes").write_text(str(int(limit)))
                _try_write(d / "memory.memsw.limit_in_bytes", str(int(limit)))

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def pids(self) -> set[int]:
        out: set[int] = set()
        for d in self.dirs:
            try:
                out.update(int(p) for p in (d / "cgroup.procs").read_text().split())
            except OSError:
                pass
        return out

    def destroy(self, timeout_s: float = 5.0) -> None:
        """Kill every process still in the groups (v2: ``cgroup.kill``), then remove the groups."""
        deadline = time.monotonic() + timeout_s
        for d in self.dirs:
            _try_write(d / "cgroup.kill", "1")
        while (left := self.pids()) and time.monotonic() < deadline:
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.01)
        for d in self.dirs:
            for _ in range(100):  # rmdir fails with EBUSY until the last killed task is reaped
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
        self.dirs = [d for d in self.dirs if d.exists()]


@functools.cache
def sweep_stale() -> int:
    """Remove the groups of sandbox owners that died without cleaning up (killing what is left); once."""
    n = 0
    for h in probe().values():
        for d in h.parent.glob("mappa-*-*"):
            pid = d.name.split("-")[1]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                g = Group.__new__(Group)
                g.dirs = [
                    *(c for c in d.glob("mappa-*-*") if c.is_dir()),
                    d,
                ]  # a budget group's members first
                g.destroy()
                n += 1
    return n


def _try_write(path: Path, text: str) -> bool:
    try:
        path.write_text(text)
        return True
    except OSError:
        return False
