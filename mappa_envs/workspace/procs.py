"""Process-tree hygiene: find every descendant of a kernel and kill them all, detached ones included.

Agent code may ``fork``, ``setsid`` or double-fork to escape. The kernel is started as a *child subreaper*
(``prctl(PR_SET_CHILD_SUBREAPER)``), so orphans re-parent to the kernel instead of to init and stay visible as its
descendants; killing the tree from the top (stop everything first, then kill) then leaves nothing behind.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import time
from collections.abc import Callable
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name may contain spaces and parentheses: the ppid follows the last ')'
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) < 2:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (not ``pid`` itself), parents before children."""
    tree = _children_map()
    out: list[int] = []
    stack = list(tree.get(pid, []))
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(tree.get(p, []))
    return out


def _signal(pids: list[int], sig: int) -> None:
    for p in pids:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass


def kill_tree(pid: int, include_root: bool = True, timeout_s: float = 5.0) -> None:
    """SIGSTOP then SIGKILL every descendant (repeatedly, to catch fork bombs), then ``pid`` itself."""
    deadline = time.monotonic() + timeout_s
    while True:
        kids = descendants(pid)
        if not kids or time.monotonic() > deadline:
            break
        _signal(kids, signal.SIGSTOP)
        _signal(kids, signal.SIGKILL)
        time.sleep(0.01)
    if include_root:
        _signal([pid], signal.SIGKILL)


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rfind(")") + 2 :].split()[0] != "Z"


def limits_preexec(memory_bytes: int | None, nofile: int | None = 1024) -> Callable[[], None]:
    """A ``preexec_fn`` for the kernel: become a child subreaper and apply resource limits."""

    def apply() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        if memory_bytes:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply
