"""The README's code runs as written: every ```python block, and every command of its ```bash blocks under
"Command line" (the setup and install blocks are what `make test` and tests/test_package.py run)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def _blocks(lang: str, text: str = README) -> list[str]:
    return re.findall(rf"^ *```{lang}\n(.*?)^ *```$", text, re.S | re.M)


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.S | re.M)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return env


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_python_block_runs(index, tmp_path):
    code = "\n".join(
        line[2:] if line.startswith("  ") else line for line in _blocks("python")[index].splitlines()
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=600,
    )
    assert proc.returncode == 0, f"README python block {index}:\n{code}\n{proc.stderr[-3000:]}"


@pytest.mark.slow
def test_command_line_tour_runs(tmp_path):
    """Each command in order, in a scratch folder holding the repo's configs and suites."""
    (tmp_path / "configs").symlink_to(REPO / "configs")
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "suites").symlink_to(REPO / "bench" / "suites")
    commands = []
    for block in _blocks("bash", _section("Command line")):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                commands.append(line)
    assert commands and all(c.startswith("mappa ") for c in commands)
    for command in commands:
        proc = subprocess.run(
            shlex.split(command),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=_env(tmp_path),
            timeout=900,
        )
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert (tmp_path / "runs" / "bench-tiny" / "leaderboard.md").exists()


def test_readme_links_resolve():
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if "://" in target:
            continue
        assert (REPO / target).exists(), f"README links to {target}, which does not exist"


def test_envs_table_names_registered_ids():
    import mappa_envs

    ids = set(re.findall(r"^\| `([a-z0-9-]+-v\d+)` \|", README, re.M))
    assert ids and ids <= set(mappa_envs.registry), ids
