"""One IPython kernel with per-cell limits: wall time (interrupt, then restart), memory, output size.

Why a persistent kernel and not a process per code block: importing pandas and scikit-learn costs ~1.3 s per
fresh process on 2 cores, and agents pass state between turns. The kernel talks to us over IPC sockets in a
private runtime folder (no TCP port, so it also works with the network switched off), gets a minimal environment
(no secrets of the host process leak into agent code), and is started as a child subreaper with rlimits so that
:func:`~mappa_envs.workspace.procs.kill_tree` leaves nothing behind.
"""

from __future__ import annotations

import os
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from jupyter_client.manager import KernelManager

from mappa_envs.records import ToolResult
from mappa_envs.text import strip_ansi
from mappa_envs.workspace import hostio
from mappa_envs.workspace.procs import kill_tree, limits_preexec

GiB = 1024**3


class KernelError(RuntimeError):
    """The kernel could not be started or reached; the message says what to install or change."""


@dataclass(frozen=True)
class CellLimits:
    """Limits applied to every code cell (settable through ``make(..., cell_timeout_s=..., ...)``)."""

    timeout_s: float = 60.0
    memory_bytes: int | None = 4 * GiB
    output_bytes: int = 64 * 1024
    interrupt_grace_s: float = 3.0


Wrapper = Callable[[list[str], Path], list[str]]
"""Turns the kernel argv into a sandboxed argv, given the kernel's runtime folder (see the sandbox module)."""


