"""The OS sandbox around each episode's kernel: what a model writes cannot reach the env, the host, the network or
the answers.

The code agents write comes from a model under RL training, and a reward is at stake: treat it as hostile. It will
read the hidden answers if it can find them, kill whatever stops it, and fill whatever it can. So the kernel runs in
a `bubblewrap <https://github.com/containers/bubblewrap>`_ sandbox:

* **filesystem** — a fresh root holding only the Python installation and ``/usr`` (read-only), a size-capped
  ``/tmp``, the episode's workspace (read-write, at the same path as on the host) and the kernel's IPC folder. The
  task's hidden files (answers, other splits, the repository, home folders) are simply not there; the ``mappa``
  packages (whose ``mappa_tasks`` holds the embedded tasks with answers) are masked where the Python installation
  would expose them.
* **namespaces** — user (non-root uid, no capabilities, no nested user namespaces), PID (host processes invisible,
  the env unkillable; the whole tree dies with the kernel), network (loopback only: the kernel's traffic goes over
  IPC sockets), IPC, UTS, cgroup.
* **resources** — a ``pids`` and a ``memory`` cgroup per kernel where the host lets us create them (fork bombs,
  many-process memory); the workspace and the IPC folder on size-capped tmpfs mounts where we may mount (disk
  filling), ``RLIMIT_FSIZE`` everywhere.
* **environment** — cleared; only a fixed minimal set of variables (no API keys).

Where bubblewrap cannot run, ``make_wrapper("auto")`` falls back to the strongest thing available
(``unshare`` namespaces, cgroups, rlimits) and warns once, loudly, naming what is not protected;
``make_wrapper("strict")`` raises instead. ``docs/SANDBOX.md`` holds the threat model.

The sandbox is a kernel *wrapper* (``(argv, runtime_dir) -> argv``, see :mod:`.kernel`) with a few optional hooks
the kernel, pool and workspace look for: ``binds_workdir`` (the wrapper takes ``workdir=`` and binds that folder,
so the workspace must exist before the kernel starts: a pooled kernel therefore gets its own fresh folder at start
and the episode's files are moved into it when it is handed out), ``interrupt_by_message`` (a signal to the
sandbox's process group would kill bubblewrap, so interrupts go over the control channel), ``make_workdir`` /
``remove_workdir`` (size-capped workspace folders) and ``release`` (cleanup after the kernel is killed).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mappa_envs.taskgen.sources import TASK_SOURCES, hidden_host_paths
from mappa_envs.workspace import budget, cgroups, hostio, quota
from mappa_envs.workspace.kernel import GiB, Wrapper, kernel_env

log = logging.getLogger(__name__)

Level = Literal["auto", "strict", "none"]
MiB = 1024**2
INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: `apt-get install -y bubblewrap`; Fedora: `dnf install bubblewrap`; "
    "Arch: `pacman -S bubblewrap`) and make sure user namespaces are allowed "
    "(`sysctl kernel.unprivileged_userns_clone=1` on older Debian, "
    "`sysctl kernel.apparmor_restrict_unprivileged_userns=0` on Ubuntu ≥ 23.10), or run as root"
)
HIDDEN_PACKAGES = ("mappa_tasks", "mappa_envs", "mappa_train")
"""Packages never visible to agent code: ``mappa_tasks`` ships the embedded tasks *with answers*, and the other two
hold the task generators and graders."""
# The task sources to mask (package data the embedded tasks are built from, mappa's private home with the task
# secret and the generated tasks) are declared by the task generator: mappa_envs.taskgen.sources.
SITE_GLOBS = tuple(
    f"{pre}lib/python3*/{kind}" for pre in ("", "local/") for kind in ("site-packages", "dist-packages")
)

SANDBOX_UID = 1000
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives")


class SandboxUnavailable(RuntimeError):
    """``sandbox="strict"`` was asked for and bubblewrap cannot run here; the message says how to fix it."""


class SandboxWarning(UserWarning):
    """Agent code runs with weaker isolation than asked for; the message names what is not protected."""


@dataclass(frozen=True)
class SandboxPolicy:
    """Resource caps of one sandboxed kernel (all processes it spawns together).

    ``memory_bytes`` caps the sandbox's total memory (a memory cgroup: every process, plus what it writes to the
    tmpfs folders); the kernel's per-process ``RLIMIT_AS`` from :class:`~.kernel.CellLimits` still applies.
    ``disk_bytes`` caps the workspace, ``tmp_bytes`` the sandbox's ``/tmp`` and ``/dev/shm`` each,
    ``runtime_bytes`` the IPC folder (which also receives the kernel's own stdout/stderr log). ``hide`` adds host
    paths to mask should the Python installation contain them; ``hide_data`` names package data (relative to
    ``site-packages``) that tasks are built from; ``ro_binds`` adds host paths to show read-only (e.g. a shared
    read-only dataset cache).
    """

    memory_bytes: int | None = 8 * GiB
    disk_bytes: int = 2 * GiB
    tmp_bytes: int = 512 * MiB
    runtime_bytes: int = 64 * MiB
    max_pids: int = 512
    hide: tuple[str, ...] = ()
    hide_data: tuple[str, ...] = TASK_SOURCES
    ro_binds: tuple[str, ...] = ()


@dataclass(frozen=True)
class Protection:
    """What a sandbox level actually gives on this machine, in words (printed in warnings and the docs)."""

    level: str
    mechanism: str
    protected: tuple[str, ...] = ()
    unprotected: tuple[str, ...] = ()

    def __str__(self) -> str:
        lines = [f"sandbox={self.level!r}: {self.mechanism}"]
        lines += [f"  protected:     {p}" for p in self.protected]
        lines += [f"  NOT protected: {p}" for p in self.unprotected]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ launcher
LAUNCHER = """\
import os, resource, select, signal, sys
a = sys.argv[1:]; i = a.index('--'); watch = False
for opt in a[:i]:
    k, _, v = opt.partition('=')
    if k == 'cg':
        with open(v, 'w') as f: f.write(str(os.getpid()))
    elif k == 'log':
        fd = os.open(v, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600); os.dup2(fd, 1); os.dup2(fd, 2); os.close(fd)
        fd = os.open(os.devnull, os.O_RDONLY); os.dup2(fd, 0); os.close(fd)
    elif k == 'watch':
        watch = True
    else:
        n = int(v); resource.setrlimit(getattr(resource, 'RLIMIT_' + k), (n, n))
if not watch:
    os.execvp(a[i + 1], a[i + 1:])
env = os.getppid()
child = os.fork()
if child == 0:
    os.execvp(a[i + 1], a[i + 1:])
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, lambda *_: os.kill(child, signal.SIGKILL))
try:
    fds = [os.pidfd_open(env), os.pidfd_open(child)]
