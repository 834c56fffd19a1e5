"""The embedded DSBench splits, generated on first use into mappa's private home from the task secret.

The repository ships only the generator (:mod:`.dsbench_gen`) and its task list; the task folders, with their
hidden answers, are written to ``<mappa_home>/tasks/dsbench/<key>/<split>`` where ``key`` fingerprints the secret,
the generator version and the versions of the packages the data comes from (output is a pure function of those).
A split is built once (about a second) into a temporary folder and renamed into place, so concurrent first uses
never see a half-written split.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

from mappa_envs.taskgen.secret import _private_dir, fingerprint, mappa_home, task_secret

GENERATOR_VERSION = "2"
"""Bump when :mod:`.dsbench_gen` changes what it writes, so caches built by older code are not reused."""
DATA_PACKAGES = ("numpy", "pandas", "scikit-learn", "scipy", "palmerpenguins")
COMPLETE = ".complete"


def _versions() -> tuple[str, ...]:
    out = []
    for name in DATA_PACKAGES:
        try:
            out.append(f"{name}={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{name}=none")
    return tuple(out)


def splits() -> tuple[str, ...]:
    from mappa_envs.taskgen.dsbench_gen import SPECS

    return tuple(sorted({s.split for s in SPECS}))


def embedded_dsbench_split(split: str, secret: bytes | None = None, home: Path | None = None) -> Path:
    """The folder of task folders for ``split``, generated from ``secret`` (default: the installation's secret
    in ``home``, default :func:`mappa_home`) on first use."""
    from mappa_envs.tasks import TaskError

    if split not in splits():
        raise TaskError(f"no embedded dsbench split {split!r}; available: {list(splits())}")
    home = Path(home) if home is not None else mappa_home()
    if secret is None:
        secret = task_secret(home)
    root = _private_dir(home) / "tasks" / "dsbench" / fingerprint(secret, GENERATOR_VERSION, *_versions())
    final = root / split
    if (final / COMPLETE).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{split}-", dir=root))
    try:
        from mappa_envs.taskgen import dsbench_gen

        dsbench_gen.generate(tmp, only=[s.id for s in dsbench_gen.SPECS if s.split == split], secret=secret)
        built = tmp / split
        (built / COMPLETE).write_text("")
        if final.exists() and not (final / COMPLETE).is_file():
            shutil.rmtree(
                final, ignore_errors=True
            )  # a crashed writer's leftovers (never renamed: defensive)
        try:
            os.rename(built, final)
        except OSError:
            if not (final / COMPLETE).is_file():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