def kernel_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A minimal environment: what Python needs, nothing the host keeps secret (API keys stay out)."""
    env = {
        "PATH": os.path.dirname(sys.executable) + os.pathsep + "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "MALLOC_ARENA_MAX": "2",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "JPY_SESSION_NAME": "mappa",
    }
    for key in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):  # machine-specific BLAS workarounds must carry over
        if key in os.environ:
            env[key] = os.environ[key]
    env.update(extra or {})
    return env


class _Manager(KernelManager):
    """A KernelManager whose command line we own (the venv's python, optional sandbox prefix)."""

    mappa_argv: list[str] = []

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        return [a.replace("{connection_file}", self.connection_file) for a in self.mappa_argv]


class Kernel:
    """A started IPython kernel; ``execute(code)`` returns a :class:`ToolResult`, whatever the code does."""

    def __init__(
        self,
        limits: CellLimits = CellLimits(),
        preload: str = "",
        wrapper: Wrapper | None = None,
        python: str = sys.executable,
    ) -> None:
        self.limits = limits
        self.preload = preload
        self.wrapper = wrapper
        self.python = python
        self.cwd: Path | None = None
        self._km: _Manager | None = None
        self._kc = None
        self._runtime: Path | None = None
        self._iopub: _IopubDrain | None = None
        self.restarts = 0

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self, cwd: Path | None = None) -> Kernel:
        self._runtime = Path(tempfile.mkdtemp(prefix="mappa-kernel-"))
        start_dir = Path(cwd) if cwd else self._runtime
        argv = [
            self.python,
            "-m",
            "ipykernel_launcher",
            "-f",
            "{connection_file}",
            "--HistoryManager.enabled=False",
            "--quiet",
        ]
        # Unsandboxed, ipykernel polls its parent (JPY_PARENT_PID) and exits when it dies, so no kernel outlives a
        # crashed env. Inside a PID namespace that check would misfire; the sandbox launcher kills the kernel instead.
        if self.wrapper is not None:
            argv.insert(-1, "--IPKernelApp.parent_handle=0")
            if getattr(self.wrapper, "binds_workdir", False):  # a sandbox binds the folder at start
                argv = self.wrapper(argv, self._runtime, workdir=Path(cwd) if cwd else None)  # type: ignore[call-arg]
            else:
                argv = self.wrapper(argv, self._runtime)
        km = _Manager(transport="ipc", ip=str(self._runtime / "k"))
        km.mappa_argv = argv
        km.connection_file = str(self._runtime / "connection.json")
        try:
            km.start_kernel(
                cwd=str(start_dir),
                env=kernel_env(
                    {
                        "HOME": str(self._runtime),
                        "IPYTHONDIR": str(self._runtime / "ipython"),
                        "MPLCONFIGDIR": str(self._runtime / "mpl"),
                    }
                ),
                preexec_fn=limits_preexec(self.limits.memory_bytes),
            )
            kc = km.blocking_client()
            kc.start_channels()
            kc.wait_for_ready(timeout=60)
        except Exception as e:
            diagnose = getattr(self.wrapper, "diagnose", None)  # a sandbox says why it failed
            detail = diagnose(self._runtime) if diagnose is not None else ""
            self._km = km
            self.shutdown()
            raise KernelError(
                f"could not start an IPython kernel with {self.python} ({type(e).__name__}: {e}); "
                "install ipykernel in that environment (`pip install ipykernel`)"
                + (f"\n{detail}" if detail else "")
            ) from e
        self._km, self._kc = km, kc
        self._iopub = _IopubDrain(kc.iopub_channel, self.limits.output_bytes)
        if cwd:
            self.cwd = Path(cwd)
        if self.preload:
            result = self.execute(self.preload)
            if result.error:
                raise KernelError(f"kernel preload failed: {result.error}\n{result.stderr}")
        return self

    @property
    def pid(self) -> int | None:
        km = self._km
        proc = getattr(getattr(km, "provisioner", None), "process", None) if km else None
        return proc.pid if proc is not None else None

    def is_alive(self) -> bool:
        return bool(self._km and self._km.is_alive())

    def chdir(self, path: Path) -> None:
        """Move a (pooled) kernel into an episode's workspace folder."""
        res = self.execute(f"import os as _o; _o.chdir({str(path)!r}); del _o")
        if res.error:
            raise KernelError(f"kernel could not enter workspace {path}: {res.error}")
        self.cwd = Path(path)

    def shutdown(self) -> None:
        """Kill the kernel and every process it spawned, detached ones included; remove its sockets."""
        pid = self.pid
        if pid is not None:
            kill_tree(pid)
        if self._iopub is not None:  # before the channels close: zmq sockets are not thread-safe
            self._iopub.stop()
            self._iopub = None
        if self._kc is not None:
            try:
                self._kc.stop_channels()
            except Exception:
                pass
        if self._km is not None:
            try:
                if self._km.has_kernel:
                    self._km.shutdown_kernel(now=True)
            except Exception:
                pass
            try:
                self._km.cleanup_resources()
            except Exception:
                pass
        self._km = self._kc = None
        if self._runtime is not None:
            release = getattr(self.wrapper, "release", None)  # sandbox cleanup: cgroups, mounts
            if release is not None:
                try:
                    release(self._runtime)
                except Exception:
                    pass
            hostio.remove_tree(self._runtime)  # writable from inside a sandbox: bounded removal
            self._runtime = None

    def restart(self) -> None:
        """A fresh kernel in the same folder: variables are lost, files are kept."""
        cwd = self.cwd
        self.shutdown()
        self.restarts += 1
        self.start(cwd=cwd)

    # -- execution ---------------------------------------------------------------------------------------------
    def execute(self, code: str) -> ToolResult:
        if self._kc is None:
            raise KernelError("kernel is not started; call start() first")
        started = time.monotonic()
        out = _Capture(self.limits.output_bytes)
        iopub = self._iopub
        assert iopub is not None
        iopub.begin()
        try:
            msg_id = self._kc.execute(code, store_history=False, allow_stdin=False, stop_on_error=True)
            iopub.expect(msg_id)
            return self._collect(code, msg_id, out, started, iopub)
        finally:
            iopub.end()

    def _collect(
        self, code: str, msg_id: str, out: _Capture, started: float, iopub: _IopubDrain
    ) -> ToolResult:
        deadline = started + self.limits.timeout_s
        error: str | None = None
        timed_out = restarted = False
        while True:
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                stopped = self._interrupt(msg_id, out)
                if stopped:
                    error = (
                        f"Timeout: the cell ran longer than {self.limits.timeout_s:g} s and was interrupted"
                    )
                else:
                    self.restart()
                    restarted = True
                    error = (
                        f"Timeout: the cell ran longer than {self.limits.timeout_s:g} s and ignored the interrupt; "
                        "the kernel was restarted (variables are lost, files are kept)"
                    )
                break
            try:
                msg = iopub.get(timeout=min(0.2, deadline - now))
            except queue.Empty:
                if not self.is_alive():
                    error = self._died(out)
                    restarted = True
                    break
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if _handle(msg, out):
                break
        if error is None and out.error:
            error = out.error
        out.dropped += iopub.dropped()
        return ToolResult(
            code=code,
            stdout=out.text("stdout"),
            stderr=out.text("stderr"),
            error=error,
            timed_out=timed_out,
            kernel_restarted=restarted,
            output_truncated=out.dropped > 0,
            duration_s=time.monotonic() - started,
        )

    def _interrupt(self, msg_id: str, out: _Capture) -> bool:
        """Send SIGINT and wait for the cell to end; False when it would not stop."""
        try:
            if getattr(self.wrapper, "interrupt_by_message", False):
                # a signal to a sandbox's process group would hit the sandbox launcher, not the kernel
                kc = self._kc
                kc.control_channel.send(kc.session.msg("interrupt_request", content={}))  # type: ignore[union-attr]
            else:
                self._km.interrupt_kernel()  # type: ignore[union-attr]
        except Exception:
            return False
        deadline = time.monotonic() + self.limits.interrupt_grace_s
        while time.monotonic() < deadline:
            try:
                msg = self._iopub.get(timeout=0.1)  # type: ignore[union-attr]
            except queue.Empty:
                if not self.is_alive():
                    return False
                continue
            if msg.get("parent_header", {}).get("msg_id") == msg_id and _handle(msg, out):
                return True
        return False

    def _died(self, out: _Capture) -> str:
        code = None
        proc = getattr(getattr(self._km, "provisioner", None), "process", None)
        if proc is not None:
            code = proc.poll()
        self.restart()
        limit = self.limits.memory_bytes
        hint = f" (a memory limit of {limit / GiB:g} GiB applies)" if limit else ""
        return (
            f"KernelDied: the Python process running the code exited (exit code {code}){hint}; "
            "a fresh kernel was started: variables are lost, files in the workspace are kept"
        )

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class _IopubDrain:
    """Reads the kernel's output channel all the time, so nothing piles up in this process.

    Agent code can print from a background thread or process between cells, when nobody would read the channel:
    unread messages queue in this (the env's) process without bound. The drain reads them as they arrive and
    drops them unless a cell is running; during a cell it passes that cell's messages on and drops its stream text
    beyond ``limit`` characters (counted in :meth:`end`). Messages are discarded unparsed between cells.
    ``get`` is what :class:`Kernel` reads instead of the channel.
    """

    def __init__(self, channel, limit: int) -> None:
        self.channel = channel
        self.limit = limit
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._active = False
        self._msg_id: str | None = None
        self._stream = 0
        self._dropped = 0
        self.discarded = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mappa-iopub", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        socket = self.channel.socket
        while not self._stop.is_set():
            try:
                if not socket.poll(100):
                    continue
                with self._lock:
                    active = self._active
                if not active:
                    socket.recv_multipart(copy=False)  # between cells: dropped unparsed
                    self.discarded += 1
                    continue
                msg = self.channel._recv()
            except Exception:  # channel closed (shutdown) or a malformed message
                if self._stop.is_set() or self.channel.socket is None:
                    return
                continue
            parent = msg.get("parent_header", {}).get("msg_id")
            with self._lock:
                if not self._active or (self._msg_id is not None and parent != self._msg_id):
                    self.discarded += 1
                    continue
                if msg.get("msg_type") == "stream":
                    n = len(msg.get("content", {}).get("text", ""))
                    if self._stream + n > 2 * self.limit:  # over the cap: counted, not kept
                        self._dropped += n
                        continue
                    self._stream += n
            self._queue.put(msg)

    def begin(self) -> None:
        with self._lock:
            self._active, self._msg_id, self._stream, self._dropped = True, None, 0, 0
            self._queue = queue.Queue()

    def expect(self, msg_id: str) -> None:
        with self._lock:
            self._msg_id = msg_id

    def dropped(self) -> int:
        """Stream characters of the current cell dropped here (beyond twice the cap)."""
        with self._lock:
            return self._dropped

    def end(self) -> None:
        """Stop passing messages on: until the next cell everything is dropped."""
        with self._lock:
            self._active, self._msg_id = False, None
            self._queue = queue.Queue()

    def get(self, timeout: float) -> dict:
        return self._queue.get(timeout=timeout)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


