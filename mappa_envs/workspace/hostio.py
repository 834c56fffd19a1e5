"""Host-side reads of a workspace: everything in it was written by agent code, so every read is hostile input.

The sandbox stops agent code; this module stops the env from becoming its deputy. Outside the sandbox the env
reads the workspace to grade it, list it, hand it to the next role and keep it for inspection. A ``submission.csv``
left as a symlink to the hidden answers (or to ``/proc/self/environ``), a FIFO whose read never returns, a
1,200-deep tree, a sparse 100 GB file or a million tiny files must cost the env nothing but a refusal.

Rules, the same for every reader:

* only **regular files** that live **inside** the workspace: each path component is opened with ``O_NOFOLLOW``
  relative to its parent's descriptor (``openat``), so a symlink anywhere on the path — parents included — is
  refused, and so are hard links (``st_nlink > 1``: the other name may be outside), FIFOs, sockets and devices;
  the file is checked on the descriptor that is then read (``fstat``), so swapping it after the check changes
  nothing;
* **bounded**: sizes are capped by apparent size (a sparse file counts at its full length), at most ``cap + 1``
  bytes are ever read, walks stop after a number of entries, a depth and a wall time;
* a refusal is :class:`Refused` with a one-line reason naming the file (its name, quoted and clipped) and what is
  wrong with it, never its contents or a link's target.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1024**2
MAX_ENTRIES = 10_000
"""Directory entries a walk looks at before it stops (a million tiny files cost the same as ten thousand)."""
MAX_DEPTH = 32
"""Directory levels a walk descends (a 1,200-deep tree stops here; real workspaces are a few levels deep)."""
WALK_SECONDS = 2.0
"""Wall time a walk may take before it stops."""
SKIP_DIRS = frozenset({"__pycache__", ".ipynb_checkpoints"})

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class Refused(Exception):
    """A workspace path the host will not read; ``str()`` is the one-line reason (safe to show anyone)."""


def shown(name: str) -> str:
    """A file name as it may appear in a reason: quoted, control characters escaped, clipped."""
    text = repr(str(name))
    return text if len(text) <= 80 else text[:76] + "...'"


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def _parts(rel: str | os.PathLike) -> list[str]:
    text = os.fspath(rel)
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if text.startswith("/") or not parts or ".." in parts or "\0" in text:
        raise Refused(f"{shown(text)} is not a plain relative path inside the workspace")
    return parts


def _open_dir(root: Path, parts: list[str], rel: str) -> int:
    """A descriptor of ``root/parts...``, each component opened without following links."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise Refused(
                        f"{shown(rel)} has a parent folder that is a link or not a folder"
                    ) from None
                if e.errno == errno.ENOENT:
                    raise FileNotFoundError(errno.ENOENT, "no such file", rel) from None
                raise Refused(f"{shown(rel)} cannot be opened ({os.strerror(e.errno or 0)})") from None
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(root: Path, rel: str | os.PathLike, max_bytes: int) -> int:
    """A read-only descriptor of the regular file ``root/rel``, or :class:`Refused` (``FileNotFoundError`` when
    nothing is there). ``root`` is the trusted workspace folder; ``rel`` and everything below ``root`` is not."""
    rel_s = os.fspath(rel)
    parts = _parts(rel_s)
    dir_fd = _open_dir(Path(root), parts[:-1], rel_s)
    try:
        try:
            st = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, "no such file", rel_s) from None
        _check(st, rel_s, max_bytes)
        try:
            fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=dir_fd)
        except OSError as e:  # replaced between the stat and the open (a link, a socket: ELOOP, ENXIO)
            raise Refused(
                f"{shown(rel_s)} changed while being opened ({os.strerror(e.errno or 0)})"
            ) from None
    finally:
        os.close(dir_fd)
    try:
        st2 = os.fstat(fd)
        if (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino):
            raise Refused(f"{shown(rel_s)} changed while being opened")
        _check(st2, rel_s, max_bytes)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check(st: os.stat_result, rel: str, max_bytes: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise Refused(f"{shown(rel)} is {_kind(st.st_mode)}, not a file")
    if st.st_nlink > 1:
        raise Refused(f"{shown(rel)} is a hard link ({st.st_nlink} names), not a file of its own")
    if st.st_size > max_bytes:
        raise Refused(f"{shown(rel)} is {st.st_size} bytes, over the {max_bytes}-byte limit")


def read_bytes(root: Path, rel: str | os.PathLike, max_bytes: int) -> bytes:
    """The contents of the regular file ``root/rel`` (at most ``max_bytes``); see :func:`open_regular`."""
    fd = open_regular(root, rel, max_bytes)
    try:
        chunks, total = [], 0
        while total <= max_bytes:
            chunk = os.read(fd, min(MiB, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    if total > max_bytes:  # it grew while being read (a process in the sandbox is still writing)
        raise Refused(f"{shown(os.fspath(rel))} grew past the {max_bytes}-byte limit while being read")
    return b"".join(chunks)


# ------------------------------------------------------------------------------------------------ walking
@dataclass(frozen=True)
class Entry:
    """One thing found in a walk: ``kind`` is ``file`` (regular, one name), ``dir``, or ``other`` (links,
    special files, hard links — listed, never read)."""

    rel: str
    kind: str
    size: int


@dataclass
class Walk:
    """A bounded walk's result: ``entries`` in walk order and, when it stopped early, why (one line)."""

    entries: list[Entry] = field(default_factory=list)
    stopped: str | None = None


def walk(
    root: Path,
    max_entries: int = MAX_ENTRIES,
    max_depth: int = MAX_DEPTH,
    seconds: float = WALK_SECONDS,
    skip_dirs: frozenset[str] = SKIP_DIRS,
) -> Walk:
    """Every entry under ``root`` without following links, bounded in count, depth and time.

    Breadth first, sorted per folder: when a bound stops the walk, what was seen is the shallowest part of the
    tree, so a folder of a million files cannot crowd out the task's own top-level files."""
    out = Walk()
    deadline = time.monotonic() + seconds
    level: list[str] = [""]
    for depth in range(max_depth + 1):
        if not level:
            return out
        if depth == max_depth:
            out.stopped = "stopped at the depth limit"
            return out
        below: list[str] = []
        for prefix in level:
            if len(out.entries) >= max_entries:
                out.stopped = f"stopped after {max_entries} entries"
                return out
            if time.monotonic() > deadline:
                out.stopped = "stopped: the walk ran out of time"
                return out
            try:
                fd = _open_dir(Path(root), prefix.split("/")[:-1] if prefix else [], prefix or ".")
            except (OSError, Refused):
                continue
            try:
                found = _scan(fd, max_entries - len(out.entries))
            finally:
                os.close(fd)
            for name, st in found:
                rel = prefix + name
                if stat.S_ISDIR(st.st_mode):
                    if name in skip_dirs:
                        continue
                    out.entries.append(Entry(rel, "dir", 0))
                    below.append(rel + "/")
                elif stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                    out.entries.append(Entry(rel, "file", st.st_size))
                else:
                    out.entries.append(Entry(rel, "other", 0))
            if len(out.entries) >= max_entries:
                out.stopped = f"stopped after {max_entries} entries"
                return out
        level = below
    return out


def _scan(fd: int, room: int) -> list[tuple[str, os.stat_result]]:
    """Up to ``room`` entries of the open folder ``fd`` (with their own, not their targets', stat), sorted."""
    names: list[tuple[str, os.stat_result]] = []
    with os.scandir(fd) as it:
        for e in it:
            if len(names) >= room:
                break
            try:
                names.append((e.name, e.stat(follow_symlinks=False)))
            except OSError:
                continue
    return sorted(names, key=lambda x: x[0])


def files(root: Path, limit: int, **kw) -> Iterator[Entry]:
    """The regular files of a bounded walk (at most ``limit``), in walk order."""
    n = 0
    for e in walk(root, **kw).entries:
        if e.kind == "file":
            yield e
            n += 1
            if n >= limit:
                return


# ------------------------------------------------------------------------------------------------ copying
@dataclass(frozen=True)
class CopyLimits:
    """Bounds of one tree copy (hand-off to the next role's folder, keeping a workspace)."""

    max_total_bytes: int = 2 * 1024 * MiB
    max_file_bytes: int = 1024 * MiB
    max_entries: int = MAX_ENTRIES
    max_depth: int = MAX_DEPTH
    seconds: float = 30.0


@dataclass
class CopyReport:
    """What a bounded copy did: files copied, bytes, and one line per kind of thing left behind."""

    files: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)

    def skip(self, why: str) -> None:
        if len(self.skipped) < 20:
            self.skipped.append(why)


def copy_tree(src: Path, dst: Path, limits: CopyLimits = CopyLimits()) -> CopyReport:
    """Copy the regular files and folders of ``src`` into ``dst`` (existing), within ``limits``.

    Links, special files and hard links are left behind (listed in the report by name), as is anything past the
    entry, depth, size or time bounds; sparse files count (and are written) at their apparent size.
    """
    report = CopyReport()
    deadline = time.monotonic() + limits.seconds
    tree = walk(src, limits.max_entries, limits.max_depth, limits.seconds)
    if tree.stopped:
        report.skip(f"the rest of the tree ({tree.stopped})")
    for e in tree.entries:
        if time.monotonic() > deadline:
            report.skip(f"everything after {shown(e.rel)} (copy ran out of time)")
            break
        target = Path(dst) / e.rel
        if e.kind == "dir":
            target.mkdir(exist_ok=True)
            continue
        if e.kind == "other":
            report.skip(f"{shown(e.rel)} (a link or special file)")
            continue
        if e.size > limits.max_file_bytes or report.bytes + e.size > limits.max_total_bytes:
            report.skip(f"{shown(e.rel)} ({e.size} bytes, over the copy limit)")
            continue
        try:
            n = _copy_file(Path(src), e.rel, target, min(limits.max_file_bytes, e.size), deadline)
        except (Refused, OSError) as err:
            report.skip(f"{shown(e.rel)} ({err if isinstance(err, Refused) else 'unreadable'})")
            continue
        report.files += 1
        report.bytes += n
    return report


def _copy_file(src_root: Path, rel: str, target: Path, max_bytes: int, deadline: float) -> int:
    fd = open_regular(src_root, rel, max_bytes)
    try:
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            total = 0
            while chunk := os.read(fd, MiB):
                total += len(chunk)
                if total > max_bytes or time.monotonic() > deadline:
                    raise Refused("grew or ran out of time while being copied")
                os.write(out, chunk)
        finally:
            os.close(out)
    finally:
        os.close(fd)
    return total


def move_tree(src: Path, dst: Path, limits: CopyLimits = CopyLimits()) -> CopyReport:
    """Move the contents of ``src`` into ``dst``: a rename where both are on one filesystem (O(1), whatever the
    tree holds), else a bounded :func:`copy_tree`. ``src`` is left for the caller to remove."""
    report = CopyReport()
    try:
        names = sorted(os.listdir(src))[: limits.max_entries]
    except OSError:
        return report
    rest: list[str] = []
    for name in names:
        try:
            os.rename(Path(src) / name, Path(dst) / name)
            report.files += 1
        except OSError as e:
            if e.errno != errno.EXDEV:
                report.skip(f"{shown(name)} (could not be moved)")
                continue
            rest.append(name)
    if rest:
        copied = copy_tree(src, dst, limits)
        report.files += copied.files
        report.bytes += copied.bytes
        report.skipped += copied.skipped
    return report


# ------------------------------------------------------------------------------------------------ removing
def remove_tree(path: Path) -> None:
    """Remove ``path`` and everything below it; never raises, never follows links, needs no recursion.

    ``shutil.rmtree`` recurses once per level (a 1,200-deep tree raises ``RecursionError`` even with
    ``ignore_errors``) and holds a descriptor per level. Here every sub-folder's own folders are renamed up to
    the top level before it is emptied, so the work is one pass over the entries with two descriptors open.
    """
    try:
        st = os.lstat(path)
    except OSError:
        return
    if not stat.S_ISDIR(st.st_mode):
        try:
            os.unlink(path)
        except OSError:
            pass
        return
    try:
        top = os.open(path, _DIR_FLAGS)
    except OSError:
        return
    hoisted = 0
    try:
        while True:
            progress = False
            with os.scandir(top) as it:
                names = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
            for name, is_dir in names:
                if not is_dir:
                    progress |= _unlink(name, top)
                    continue
                try:
                    sub = os.open(name, _DIR_FLAGS, dir_fd=top)
                except OSError:
                    continue
                try:
                    with os.scandir(sub) as it:
                        inner = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
                    for child, child_is_dir in inner:
                        if child_is_dir:
                            hoisted += 1
                            try:
                                os.rename(child, f".mappa-rm-{hoisted}", src_dir_fd=sub, dst_dir_fd=top)
                                progress = True
                            except OSError:
                                pass
                        else:
                            progress |= _unlink(child, sub)
                finally:
                    os.close(sub)
                try:
                    os.rmdir(name, dir_fd=top)
                    progress = True
                except OSError:
                    pass
            if not names or not progress:
                break
    finally:
        os.close(top)
    try:
        os.rmdir(path)
    except OSError:
        pass


def _unlink(name: str, dir_fd: int) -> bool:
    try:
        os.unlink(name, dir_fd=dir_fd)
        return True
    except OSError:
        return False
