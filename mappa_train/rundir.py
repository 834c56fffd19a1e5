"""A run folder belongs to one run: a fresh run never writes into another run's folder, a resume only into its own.

Without this, a second ``mappa train`` into a used ``out_dir`` wiped the old metrics but kept the old
checkpoints, and a later ``--resume`` continued from the *old* run's step.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from mappa_train.checkpoint import latest_checkpoint, list_checkpoints, saved_config

# what a run writes into its out_dir; --overwrite removes exactly these, nothing else a user keeps there
RUN_FILES = ("metrics.jsonl", "transcripts.jsonl", "config.json", "curves.png", "checkpoints", "tensorboard")
# keys a resume may change: how long and how often, never what is trained
RESUMABLE_CHANGES = frozenset(
    {"steps", "progress", "eval_every", "checkpoint_every", "parallel_envs", "out_dir"}
)


class RunFolderError(RuntimeError):
    """A run folder that cannot be used as asked; the message names the folder and the choices."""


def run_files(out_dir: Path) -> list[str]:
    """The names of the run outputs present in ``out_dir`` (an empty ``checkpoints/`` does not count)."""
    found = []
    for name in RUN_FILES:
        path = out_dir / name
        if name == "checkpoints":
            if list_checkpoints(path) or (path.is_dir() and any(path.iterdir())):
                found.append(name)
        elif path.exists():
            found.append(name)
    return found


def clear(out_dir: Path) -> None:
    for name in RUN_FILES:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def previous_config(out_dir: Path) -> dict[str, Any] | None:
    """The config of the run in ``out_dir``: its latest intact checkpoint's, else its ``config.json``."""
    checkpoint = latest_checkpoint(out_dir / "checkpoints")
    if checkpoint is not None:
        return saved_config(checkpoint)
    path = out_dir / "config.json"
    if path.exists():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None
    return None


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys that differ and a resume may not change (keys added to the config since ``old`` was saved are not
    compared)."""
    return {
        k: (old.get(k), v) for k, v in new.items() if k in old and old[k] != v and k not in RESUMABLE_CHANGES
    }


def claim(out_dir: Path, config: dict[str, Any], resume: bool, overwrite: bool) -> None:
    """Make ``out_dir`` this run's: refuse a used folder for a fresh run, and a resume with another config."""
    if resume and overwrite:
        raise RunFolderError(
            "--resume continues the run in out_dir and --overwrite deletes it: pass one of them"
        )
    if overwrite:
        clear(out_dir)
        return
    found = run_files(out_dir)
    if not resume:
        if found:
            raise RunFolderError(
                f"{out_dir} already holds a run ({', '.join(found)}). Pass --resume to continue it, "
                f"--overwrite to delete it and start clean, or choose a new folder with out_dir=..."
            )
        return
    old = previous_config(out_dir)
    if old is None:
        return
    changed = config_changes(old, config)
    if changed:
        listed = "; ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in sorted(changed.items()))
        raise RunFolderError(
            f"--resume continues the run in {out_dir} with the config it was started with, but these keys "
            f"differ: {listed}. Set them back, or start a new run in a new out_dir (or --overwrite this one). "
            f"A resume may change only: {', '.join(sorted(RESUMABLE_CHANGES))}"
        )