class _Capture:
    """Collects a cell's output up to a byte budget; what is dropped is counted and marked."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.dropped = 0
        self.parts: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self.error: str | None = None

    def add(self, stream: str, text: str) -> None:
        room = self.limit - self.used
        if len(text) > room:
            self.dropped += len(text) - max(room, 0)
            text = text[: max(room, 0)]
        self.used += len(text)
        if text:
            self.parts[stream].append(text)

    def text(self, stream: str) -> str:
        body = "".join(self.parts[stream])
        if stream == "stdout" and self.dropped:
            body += f"\n[... output truncated: {self.dropped} more characters not shown (limit {self.limit}) ...]\n"
        return body


def _handle(msg: dict, out: _Capture) -> bool:
    """Fold one iopub message into ``out``; True when the cell has finished."""
    kind = msg["msg_type"]
    content = msg["content"]
    if kind == "stream":
        out.add("stderr" if content.get("name") == "stderr" else "stdout", content.get("text", ""))
    elif kind in ("execute_result", "display_data"):
        text = content.get("data", {}).get("text/plain")
        if text:
            out.add("stdout", text + "\n")
    elif kind == "error":
        tb = strip_ansi("\n".join(content.get("traceback", [])))
        out.add("stderr", tb + "\n")
        out.error = f"{content.get('ename', 'Error')}: {strip_ansi(content.get('evalue', ''))}".strip()
    elif kind == "status" and content.get("execution_state") == "idle":
        return True
    return False


def python_has_ipykernel(python: str = sys.executable) -> bool:
    import subprocess

    return subprocess.run([python, "-c", "import ipykernel"], capture_output=True).returncode == 0


def default_preload(modules: Sequence[str]) -> str:
    """Code that imports ``modules`` in a pooled kernel so the first real cell does not pay for them."""
    return "\n".join(f"import {m}" for m in modules)
