"""The built distribution works without the source tree: a clean build, then the quick start from a fresh venv.

The fresh virtualenv borrows this venv's third-party packages through a path entry (a `.pth` line appends a
folder without running the `.pth` files inside it, so this checkout's editable install stays invisible) and gets
mappa itself only from the wheel.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
from pathlib import Path

import pytest

import mappa_envs

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

QUICK_START = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import mappa_envs
    import mappa_train
    from mappa_envs.scripted import scripted_team

    assert sys.argv[1] in mappa_envs.__file__, mappa_envs.__file__
    assert mappa_train.__version__ == mappa_envs.__version__

    env = mappa_envs.make("math-chat", tasks="embedded:one-step-eval")
    team = scripted_team("math-chat")
    env.reset(seed=0)
    for agent in env.agent_iter():
        obs, reward, termination, truncation, info = env.last()
        env.step(None if termination or truncation else team(agent, obs["messages"]))
    print("outcome", env.unwrapped.outcome["correct"])
    print("records", len(env.unwrapped.records))
    env.close()

    env = mappa_envs.make("dsbench-3agent")
    env.reset(seed=0)
    task = env.unwrapped.task
    print("dsbench", task.id, sorted(p.name for p in Path(env.unwrapped.workspace.path).iterdir()))
    env.close()
    """
)


def _tracked_copy(dest: Path) -> Path:
    """The git-tracked files only, so the build sees what a clean clone sees."""
    files = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(src.read_bytes())
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> tuple[Path, str]:
    if not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to know the tracked files")
    src = _tracked_copy(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("dist")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return next(out.glob("*.whl")), proc.stdout + proc.stderr


def test_build_is_clean_and_named_for_the_index(wheel):
    path, log = wheel
    name = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
    assert name != "mappa", "'mappa' on PyPI is an unrelated 2009 package"
    assert path.name.startswith(f"{name.replace('-', '_')}-{mappa_envs.__version__}-")
    warnings = [line for line in log.splitlines() if "warning" in line.lower()]
    assert not warnings, warnings


def test_every_package_is_in_the_wheel(wheel):
    import zipfile

    names = zipfile.ZipFile(wheel[0]).namelist()
    for init in [*ROOT.glob("mappa_envs/**/__init__.py"), *ROOT.glob("mappa_train/**/__init__.py")]:
        assert init.relative_to(ROOT).as_posix() in names, f"{init.parent.name} is missing from the wheel"
    assert any(n.startswith("mappa_tasks/math/") and n.endswith(".jsonl") for n in names)


def test_quick_start_from_a_fresh_venv(wheel, tmp_path):
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", str(wheel[0])],
        check=True,
    )
    run = tmp_path / "run"
    run.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        [py, "-c", QUICK_START, str(venv)], cwd=run, capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "outcome True" in proc.stdout, proc.stdout
    assert "dsbench" in proc.stdout and "train.csv" in proc.stdout, proc.stdout
    cli = subprocess.run([venv / "bin" / "mappa", "envs"], cwd=run, capture_output=True, text=True, env=env)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert "dsbench-3agent-v2" in cli.stdout