except (AttributeError, OSError):
    fds = []
while True:
    select.select(fds, [], [], 1.0)
    done, status = os.waitpid(child, os.WNOHANG)
    if done:
        os._exit(os.waitstatus_to_exitcode(status) & 255)
    if os.getppid() != env:
        os.kill(child, signal.SIGKILL)
"""
"""Joins cgroups, sets rlimits and redirects stdio, then runs the rest of its argv. A separate tiny process
(``python -I -S``, ~20 ms) because the kernel wrapper contract is an argv, not a ``preexec_fn``.

With ``watch``, it stays as the sandbox's parent instead of exec'ing, and kills it when the env *process* dies:
``bwrap --die-with-parent`` (``PR_SET_PDEATHSIG``) fires when the *thread* that started it ends, which would kill
every kernel a pool thread started; the watcher is single-threaded and watches the env process itself (pidfd, or
its parent pid changing)."""


def _launch(python: str, opts: Sequence[str], argv: Sequence[str]) -> list[str]:
    return [python, "-I", "-S", "-c", LAUNCHER, *opts, "--", *argv]


# ---------------------------------------------------------------------------------------------------- probes
@functools.cache
def _python_dirs(python: str) -> tuple[str, ...]:
    """The folders that make up the Python installation behind ``python`` (to bind read-only)."""
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        dirs = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *_site_dirs(sys.path)]
    else:
        code = "import sys; print('\\n'.join([sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *sys.path]))"
        out = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True, timeout=60)
        lines = out.stdout.split()
        dirs = [*lines[:4], *_site_dirs(lines[4:])]
    dirs += [os.path.dirname(python), os.path.dirname(os.path.realpath(python))]
    return _outermost([*(os.path.realpath(d) for d in dirs if d), *(os.path.abspath(d) for d in dirs if d)])


def _site_dirs(path: Iterable[str]) -> list[str]:
    """Package folders on ``sys.path`` outside the prefixes (added by a ``.pth`` line): only folders named like
    ``site-packages``, so a project folder on ``PYTHONPATH`` (which may hold task answers) is never bound."""
    return [p for p in path if os.path.basename(p.rstrip("/")) in ("site-packages", "dist-packages")]


def _outermost(paths: Iterable[str]) -> tuple[str, ...]:
    """Drop paths inside other listed paths (and inside ``/usr``, bound anyway)."""
    uniq = sorted(set(paths), key=len)
    out: list[str] = []
    for p in uniq:
        if not any(_under(p, q) for q in [*out, "/usr"]):
            out.append(p)
    return tuple(out)


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def hidden_paths(
    bound: Sequence[str], extra: Iterable[str] = (), data: Iterable[str] = TASK_SOURCES
) -> tuple[str, ...]:
    """Host paths agent code must not see: the ``mappa`` packages wherever installed (this interpreter's view and
    any ``site-packages`` inside ``bound``), task source ``data`` in those ``site-packages``, and ``extra``."""
    out = [os.path.realpath(p) for p in extra]
    rels = [*HIDDEN_PACKAGES, *data]
    for root in bound:
        for pattern in SITE_GLOBS:
            for site in Path(root).glob(pattern):
                out += [os.path.realpath(site / rel) for rel in rels if (site / rel).exists()]
    for name in HIDDEN_PACKAGES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            continue
        for loc in spec.submodule_search_locations or []:
            out.append(os.path.realpath(loc))
        if spec.origin and not spec.submodule_search_locations:
            out.append(os.path.realpath(spec.origin))
    return tuple(dict.fromkeys(out))


@functools.cache
def _mask_args(bound: tuple[str, ...], hide: tuple[str, ...], data: tuple[str, ...]) -> tuple[str, ...]:
    """bwrap arguments hiding every hidden path that a bound folder would expose (an empty tmpfs, or an empty
    file for a file)."""
    out: list[str] = []
    for h in hidden_paths(bound, hide, data):
        if any(_under(h, b) for b in bound):
            if os.path.isdir(h):  # an empty, read-only, tiny tmpfs (not a place to stash data in RAM)
                out += ["--size", "4096", "--tmpfs", h, "--remount-ro", h]
            else:
                out += ["--ro-bind", "/dev/null", h]
    return tuple(out)


def find_bwrap() -> str | None:
    return shutil.which("bwrap") or next(
        (p for p in ("/usr/bin/bwrap", "/bin/bwrap") if os.path.exists(p)), None
    )


def _system_args() -> list[str]:
    """``/usr`` read-only, the merged-usr symlinks (or binds) at the root, and the few ``/etc`` files needed."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = Path("/") / name
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            args += ["--ro-bind", str(p), str(p)]
    for name in ETC_FILES:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    return args


