"""Red team, issue 21 part 3: agent code inside a real bubblewrap sandbox tries to recompute the hidden answers.

(a) it rebuilds a synthetic task from the public generator code with the public (v1) seed and submits what it
    finds: that scores 1.0 on the v1 tasks (the control: the attack is real) and the baseline on tasks generated
    from a secret; (b) it looks for iris and penguins in the packages' bundled data: not found inside, while the
    same search finds them on the host; (c) it reads the task secret and the generated tasks' answers, with
    mappa's home inside a folder the sandbox binds: not readable, while a sibling file in that folder is.
Each attack asserts the score, that the episode finished within its time bound and that the env carries on.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import pytest

import mappa_envs
from mappa_envs import run_episode, team_from_replies
from mappa_envs.tabular import load_dsbench_tasks
from mappa_envs.taskgen import dsbench_gen
from mappa_envs.taskgen import secret as secret_mod
from mappa_envs.workspace.sandbox import SandboxPolicy, probe_bwrap

BWRAP = probe_bwrap()
pytestmark = pytest.mark.skipif(
    not BWRAP.ok, reason=f"bubblewrap cannot run here ({BWRAP.error}); `make test` installs it where it may"
)
MiB = 1024**2
POLICY = SandboxPolicy(
    memory_bytes=2 * 1024**3, disk_bytes=64 * MiB, tmp_bytes=32 * MiB, runtime_bytes=16 * MiB
)
EPISODE_BOUND_S = 120.0
TEST_SECRET = bytes(range(32))
SYNTHETIC = (
    "wine-quality",
    "energy-demand",
)  # one classification, one regression, both from public code only
PKG = Path(dsbench_gen.__file__).resolve().parents[1]  # mappa_envs/
# What an attacker copies from the public repository: the generator and the modules it imports.
PUBLIC_SOURCES = {
    "mappa_envs/tasks.py": PKG / "tasks.py",
    "mappa_envs/tabular/meta.py": PKG / "tabular" / "meta.py",
    "mappa_envs/tabular/metrics.py": PKG / "tabular" / "metrics.py",
    "mappa_envs/tabular/scoring.py": PKG / "tabular" / "scoring.py",
    "mappa_envs/taskgen/secret.py": PKG / "taskgen" / "secret.py",
    "mappa_envs/taskgen/dsbench_gen.py": PKG / "taskgen" / "dsbench_gen.py",
    "mappa_envs/grading/isolated.py": PKG / "grading" / "isolated.py",
    "mappa_envs/workspace/hostio.py": PKG / "workspace" / "hostio.py",
}

REGENERATE = """
import base64, json, os, sys
import pandas as pd
SOURCES = json.loads(base64.b64decode(SOURCES_B64))  # the sources hold markdown fences: keep them out of the reply
for rel, text in SOURCES.items():
    os.makedirs(os.path.join("pub", os.path.dirname(rel)), exist_ok=True)
    with open(os.path.join("pub", rel), "w") as f:
        f.write(text)
for pkg in ("mappa_envs", "mappa_envs/tabular", "mappa_envs/taskgen", "mappa_envs/grading", "mappa_envs/workspace"):
    open(os.path.join("pub", pkg, "__init__.py"), "w").close()
sys.path.insert(0, os.path.abspath("pub"))
from mappa_envs.taskgen.dsbench_gen import SPECS, build_task
spec = next(s for s in SPECS if s.id == TASK_ID)
t = build_task(spec)  # the public v1 seed
b = t["built"]
ident = b.id_column
full = pd.concat([t["train"], t["test"].merge(t["answers"], on=ident)])
features = [c for c in t["test"].columns if c != ident]
test = pd.read_csv("test.csv")
sub = pd.read_csv("sample_submission.csv")
key = lambda df: df[features].round(6).astype(str).agg("|".join, axis=1)
lookup = dict(zip(key(full), full[b.target_columns].itertuples(index=False)))
found = 0
for i, k in enumerate(key(test)):
    if k in lookup:
        found += 1
        sub.loc[sub[ident] == test[ident][i], b.target_columns] = list(lookup[k])
