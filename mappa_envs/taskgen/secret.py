"""The per-installation task secret: what makes the embedded DSBench tasks' hidden answers unguessable.

The generator code and its data sources are public, so a fixed seed would let agent code rebuild every synthetic
task (and every split) inside the sandbox and submit the answers. Instead each task's seed is derived from a
secret generated at first use and kept in :func:`mappa_home` (``$MAPPA_HOME``, default ``~/.cache/mappa``), a
host folder that is never bound into the sandbox and is masked should a bound folder contain it
(:func:`mappa_envs.taskgen.sources.hidden_host_paths`).

Invariants: the folder is ``0700`` and the secret file ``0600``, owned by the current user; a secret readable by
others is refused (not silently used), since anyone who reads it can recompute the answers.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

SECRET_FILE = "secret"
SECRET_BYTES = 32
SEED_LABEL = b"mappa-dsbench-task-seed-v2:"


class SecretError(RuntimeError):
    """The task secret cannot be created or is unsafe to use; the message says how to fix it."""


def mappa_home() -> Path:
    """Host folder for mappa's private state: ``$MAPPA_HOME``, else ``$XDG_CACHE_HOME/mappa``, else ``~/.cache/mappa``."""
    if env := os.environ.get("MAPPA_HOME"):
        return Path(env).expanduser().absolute()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return (Path(cache).expanduser() / "mappa").absolute()


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if st.st_uid != os.getuid():
        raise SecretError(
            f"{path} belongs to uid {st.st_uid}, not to you; set MAPPA_HOME to a folder of your own"
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path


def task_secret(home: Path | None = None) -> bytes:
    """The secret in ``home`` (default :func:`mappa_home`), created with ``0600`` on first use.

    Creation is race-free across processes: the secret is written to a private temp file and hard-linked into
    place, so concurrent first uses agree on one secret.
    """
    home = _private_dir(Path(home) if home is not None else mappa_home())
    path = home / SECRET_FILE
    if not path.exists():
        tmp = home / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(SECRET_BYTES).hex().encode() + b"\n")
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won the race; use its secret
        finally:
            tmp.unlink()
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    st = path.lstat()
    if not stat.S_ISREG(st.st_mode):
        raise SecretError(f"task secret {path} is not a regular file; remove it and a new one is generated")
    if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        raise SecretError(
            f"task secret {path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); anyone who reads it "
            f"can recompute the hidden answers: `chmod 600 {path}` if it never leaked, else delete it"
        )
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != SECRET_BYTES:
        raise SecretError(
            f"task secret {path} is malformed (expected {SECRET_BYTES} hex-encoded bytes); delete it and a new "
            "one is generated (the embedded tasks then change)"
        )
    return raw


def derive_seed(secret: bytes, task_id: str) -> int:
    """A 32-bit seed for ``task_id`` (numpy and scikit-learn take seeds below 2**32), one-way from the secret."""
    if len(secret) < 16:
        raise SecretError(f"a task secret needs at least 16 bytes, got {len(secret)}")
    digest = hmac.new(secret, SEED_LABEL + task_id.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:4], "big")


def fingerprint(secret: bytes, *parts: str) -> str:
    """A short name for a cache folder built from ``secret`` (and ``parts``) that reveals nothing of it."""
    h = hmac.new(secret, b"mappa-cache-key:" + "|".join(parts).encode(), hashlib.sha256)
    return h.hexdigest()[:16]
