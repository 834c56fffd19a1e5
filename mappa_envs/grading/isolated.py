"""Graders run in a separate, persistent worker process with a hard wall-time and memory limit.

Why: a grader parses what an agent wrote. ``\\boxed{9^{9^{9^{9}}}}`` sends sympy into a C-level power computation
that no signal interrupts (and ``signal.alarm`` only works on the main thread, while the trainer steps envs on
others); a crafted ``submission.csv`` can cost pandas gigabytes. In-process, either one hangs or bloats the whole
training run. In a worker, the env waits at most ``timeout_s``, then kills the worker (a fresh one starts on the
next call) and the grade is a failed outcome labelled ``"grader timed out after Ns"`` — never a hang.

Why persistent: importing pandas, sympy and math_verify costs ~1.5 s per fresh interpreter, far more than a grade.
A few workers per env process (:data:`WORKERS`) serve every episode: a call goes to an idle one, and its clock
starts when the worker has it. Requests go to the worker pickled (we wrote them); answers come back as JSON (the worker parsed hostile
input, so nothing it returns is unpickled). ``MAPPA_GRADER=direct`` (or :func:`set_direct`) runs graders in-process
instead — the old code path, for benchmarks and debugging only.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

GiB = 1024**3
MEMORY_BYTES = 4 * GiB
"""Address-space limit (``RLIMIT_AS``) of the worker: what one grade may allocate at most."""
START_TIMEOUT_S = 120.0
"""How long the worker may take to start and import the graders (not counted against a grade's timeout)."""
WARM_MODULES = ("mappa_envs.tabular.scoring", "mappa_envs.grading.math", "math_verify")

_HEADER = struct.Struct("<Q")
_direct = os.environ.get("MAPPA_GRADER", "").strip().lower() == "direct"


class GraderTimeout(Exception):
    """A grade took longer than its wall-time limit; the worker was killed. ``str()`` is the outcome's reason."""


class GraderFailed(Exception):
    """The grader crashed (its process died, e.g. at the memory limit, or it raised); ``str()`` says which."""


class RemoteError(Exception):
    """The grader raised an exception of a type the caller may want back (``kind``: its class name)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def set_direct(direct: bool) -> None:
    """Run graders in this process (``True``: no isolation, the pre-isolation path) or in the worker."""
    global _direct
    _direct = bool(direct)


def is_direct() -> bool:
    return _direct


def _resolve(ref: str):
    module, _, name = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


class Worker:
    """One grader process; :meth:`call` runs ``module:function(*args, **kwargs)`` in it under a time limit."""

    def __init__(self, memory_bytes: int | None = MEMORY_BYTES) -> None:
        self.memory_bytes = memory_bytes
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self.restarts = 0

    # -- lifecycle --------------------------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        """A minimal environment (no API keys), with this process's import path so the worker runs the same code."""
        here = str(Path(__file__).resolve().parents[2])
        paths = [here, *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR")}
        env.update(
            PYTHONPATH=os.pathsep.join(dict.fromkeys(paths)),
            OMP_NUM_THREADS="1",
            OPENBLAS_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            MALLOC_ARENA_MAX="2",
            PYTHONDONTWRITEBYTECODE="1",
        )
        return env

    def _preexec(self) -> None:
        import resource

        os.setsid()  # a Ctrl-C meant for the env does not kill a grade half-way
        if self.memory_bytes:
            resource.setrlimit(resource.RLIMIT_AS, (self.memory_bytes, self.memory_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    def start(self) -> None:
        """Start the worker and wait until it has imported the graders."""
        if self._proc is not None and self._proc.poll() is None:
            return
        self._proc = subprocess.Popen(
            # not `-m`: importing the mappa_envs package imports this module first, and runpy would warn
            [sys.executable, "-c", "from mappa_envs.grading.isolated import _serve; _serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=self._env(),
            preexec_fn=self._preexec,
            close_fds=True,
        )
        try:
            ready = self._recv(START_TIMEOUT_S)
        except (GraderTimeout, GraderFailed) as e:
            self.stop()
            raise GraderFailed(f"the grader process could not start ({e})") from None
        if ready != {"ready": True}:
            self.stop()
            raise GraderFailed("the grader process could not start")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for f in (proc.stdin, proc.stdout):
            try:
                f.close()  # type: ignore[union-attr]
            except OSError:
                pass

    # -- calls ------------------------------------------------------------------------------------------------
    def call(self, ref: str, *args: Any, timeout_s: float, **kwargs: Any) -> Any:
        """``ref(*args, **kwargs)`` in the worker. Raises :class:`GraderTimeout` after ``timeout_s`` (the worker
        is killed and restarted on the next call), :class:`GraderFailed` when it dies, :class:`RemoteError` when
        the function raised."""
        payload = pickle.dumps((ref, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            self.start()
            proc = self._proc
            assert proc is not None and proc.stdin is not None
            try:
                proc.stdin.write(_HEADER.pack(len(payload)) + payload)
                proc.stdin.flush()
                reply = self._recv(timeout_s)
            except GraderTimeout:
                self.stop()
                self.restarts += 1
                raise GraderTimeout(f"grader timed out after {timeout_s:g}s") from None
            except (GraderFailed, OSError):
                code = proc.poll()
                self.stop()
                self.restarts += 1
                limit = f"; its memory limit is {self.memory_bytes / GiB:g} GiB" if self.memory_bytes else ""
                raise GraderFailed(f"grader process died (exit code {code}{limit})") from None
        if "ok" in reply:
            return reply["ok"]
        raise RemoteError(str(reply.get("kind", "Exception")), str(reply.get("error", "")))

    def _recv(self, timeout_s: float) -> Any:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        header = _read_exact(fd, _HEADER.size, deadline)
        (n,) = _HEADER.unpack(header)
        return json.loads(_read_exact(fd, n, deadline))


def _read_exact(fd: int, n: int, deadline: float) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise GraderTimeout()
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            raise GraderTimeout()
        chunk = os.read(fd, min(n - len(buf), 1 << 20))
        if not chunk:
            raise GraderFailed("EOF")
        buf += chunk
    return bytes(buf)


WORKERS = max(1, int(os.environ.get("MAPPA_GRADER_WORKERS", "2")))
"""Grader processes per env process (each started on first use): one slow grade (up to its timeout) does not hold
up the other episodes' grades while another worker is free."""
_WORKERS: list[Worker] = []
_WORKER_LOCK = threading.Lock()
_next = 0


def _pool() -> list[Worker]:
    with _WORKER_LOCK:
        if not _WORKERS:
            import atexit

            _WORKERS.extend(Worker() for _ in range(WORKERS))
            for w in _WORKERS:
                atexit.register(w.stop)
        return _WORKERS


def worker() -> Worker:
    """A grader worker for the next call: an idle one if there is one, else the next in turn."""
    global _next
    pool = _pool()
    for w in pool:
        if not w._lock.locked():
            return w
    with _WORKER_LOCK:
        _next = (_next + 1) % len(pool)
        return pool[_next]


def warm() -> None:
    """Start the shared worker in the background (an env calls this at reset, so the first grade does not wait
    for the worker's imports); a no-op when it runs or graders run in-process."""
    if _direct:
        return
    w = _pool()[0]
    if w._proc is None or w._proc.poll() is not None:

        def start() -> None:
            with w._lock:
                try:
                    w.start()
                except GraderFailed:
                    pass  # the next call retries and reports it

        threading.Thread(target=start, name="mappa-grader-warm", daemon=True).start()


def run(ref: str, *args: Any, timeout_s: float, **kwargs: Any) -> Any:
    """``ref(*args, **kwargs)`` isolated in the shared worker (in-process under :func:`set_direct`)."""
    if _direct:
        return _resolve(ref)(*args, **kwargs)
    return worker().call(ref, *args, timeout_s=timeout_s, **kwargs)


# ---------------------------------------------------------------------------------------------------- worker side
def _serve() -> None:
    """The worker's loop: read a pickled request from stdin, answer it as JSON on the original stdout."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a grader prints goes to stderr, never into the answer stream
    inp = sys.stdin.buffer

    def send(obj: Any) -> None:
        data = json.dumps(obj, default=str).encode()
        out.write(_HEADER.pack(len(data)) + data)
        out.flush()

    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except Exception:
            pass
    send({"ready": True})
    while True:
        header = inp.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return  # the env process closed the pipe (or died): nothing left to grade
        (n,) = _HEADER.unpack(header)
        ref, args, kwargs = pickle.loads(inp.read(n))
        try:
            send({"ok": _resolve(ref)(*args, **kwargs)})
        except MemoryError:
            send({"kind": "MemoryError", "error": "the grader ran out of memory"})
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # math_verify's TimeoutException derives from BaseException
            send({"kind": type(e).__name__, "error": " ".join(str(e).split())[:300]})


if __name__ == "__main__":
    _serve()
