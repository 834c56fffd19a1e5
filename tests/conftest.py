"""Shared test helpers: where ../shared lives, process scans, a tiny maths task list."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

warnings.filterwarnings("ignore", message=".*Observation is not a NumPy array.*")
warnings.filterwarnings("ignore", message=".*is not a Box or Discrete.*")


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` (held-out data, never copied into the repo); skips cleanly when absent."""
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip("../shared/data is absent (held-out data lives beside the repo, not in it)")
    return path


def processes_with(marker: str) -> list[int]:
    """PIDs of live processes whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text()
        except OSError:
            continue
        if marker in cmd and state[state.rfind(")") + 2] != "Z":
            found.append(int(entry.name))
    return found


ADD_TASKS = [
    {"id": "add-1", "problem": "What is 7 + 5? Put your final answer in \\boxed{}.", "answer": "12"},
    {"id": "add-2", "problem": "What is 20 + 22? Put your final answer in \\boxed{}.", "answer": "42"},
]