def _namespace_args(disable_userns: bool) -> list[str]:
    args = ["--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
    if disable_userns:
        args.append("--disable-userns")
    return args + ["--hostname", "sandbox", "--die-with-parent", "--new-session"]


@dataclass(frozen=True)
class BwrapProbe:
    path: str | None
    ok: bool
    disable_userns: bool = False
    error: str = ""


@functools.cache
def probe_bwrap(path: str | None = None) -> BwrapProbe:
    """Try bubblewrap once with the flags we use (``true`` inside); say why not when it fails."""
    path = path or find_bwrap()
    if path is None or not os.path.exists(path):
        return BwrapProbe(None, False, error="bubblewrap (`bwrap`) is not installed")
    common = [*_system_args(), "--proc", "/proc", "--dev", "/dev", "--size", str(MiB), "--tmpfs", "/tmp"]
    error = ""
    for disable in (True, False):
        cmd = [path, *_namespace_args(disable), *common, "--remount-ro", "/", "true"]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            return BwrapProbe(path, False, error=f"{path} could not be run: {e}")
        if r.returncode == 0:
            return BwrapProbe(path, True, disable_userns=disable)
        error = r.stderr.strip() or f"exit code {r.returncode}"
    return BwrapProbe(path, False, error=f"{path} fails here: {error}")


@functools.cache
def _unshare_args() -> tuple[str, ...] | None:
    """The strongest ``unshare(1)`` namespace set that works here (fallback without bubblewrap), or None."""
    exe = shutil.which("unshare")
    if exe is None:
        return None
    base = ["--net", "--pid", "--fork", "--kill-child", "--mount-proc", "--ipc", "--uts"]
    for extra in ([], ["--user", "--map-root-user"]):
        cmd = [exe, *extra, *base]
        try:
            if subprocess.run([*cmd, "true"], capture_output=True, timeout=30).returncode == 0:
                return tuple(cmd)
        except (OSError, subprocess.TimeoutExpired):
            pass
    return None


# ------------------------------------------------------------------------------------------------- sandboxes
class BwrapSandbox:
    """A kernel wrapper that runs the kernel in bubblewrap with a :class:`SandboxPolicy` (see the module docstring)."""

    binds_workdir = True
    interrupt_by_message = True

    def __init__(
        self, policy: SandboxPolicy = SandboxPolicy(), bwrap: str | None = None, level: str = "auto"
    ) -> None:
        budget.check(
            policy.memory_bytes
            and policy.memory_bytes + policy.disk_bytes + 2 * policy.tmp_bytes + policy.runtime_bytes,
            "one sandbox (memory: 2 x cell_memory_gb by default, plus its tmpfs caps: disk, /tmp, /dev/shm, IPC)",
        )
        probe = probe_bwrap(bwrap)
        if not probe.ok:
            raise SandboxUnavailable(f"bubblewrap cannot run: {probe.error}; {INSTALL_HINT}")
        quota.sweep_stale()  # mounts and cgroups of crashed owners
        cgroups.sweep_stale()
        self.policy = policy
        self.level = level
        self.bwrap = probe.path
        self._probe = probe
        self._groups: dict[str, cgroups.Group] = {}
        self._lock = threading.Lock()
        self.protection = self._describe()

    @property
    def key(self) -> tuple:
        """Equal for equal configurations, so envs with the same sandbox share one warm kernel pool."""
        return ("bwrap", self.bwrap, self.policy)

    # -- resource mechanisms available here --------------------------------------------------------------------
    def _cg(self) -> dict[str, cgroups.Hierarchy]:
        return cgroups.probe()

    def _nproc_in_userns(self) -> bool:
        """``RLIMIT_NPROC`` works for a non-root host uid (counted per user namespace, so only sandbox tasks)."""
        return os.geteuid() != 0

    def _describe(self) -> Protection:
        p = self.policy
        cg = self._cg()
        protected = [
            "filesystem: only /usr and the Python installation (read-only), the workspace (read-write), the "
            "kernel's IPC folder and a private /tmp exist; task answers, other splits, the repository, home "
            "folders and the installed mappa packages are not visible",
            "network: own network namespace (loopback only); no host port, abstract socket or outside address",
            "processes: own PID namespace; host processes (the env included) are invisible and unkillable; "
            "everything dies with the kernel or with the env process",
            "privileges: non-root uid in a user namespace, no capabilities, no-new-privs"
            + (", no nested user namespaces" if self._probe.disable_userns else ""),
            "environment: cleared to a fixed minimal set (no API keys or other host secrets)",
            "host terminal: the kernel's stdout/stderr go to a log in its IPC folder, not the host's terminal",
        ]
        unprotected = [
            "the Linux kernel itself: no seccomp filter, so a kernel exploit escapes",
            "CPU: no CPU quota; background processes spin until the episode ends (cells have a wall-time limit)",
            "data shipped inside installed packages is readable, except the task sources masked by "
            "SandboxPolicy.hide_data (scikit-learn's bundled datasets, palmerpenguins)",
        ]
        if not self._probe.disable_userns:
            unprotected.append("nested user namespaces are allowed (bwrap too old for --disable-userns)")
        if "pids" in cg:
            protected.append(f"fork bombs: pids cgroup, at most {p.max_pids} tasks")
        elif self._nproc_in_userns():
            protected.append(f"fork bombs: RLIMIT_NPROC={p.max_pids} in the sandbox's user namespace")
        else:
            unprotected.append("fork bombs: no writable pids cgroup and RLIMIT_NPROC does not bind root")
        if "memory" in cg and p.memory_bytes:
            protected.append(
                f"memory: memory cgroup, {p.memory_bytes / GiB:g} GiB for the whole sandbox, and "
                f"{budget.total_bytes() / GiB:.3g} GiB for all sandboxes of this process together"
            )
        else:
            unprotected.append("total memory: only the per-process RLIMIT_AS (no writable memory cgroup)")
        if quota.can_mount():
            protected.append(
                f"disk: workspace on a {p.disk_bytes / GiB:g} GiB tmpfs, IPC folder {p.runtime_bytes / MiB:g} MiB, "
                f"/tmp and /dev/shm {p.tmp_bytes / MiB:g} MiB each"
            )
        else:
            unprotected.append(
                f"disk: the workspace is capped per file only (RLIMIT_FSIZE={p.disk_bytes / GiB:g} GiB), not in "
                "total (no permission to mount a size-capped tmpfs)"
            )
        return Protection(self.level, f"bubblewrap ({self.bwrap})", tuple(protected), tuple(unprotected))

    # -- workspace folders -------------------------------------------------------------------------------------
    def make_workdir(self, root: Path, prefix: str = "mappa-ws-") -> Path:
        """A fresh workspace folder, on a size-capped tmpfs where we may mount."""
        return quota.capped_dir(Path(root), prefix, self.policy.disk_bytes)[0]

    def remove_workdir(self, path: Path, keep: bool = False) -> None:
        quota.remove_dir(Path(path), keep=keep)

    # -- the wrapper -------------------------------------------------------------------------------------------
    def __call__(self, argv: list[str], runtime_dir: Path, workdir: Path | None = None) -> list[str]:
        """The sandboxed command for ``argv``; mounts the IPC folder's cap and creates the cgroups as it goes."""
        p = self.policy
        runtime = Path(runtime_dir)
        if quota.can_mount() and not quota.is_mount(runtime):
            quota.mount_tmpfs(runtime, p.runtime_bytes, mode=0o700)
        etc = runtime / "etc"
        etc.mkdir(exist_ok=True)
        (etc / "passwd").write_text(f"sandbox:x:{SANDBOX_UID}:{SANDBOX_UID}::/tmp/home:/bin/sh\n")
        (etc / "group").write_text(f"sandbox:x:{SANDBOX_UID}:\n")
        cwd = str(workdir) if workdir else str(runtime)
        python = argv[0]
        bound = (*_python_dirs(python), *(os.path.realpath(b) for b in p.ro_binds))
        binds = [a for d in bound for a in ("--ro-bind", d, d)]
        masks = _mask_args((*bound, "/usr"), (*p.hide, *hidden_host_paths()), p.hide_data)
        env = kernel_env()
        env.update(
            PATH=os.path.dirname(python) + ":/usr/local/bin:/usr/bin:/bin",
            HOME="/tmp/home",
            USER="sandbox",
            LOGNAME="sandbox",
            TMPDIR="/tmp",
            IPYTHONDIR="/tmp/home/.ipython",
            MPLCONFIGDIR="/tmp/home/.config/matplotlib",
            XDG_CACHE_HOME="/tmp/home/.cache",
        )
        sandboxed = [
            self.bwrap,
            *_namespace_args(self._probe.disable_userns),
            *_system_args(),
            "--proc", "/proc",
            "--dev", "/dev",
            "--size", str(p.tmp_bytes), "--tmpfs", "/dev/shm",
            "--size", str(p.tmp_bytes), "--tmpfs", "/tmp",
            "--dir", "/tmp/home",
            # after the tmpfs mounts: a Python installation under /tmp (a CI clone's .venv) must stay visible
            *binds,
            "--bind", str(runtime), str(runtime),
            "--ro-bind", str(etc / "passwd"), "/etc/passwd",
            "--ro-bind", str(etc / "group"), "/etc/group",
            *(["--bind", str(workdir), str(workdir)] if workdir else []),
            *masks,
            "--remount-ro", "/",
            "--chdir", cwd,
            "--clearenv",
            *[a for k, v in sorted(env.items()) for a in ("--setenv", k, v)],
            "--",
        ]  # fmt: skip
        inner_opts = [f"NPROC={p.max_pids}"] if "pids" not in self._cg() and self._nproc_in_userns() else []
        inner = _launch(python, inner_opts, argv) if inner_opts else list(argv)
        outer_opts = [f"FSIZE={p.disk_bytes}", "CORE=0", f"log={runtime / 'kernel.log'}", "watch=1"]
        group = self._group(runtime)
        if group is not None:
            outer_opts += [f"cg={f}" for f in group.procs_files]
        return _launch(sys.executable, outer_opts, sandboxed + inner)

    def diagnose(self, runtime_dir: Path) -> str:
        """The end of the sandbox's log (bubblewrap's own errors land there), for a failed kernel start.

        The IPC folder is writable from inside, so the log is read like any workspace file (:mod:`.hostio`):
        a ``kernel.log`` left as a link to a host file is refused, not quoted."""
        try:
            text = hostio.read_bytes(Path(runtime_dir), "kernel.log", 1 << 20).decode(errors="replace")
        except (OSError, hostio.Refused):
            return ""
        return f"sandbox log ({self.bwrap}):\n{text[-2000:]}" if text.strip() else ""

    def _group(self, runtime: Path) -> cgroups.Group | None:
        p = self.policy
        if not self._cg():
            return None
        memory = p.memory_bytes + p.disk_bytes + 2 * p.tmp_bytes + p.runtime_bytes if p.memory_bytes else None
        group = cgroups.Group(p.max_pids, memory)
        with self._lock:
            old = self._groups.pop(str(runtime), None)
            self._groups[str(runtime)] = group
        if old is not None:
            old.destroy()
        return group

    def release(self, runtime_dir: Path) -> None:
        """After the kernel is killed: kill stragglers in its cgroups, remove them, unmount the IPC folder."""
        with self._lock:
            group = self._groups.pop(str(runtime_dir), None)
        if group is not None:
            group.destroy()
        if quota.is_mount(Path(runtime_dir)):
            quota.unmount(Path(runtime_dir))


class FallbackSandbox:
    """Without bubblewrap: ``unshare`` namespaces (network, PID, IPC, UTS) where they work, cgroups, rlimits.

    The filesystem is *not* isolated: agent code can read whatever the env's user can, answers included.
    """

    binds_workdir = False
    interrupt_by_message = True

    def __init__(self, policy: SandboxPolicy = SandboxPolicy(), reason: str = "") -> None:
        budget.check(
            policy.memory_bytes and policy.memory_bytes + policy.disk_bytes,
            "one sandbox (memory: 2 x cell_memory_gb by default, plus its disk cap)",
        )
        self.policy = policy
        self.reason = reason
        self.unshare = _unshare_args()
        self._groups: dict[str, cgroups.Group] = {}
        self._lock = threading.Lock()
        self.protection = self._describe()

    @property
    def key(self) -> tuple:
        return ("fallback", self.unshare, self.policy)

    def _describe(self) -> Protection:
        p = self.policy
        cg = cgroups.probe()
        protected = ["environment: cleared to a fixed minimal set (no API keys or other host secrets)"]
        unprotected = [
            "filesystem: agent code can READ AND WRITE everything the env's user can — the task's hidden answers, "
            "other splits, the repository, home folders — and anywhere outside the workspace",
            "privileges: the kernel runs as the env's user" + (" (root!)" if os.geteuid() == 0 else ""),
        ]
        if self.unshare and ("--user" in self.unshare or os.geteuid() != 0):
            protected.append("network and processes: own network, PID, IPC and UTS namespaces (unshare)")
        elif self.unshare:
            protected.append("network and processes: own network, PID, IPC and UTS namespaces (unshare)")
            unprotected.append(
                "namespaces: the code runs as root with all capabilities, so it can undo them (raw devices, "
                "mounts, kernel modules); they stop accidents, not a determined attacker"
            )
        else:
            unprotected.append("network: the kernel can reach the host's ports and the internet")
            unprotected.append("processes: the kernel sees and can signal the env and other host processes")
        if "pids" in cg:
            protected.append(f"fork bombs: pids cgroup, at most {p.max_pids} tasks")
        else:
            unprotected.append("fork bombs: no writable pids cgroup")
        if "memory" in cg and p.memory_bytes:
            protected.append(f"memory: memory cgroup, {p.memory_bytes / GiB:g} GiB for the whole kernel")
        else:
            unprotected.append("total memory: only the per-process RLIMIT_AS")
        unprotected.append(
            f"disk: capped per file only (RLIMIT_FSIZE={p.disk_bytes / GiB:g} GiB), not in total"
        )
        mech = "unshare namespaces + rlimits" if self.unshare else "rlimits only"
        return Protection(
            "auto", f"{mech} (no bubblewrap: {self.reason})", tuple(protected), tuple(unprotected)
        )

    def __call__(self, argv: list[str], runtime_dir: Path) -> list[str]:
        p = self.policy
        opts = [f"FSIZE={p.disk_bytes}", "CORE=0", f"log={Path(runtime_dir) / 'kernel.log'}", "watch=1"]
        if cgroups.probe():
            memory = p.memory_bytes + p.disk_bytes if p.memory_bytes else None
            group = cgroups.Group(p.max_pids, memory)
            with self._lock:
                self._groups[str(runtime_dir)] = group
            opts += [f"cg={f}" for f in group.procs_files]
        return _launch(sys.executable, opts, [*(self.unshare or ()), *argv])

    def release(self, runtime_dir: Path) -> None:
        with self._lock:
            group = self._groups.pop(str(runtime_dir), None)
        if group is not None:
            group.destroy()


# ------------------------------------------------------------------------------------------------- the entry
_WARNED: set[str] = set()
_WARN_LOCK = threading.Lock()


def _warn_once(message: str) -> None:
    """Warn loudly (``warnings`` + logging) the first time a message is seen in this process."""
    with _WARN_LOCK:
        if message in _WARNED:
            return
        _WARNED.add(message)
    log.warning(message)
    warnings.warn(message, SandboxWarning, stacklevel=3)


@dataclass
class SandboxChoice:
    """What :func:`make_wrapper` picked: the kernel wrapper (None: no sandbox) and what it protects."""

    wrapper: Wrapper | None
    protection: Protection
    warnings: list[str] = field(default_factory=list)


def make_wrapper(
    level: Level = "auto",
    policy: SandboxPolicy = SandboxPolicy(),
    bwrap: str | None = None,
) -> SandboxChoice:
    """The kernel wrapper for ``level``.

    ``"strict"``: bubblewrap or :class:`SandboxUnavailable`. ``"auto"``: bubblewrap where it runs, else the
    :class:`FallbackSandbox`, with a one-time :class:`SandboxWarning` naming what is not protected (also when
    bubblewrap runs but a resource cap is missing). ``"none"``: no sandbox (the kernel still gets a minimal
    environment and rlimits) — for trusted code only.
    """
    if level not in ("auto", "strict", "none"):
        raise ValueError(f"sandbox must be 'auto', 'strict' or 'none', got {level!r}")
    if level == "none":
        prot = Protection(
            "none",
            "no sandbox (trusted code only)",
            ("environment: the kernel gets a minimal environment (no API keys)",),
            (
                "everything else: files, answers, network, host processes, disk — agent code runs as the env's user",
            ),
        )
        return SandboxChoice(None, prot)
    probe = probe_bwrap(bwrap)
    if probe.ok:
        sandbox = BwrapSandbox(policy, bwrap=probe.path, level=level)
        choice = SandboxChoice(sandbox, sandbox.protection)
    elif level == "strict":
        raise SandboxUnavailable(
            f"sandbox='strict' needs bubblewrap, which cannot run here: {probe.error}. To fix: {INSTALL_HINT}. "
            "Or pass sandbox='auto' to run with weaker isolation (a warning names what is not protected)."
        )
    else:
        fallback = FallbackSandbox(policy, reason=probe.error)
        choice = SandboxChoice(fallback, fallback.protection)
    if not probe.ok or _resource_gaps(choice.protection):
        message = (
            "mappa sandbox is WEAKER than intended — agent code is not fully contained.\n"
            + str(choice.protection)
            + ("" if probe.ok else f"\nTo fix: {INSTALL_HINT}.")
        )
        _warn_once(message)
        choice.warnings.append(message)
    return choice


def _resource_gaps(prot: Protection) -> list[str]:
    """Unprotected items that a better-equipped host would cover (not the inherent limits every host has)."""
    inherent = ("the Linux kernel itself", "CPU:", "data shipped inside")
    return [u for u in prot.unprotected if not u.startswith(inherent)]
