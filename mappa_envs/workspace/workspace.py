"""The per-episode workspace: a fresh folder holding the task's input files and one kernel started in it.

Agents pass work to each other through this folder (``X_train.pkl`` → ``model.pkl`` → ``submission.csv``) and
through the kernel's state across their own turns. The kernel is taken lazily — an episode whose agents never run
code never starts one — from a warm pool when ``pool_size > 0``. ``close()`` kills the kernel with every process
it spawned and removes the folder, unless ``keep=True`` (for inspection).

With a sandbox that binds the workspace (``wrapper.binds_workdir``, see :mod:`.sandbox`) the kernel can only
write to the folder bound when it started: a pooled kernel brings a fresh folder of its own, and when it is
handed out the episode's files move into that folder, which becomes ``path``. Folders are then made and removed
by the sandbox (``make_workdir`` / ``remove_workdir``: size-capped where possible).
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from mappa_envs.records import FileInfo, ToolResult
from mappa_envs.workspace import hostio
from mappa_envs.workspace.kernel import CellLimits, Kernel, Wrapper
from mappa_envs.workspace.pool import shared_pool

MAX_LISTED_FILES = 200
log = logging.getLogger(__name__)


def default_root() -> Path:
    return Path(tempfile.gettempdir()) / "mappa-workspaces"


class Workspace:
    def __init__(
        self,
        root: Path | None = None,
        limits: CellLimits = CellLimits(),
        preload: str = "",
        pool_size: int = 1,
        wrapper: Wrapper | None = None,
        python: str = sys.executable,
        keep: bool = False,
    ) -> None:
        self.root = Path(root) if root else default_root()
        self.limits = limits
        self.preload = preload
        self.pool_size = pool_size
        self.wrapper = wrapper
        self.python = python
        self.keep = keep
        self.path: Path | None = None
        self._kernel: Kernel | None = None
        self.handoff_limits = hostio.CopyLimits()

    def open(self, name: str, files: Mapping[str, Path] = {}) -> Path:
        """Create a fresh folder ``<root>/<name>-XXXX`` and copy the input files into it under their names."""
        self.close()
        self.root.mkdir(parents=True, exist_ok=True)
        if self._binds_workdir() and self.pool_size == 0:  # the kernel will start in (and bind) it
            self.path = self.wrapper.make_workdir(self.root, prefix=f"{name}-")  # type: ignore[union-attr]
        else:
            self.path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))
        for target, source in files.items():
            dest = self.path / target
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
        if self.pool_size > 0:  # warm a kernel while the first agent is still thinking
            self._pool().fill()
        return self.path

    def _binds_workdir(self) -> bool:
        return bool(getattr(self.wrapper, "binds_workdir", False))

    def _pool(self):
        key = getattr(self.wrapper, "key", None)
        if not self._binds_workdir():
            return shared_pool(self.limits, self.preload, self.wrapper, self.python, self.pool_size, key=key)
        sandbox, root = self.wrapper, self.root
        workdirs = (lambda: sandbox.make_workdir(root), sandbox.remove_workdir)  # type: ignore[union-attr]
        key = (key if key is not None else id(sandbox), str(root))
        return shared_pool(
            self.limits, self.preload, self.wrapper, self.python, self.pool_size, key=key, workdirs=workdirs
        )

    def _move_into(self, folder: Path) -> None:
        """Move the episode's files into a sandboxed pooled kernel's own folder, which becomes ``path``."""
        old = self.path
        assert old is not None
        if folder != old:
            # the previous role's files: hostile, bounded (no links or special files followed, capped in size,
            # count, depth and time); what is left behind is logged by name
            report = hostio.move_tree(old, folder, self.handoff_limits)
            if report.skipped:
                log.warning("hand-off left behind: %s", "; ".join(report.skipped))
            self._remove(old, keep=False)
            self.path = folder

    def _remove(self, path: Path, keep: bool) -> None:
        remove = getattr(self.wrapper, "remove_workdir", None)
        if remove is not None:
            remove(path, keep=keep)
        elif not keep:
            hostio.remove_tree(path)  # bounded whatever the agent left (a 1,200-deep tree)

    @property
    def kernel(self) -> Kernel:
        if self.path is None:
            raise RuntimeError("workspace is not open; call open() first")
        if self._kernel is None:
            if self.pool_size > 0:
                kernel = self._pool().acquire()
                if self._binds_workdir() and kernel.cwd is not None:
                    self._move_into(kernel.cwd)
                else:
                    kernel.chdir(self.path)
            else:
                kernel = Kernel(self.limits, preload=self.preload, wrapper=self.wrapper, python=self.python)
                kernel.start(cwd=self.path)
            self._kernel = kernel
        return self._kernel

    @property
    def kernel_started(self) -> bool:
        return self._kernel is not None

    def release_kernel(self) -> None:
        """Kill the current kernel (and all it spawned); the next ``run`` gets a fresh one, the files stay."""
        if self._kernel is not None:
            self._kernel.shutdown()
            self._kernel = None

    def run(self, code: str) -> ToolResult:
        """Execute one code block in the episode's kernel (started on first use)."""
        return self.kernel.execute(code)

    def files(self) -> list[FileInfo]:
        """Regular files in the workspace (relative names, apparent sizes), sorted; at most ``MAX_LISTED_FILES``.

        Bounded whatever the agent left (see :func:`.hostio.walk`): links, FIFOs, sockets and hard links are not
        listed, and the walk stops after ``hostio.MAX_ENTRIES`` entries or ``hostio.MAX_DEPTH`` levels."""
        if self.path is None or not self.path.exists():
            return []
        found = hostio.files(self.path, MAX_LISTED_FILES)  # bounded; links and special files are not files
        return sorted((FileInfo(e.rel, e.size) for e in found), key=lambda f: f.name)

    def close(self) -> None:
        """Kill the kernel (and all it spawned) and remove the folder unless ``keep``."""
        self.release_kernel()
        if self.path is not None:
            self._remove(self.path, keep=self.keep)
        self.path = None
