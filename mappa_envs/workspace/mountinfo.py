"""One parser of ``/proc/self/mountinfo`` (the cgroup probe and the stale tmpfs sweep both read it).

Format (proc(5)): ``id parent major:minor root mount-point options [optional fields...] - fstype source
super-options``. The optional fields vary in number, so the line splits at the `` - `` separator; paths escape
space, tab, newline and backslash as octal (``\\040``, ``\\011``, ``\\012``, ``\\134``), undone here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_OCTAL = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    root: str
    """The path inside the mounted filesystem that is mounted here (``/`` for the whole filesystem)."""
    mount_point: str
    fstype: str
    source: str
    super_options: str


def unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse(text: str) -> list[Mount]:
    """Every well-formed line of a mountinfo text, in order; malformed lines are skipped."""
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if not sep or len(fields) < 5 or len(rfields) < 2:
            continue
        opts = rfields[2] if len(rfields) > 2 else ""
        out.append(Mount(unescape(fields[3]), unescape(fields[4]), rfields[0], unescape(rfields[1]), opts))
    return out


def mounts(path: str = "/proc/self/mountinfo") -> list[Mount]:
    """This process's mounts (empty when the file cannot be read)."""
    try:
        return parse(Path(path).read_text())
    except OSError:
        return []