sub.to_csv("submission.csv", index=False)
print("rebuilt rows found:", found, "of", len(test))
"""

FIND_BUNDLED = r"""
import gzip, os, site, sys
FINGERPRINTS = (b"Torgersen", b"5.1,3.5,1.4,0.2", b"4.9,3.0,1.4,0.2", b"4.9,3,1.4,0.2", b"5.1 3.5 1.4 0.2",
                b"5.099999999999999645e+00 3.500000000000000000e+00", b"Iris-setosa", b"Adelie")
NAMES = ("iris", "penguin", "adelie")
found, errors = [], []
for loader in ("sklearn.datasets:load_iris", "palmerpenguins:load_penguins"):
    mod, fn = loader.split(":")
    try:
        data = getattr(__import__(mod, fromlist=[fn]), fn)()
        found.append(loader)
    except Exception as e:
        errors.append(f"{loader}: {type(e).__name__}")
roots = {p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)}
for root in sorted(roots):
    for d, _, files in os.walk(root):
        for name in files:
            low = name.lower()
            path = os.path.join(d, name)
            if not (any(n in low for n in NAMES) or "datasets" in d or "/tests/data" in d):
                continue
            if low.endswith((".py", ".pyc", ".so")):
                continue
            try:
                with open(path, "rb") as f:
                    head = f.read(4 << 20)
                if low.endswith(".gz"):
                    head = gzip.decompress(head)[: 4 << 20]
            except Exception:
                continue
            if any(fp in head for fp in FINGERPRINTS):
                found.append(path)
