"""Size-capped folders: a host-side tmpfs mounted on a fresh directory, so a full disk stays somebody else's problem.

Why a tmpfs and not a loop device, quotas or ``RLIMIT_FSIZE``: ``RLIMIT_FSIZE`` caps each file but not how many
files are written; filesystem quotas need a quota-enabled filesystem and a uid per sandbox; a loop device needs an
image file and ``losetup``. A tmpfs with ``size=`` is one ``mount(2)`` call, exact ("No space left on device" at
the cap, whatever the number of files), needs no cleanup beyond ``umount``, and its pages are charged to the memory
cgroup of whoever writes them (so the sandbox's memory cap covers it too). The price: the folder lives in RAM, so
the cap should stay well below the machine's memory. Mounting needs ``CAP_SYS_ADMIN`` on the host (root outside a
restricted container); :func:`can_mount` says whether we have it, and callers fall back to ``RLIMIT_FSIZE``.

A mount outlives a crashed process, so each carries its owner's pid in its source name (``mappa-quota-<pid>``):
:func:`sweep_stale` turns the mounts of dead owners back into plain folders, and at exit this process does the
same for any it still holds (a workspace nobody closed stays on disk, as it would without the cap).
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import os
import tempfile
import threading
from pathlib import Path

from mappa_envs.workspace import hostio, mountinfo

MNT_DETACH = 2
MS_NOSUID, MS_NODEV = 2, 4
SOURCE = "mappa-quota"
_MOUNTED: set[str] = set()
_LOCK = threading.Lock()


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def mount_tmpfs(path: Path, size_bytes: int, mode: int = 0o755) -> None:
    """Mount a tmpfs of ``size_bytes`` on the (empty, existing) directory ``path``; raises OSError."""
    opts = f"size={int(size_bytes)},mode={mode:o}".encode()
    source = f"{SOURCE}-{os.getpid()}".encode()
    rc = _libc().mount(source, str(path).encode(), b"tmpfs", MS_NOSUID | MS_NODEV, opts)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount tmpfs on {path}: {os.strerror(err)}")
    with _LOCK:
        if not _MOUNTED:
            atexit.register(_release_all)
        _MOUNTED.add(str(path))


def unmount(path: Path) -> bool:
    """Lazily unmount ``path`` (works while a dying sandbox still holds it); False when nothing was mounted."""
    with _LOCK:
        _MOUNTED.discard(str(path))
    return _libc().umount2(str(path).encode(), MNT_DETACH) == 0


def _release_all() -> None:
    """At exit: folders still on a cap of ours become plain folders (contents kept)."""
    with _LOCK:
        left = list(_MOUNTED)
    for path in left:
        try:
            remove_dir(Path(path), keep=True)
        except OSError:
            unmount(Path(path))


def stale_mounts() -> list[Path]:
    """Our caps whose owner process is gone (it crashed before unmounting)."""
    out = []
    for m in mountinfo.mounts():
        if m.fstype == "tmpfs" and m.source.startswith(SOURCE + "-"):
            pid = m.source[len(SOURCE) + 1 :]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                out.append(Path(m.mount_point))
    return out


@functools.cache
def sweep_stale() -> int:
    """Turn the caps of dead owners back into plain folders (contents kept); once per process."""
    stale = stale_mounts()
    for path in stale:
        try:
            remove_dir(path, keep=True)
        except OSError:
            pass
    return len(stale)


def is_mount(path: Path) -> bool:
    return os.path.ismount(path)


@functools.cache
def can_mount() -> bool:
    """True when this process may mount a tmpfs (tried once on a scratch directory)."""
    if os.geteuid() != 0:
        return False
    d = Path(tempfile.mkdtemp(prefix="mappa-mount-probe-"))
    try:
        mount_tmpfs(d, 1 << 20)
    except OSError:
        return False
    else:
        unmount(d)
        return True
    finally:
        hostio.remove_tree(d)


def capped_dir(parent: Path, prefix: str, size_bytes: int | None) -> tuple[Path, bool]:
    """A fresh directory under ``parent``, capped at ``size_bytes`` when we may mount; ``(path, capped)``."""
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    if size_bytes and can_mount():
        try:
            mount_tmpfs(path, size_bytes)
            return path, True
        except OSError:
            pass
    return path, False


def remove_dir(path: Path, keep: bool = False) -> None:
    """Remove a directory made by :func:`capped_dir`; with ``keep`` its contents stay on disk at the same path."""
    if not is_mount(path):
        if not keep:
            hostio.remove_tree(path)
        return
    if keep:  # copy out of RAM before the tmpfs goes away, then put it back at the same path
        saved = Path(tempfile.mkdtemp(prefix=path.name + "-keep-", dir=path.parent))
        hostio.copy_tree(path, saved)  # bounded; links, sockets, FIFOs are not files to keep
        unmount(path)
        hostio.remove_tree(path)
        saved.rename(path)
        return
    unmount(path)
    hostio.remove_tree(path)
