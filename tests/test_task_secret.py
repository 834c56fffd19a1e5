"""The task secret and the task cache: private, race-free, deterministic given the secret, refused when unsafe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mappa_envs.taskgen import cache, secret, sources
from mappa_envs.tasks import TaskError

ROOT = Path(__file__).resolve().parents[1]


def _child_env(home: Path) -> dict[str, str]:
    return {**os.environ, "MAPPA_HOME": str(home), "PYTHONPATH": str(ROOT)}


def test_first_use_creates_a_private_secret_and_reuses_it(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("MAPPA_HOME", str(home))
    assert secret.mappa_home() == home and sources.hidden_host_paths() == ()  # nothing to hide yet
    first = secret.task_secret()
    assert len(first) == secret.SECRET_BYTES and secret.task_secret() == first
    assert os.stat(home).st_mode & 0o777 == 0o700
    assert os.stat(home / "secret").st_mode & 0o777 == 0o600
    assert sources.hidden_host_paths() == (os.path.realpath(home),)
    assert [p.name for p in home.iterdir()] == ["secret"]  # no temp files left behind


def test_concurrent_first_uses_agree_on_one_secret(tmp_path):
    home = tmp_path / "home"
    code = "from mappa_envs.taskgen.secret import task_secret; print(task_secret().hex())"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=_child_env(home)
        )
        for _ in range(6)
    ]
    outs = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert len(outs) == 1 and len(outs.pop()) == 2 * secret.SECRET_BYTES


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda p: os.chmod(p, 0o644), "readable by others .*chmod 600"),
        (lambda p: p.write_text("not hex\n"), "malformed .*delete it"),
        (lambda p: (p.unlink(), p.symlink_to("/etc/hostname")), "not a regular file"),
    ],
)
def test_an_unsafe_or_broken_secret_is_refused(tmp_path, spoil, message):
    secret.task_secret(tmp_path)
    spoil(tmp_path / "secret")
    with pytest.raises(secret.SecretError, match=message):
        secret.task_secret(tmp_path)


def test_seeds_are_one_way_per_task_and_fit_numpy():
    a, b = b"a" * 32, b"b" * 32
    seeds = {secret.derive_seed(a, t) for t in ("iris-species", "wine-quality", "crop-yield")}
    assert len(seeds) == 3 and all(0 <= s < 2**32 for s in seeds)
    assert secret.derive_seed(a, "iris-species") == secret.derive_seed(a, "iris-species")
    assert secret.derive_seed(a, "iris-species") != secret.derive_seed(b, "iris-species")
    assert secret.fingerprint(a, "x") != secret.fingerprint(b, "x") and a.hex()[
        :16
    ] not in secret.fingerprint(a)
    with pytest.raises(secret.SecretError, match="at least 16 bytes"):
        secret.derive_seed(b"short", "iris-species")


def test_a_split_is_built_once_per_secret(tmp_path):
    home = tmp_path / "home"
    one = cache.embedded_dsbench_split("eval", secret=b"1" * 32, home=home)
    marker = (one / cache.COMPLETE).stat().st_mtime_ns
    assert cache.embedded_dsbench_split("eval", secret=b"1" * 32, home=home) == one
    assert (one / cache.COMPLETE).stat().st_mtime_ns == marker  # reused, not rebuilt
    two = cache.embedded_dsbench_split("eval", secret=b"2" * 32, home=home)
    assert two != one and sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert (one / "crop-yield" / "answers" / "test_answer.csv").read_bytes() != (
        two / "crop-yield" / "answers" / "test_answer.csv"
    ).read_bytes()
    assert not [p for p in one.parent.iterdir() if p.name.startswith(".")]  # no temp folders left
    with pytest.raises(TaskError, match=r"no embedded dsbench split 'nope'; available: \['eval', 'train'\]"):
        cache.embedded_dsbench_split("nope", secret=b"1" * 32, home=home)


def test_concurrent_first_loads_see_only_complete_splits(tmp_path):
    home = tmp_path / "home"
    code = (
        "from mappa_envs.tabular.loader import load_dsbench_tasks\n"
        "ts = load_dsbench_tasks('embedded:train'); print(len(ts), ts[0].meta['task_dir'])"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=_child_env(home)
        )
        for _ in range(3)
    ]
    outs = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert len(outs) == 1, outs
    count, task_dir = outs.pop().split()
    assert count == "10" and Path(task_dir).is_relative_to(home)