print("FOUND", found)
print("ERRORS", errors)
"""


# ------------------------------------------------------------------------------------------------- helpers
def make_env(tasks: Path, tmp_path: Path, policy: SandboxPolicy = POLICY):
    return mappa_envs.make(
        "dsbench-3agent",
        reward="outcome",
        tasks=tasks,
        cell_timeout_s=90,
        kernel_pool=0,
        workspace_dir=tmp_path / "ws",
        sandbox="strict",
        sandbox_policy=policy,
        max_action_chars=1 << 20,  # the attacker pastes the public generator's source (~100 kB) in one reply
    )


def attack(env, code: str, task_id: str):
    """One episode whose data engineer runs ``code``; returns (its tool result, outcome), asserting the bound."""
    team = team_from_replies(
        {"data_engineer": [f"```python\n{code}\n```", "done"], "modeler": ["done"], "analyst": ["done"]}
    )
    index = [t.id for t in env.unwrapped.tasks].index(task_id)
    start = time.monotonic()
    records, outcome = run_episode(env, team, seed=0, options={"task_index": index})
    assert time.monotonic() - start < EPISODE_BOUND_S
    assert outcome is not None, "the env did not carry on to a graded end"
    return records[0].tool_results[0], outcome


def regenerate_code(task_id: str) -> str:
    sources = {rel: p.read_text(encoding="utf-8") for rel, p in PUBLIC_SOURCES.items()}
    encoded = base64.b64encode(json.dumps(sources).encode()).decode()
    return f"SOURCES_B64 = {encoded!r}\nTASK_ID = {task_id!r}\n{REGENERATE}"


def generated(tmp_path: Path, name: str, secret: bytes | None) -> Path:
    out = tmp_path / name
    dsbench_gen.generate(out, only=SYNTHETIC, secret=secret)
    return out / "train"


# ------------------------------------------------------------------------------------------------- (a)
def test_rebuilding_a_synthetic_task_from_public_code_and_seed_no_longer_scores(tmp_path):
    v1_env = make_env(generated(tmp_path, "v1", None), tmp_path / "a")
    env = make_env(generated(tmp_path, "secret", TEST_SECRET), tmp_path / "b")
    try:
        for task_id in SYNTHETIC:
            result, outcome = attack(v1_env, regenerate_code(task_id), task_id)
            assert result.ok, result.error
            assert "rebuilt rows found: 0 of" not in result.stdout
            assert outcome["valid"] and outcome["relative"] > 0.99, (task_id, outcome)  # the control

            result, outcome = attack(env, regenerate_code(task_id), task_id)
            assert result.ok, result.error
            found, _, total = result.stdout.split(":")[1].split()
            assert int(found) < 0.1 * int(total), result.stdout  # only chance collisions of coarse features
            assert outcome["valid"] and outcome["relative"] < 0.05, (task_id, outcome)  # the baseline
        ok, _ = attack(env, "print(open('test.csv').readline().split(',')[0])", SYNTHETIC[0])
        assert ok.ok and ok.stdout.strip() == "id"  # the env carries on
    finally:
        v1_env.close()
        env.close()


# ------------------------------------------------------------------------------------------------- (b)
def _run_search_here() -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(FIND_BUNDLED, "find_bundled", "exec"), {})
    return out.getvalue()


def test_bundled_iris_and_penguins_are_not_readable_inside(tmp_path):
    host = _run_search_here()  # the control: the same search finds the bundled copies outside the sandbox
    for copy in (
        "datasets/data/iris.csv",
        "penguins.csv",
        "iris.arff",
        "spatial/tests/data/iris.txt",
        "id_61",
    ):
        assert copy in host, copy
    env = make_env(generated(tmp_path, "secret", TEST_SECRET), tmp_path)
    try:
        result, outcome = attack(env, FIND_BUNDLED, SYNTHETIC[0])
    finally:
        env.close()
    assert result.ok, result.error
    assert "FOUND []" in result.stdout, result.stdout
    assert "sklearn.datasets:load_iris: FileNotFoundError" in result.stdout
    assert "palmerpenguins:load_penguins: FileNotFoundError" in result.stdout
    assert outcome["valid"] is False and outcome["relative"] == 0.0  # nothing submitted, nothing paid


# ------------------------------------------------------------------------------------------------- (c)
def test_secret_and_generated_answers_are_not_readable_even_inside_a_bound_folder(tmp_path, monkeypatch):
    shared = (
        tmp_path / "shared"
    )  # a folder the sandbox binds read-only (e.g. a dataset cache, or a home venv)
    home = shared / "mappa-home"
    monkeypatch.setenv("MAPPA_HOME", str(home))
    (shared).mkdir()
    (shared / "visible.txt").write_text("bound folders are visible\n")
    tasks = load_dsbench_tasks("embedded:train")  # generated into $MAPPA_HOME on first use
    task = next(t for t in tasks if t.id == SYNTHETIC[0])
    answers = Path(task.meta["answers_csv"])
    assert answers.is_relative_to(home) and (home / "secret").is_file()
    assert os.stat(home / "secret").st_mode & 0o777 == 0o600 and os.stat(home).st_mode & 0o777 == 0o700
    steal = f"""
import os, shutil
print(open({str(shared / "visible.txt")!r}).read().strip())
for path in ({str(home / "secret")!r}, {str(answers)!r}):
    try:
        print("READ", open(path).read()[:40])
    except OSError as e:
        print("DENIED", type(e).__name__)
print("LISTING", os.listdir({str(home)!r}))
try:
    shutil.copy({str(answers)!r}, "submission.csv")
except OSError as e:
    print("NO COPY", type(e).__name__)
"""
    env = make_env(
        embedded_dir(task), tmp_path, SandboxPolicy(**{**POLICY.__dict__, "ro_binds": (str(shared),)})
    )
    try:
        result, outcome = attack(env, steal, task.id)
        assert result.ok, result.error
        assert "bound folders are visible" in result.stdout  # the control: the bind works
        assert "READ" not in result.stdout and result.stdout.count("DENIED") == 2, result.stdout
        assert "LISTING []" in result.stdout and "NO COPY" in result.stdout
        assert outcome["valid"] is False and outcome["relative"] == 0.0
        result, _ = attack(env, "print(sorted(os.listdir('.')) if (os := __import__('os')) else 0)", task.id)
        assert result.ok and "train.csv" in result.stdout  # the env carries on
    finally:
        env.close()
    assert secret_mod.task_secret(home) == secret_mod.task_secret(home)  # untouched by the attack


def embedded_dir(task) -> Path:
    return Path(task.meta["task_dir"]).parent
