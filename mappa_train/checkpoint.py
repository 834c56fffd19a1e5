"""Checkpoints that survive a kill at any moment and hold nothing that can run code when loaded.

A checkpoint is a folder ``step-000007``:

- ``policy/``: the team's weights, written by the policy's own ``save`` (safetensors + JSON);
- ``trainer.safetensors`` + ``trainer.json``: optimiser states, RNG states, step, the resolved config. Every
  tensor goes to the safetensors file, everything else to JSON (:func:`encode`), so loading is data only — no
  pickle, unlike ``torch.save``;
- ``meta.json``, written last: the step and the size and SHA-256 of every other file. A folder whose files do
  not match it is damaged (a disk that lost a write, a hand edit) and is never loaded.

It is written into a temporary sibling folder, fsynced, and renamed into place, so a crash mid-write leaves the
previous checkpoints intact and at worst a ``.tmp-*`` folder, which is ignored and removed by the next save.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

PREFIX = "step-"
FORMAT = 2  # 1 = trainer.pt (a pickle); no longer loaded
TMP_PREFIX = f".tmp-{PREFIX}"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded; the message says which, why, and what to do."""


# -- state <-> (tensors, JSON) ---------------------------------------------------------------------------------
def encode(obj: Any, tensors: dict[str, torch.Tensor], path: str = "") -> Any:
    """``obj`` as JSON data, its tensors moved into ``tensors`` under their path (``optimizers/solver/...``).

    Tuples, non-string dict keys and numpy arrays are tagged so :func:`decode` rebuilds them exactly (an
    optimiser's state is keyed by int, the RNG states are tuples holding arrays).
    """
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous()
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: encode(v, tensors, f"{path}/{k}") for k, v in obj.items()}
        return {
            "__items__": [[encode(k, tensors), encode(v, tensors, f"{path}/{k}")] for k, v in obj.items()]
        }
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(
        f"cannot store {type(obj).__name__} at {path or '/'} in a checkpoint (tensors and JSON only)"
    )


def decode(data: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(data, list):
        return [decode(v, tensors) for v in data]
    if isinstance(data, dict):
        if "__tensor__" in data:
            return tensors[data["__tensor__"]]
        if "__ndarray__" in data:
            return np.asarray(data["__ndarray__"], dtype=np.dtype(data["dtype"]))
        if "__tuple__" in data:
            return tuple(decode(v, tensors) for v in data["__tuple__"])
        if "__items__" in data:
            return {decode(k, tensors): decode(v, tensors) for k, v in data["__items__"]}
        return {k: decode(v, tensors) for k, v in data.items()}
    return data


# -- RNG -------------------------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


# -- files -----------------------------------------------------------------------------------------------------
def _files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            yield path


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync_tree(folder: Path) -> None:
    """Flush every file and folder under ``folder`` to disk, so a rename after it never exposes lost writes."""
    for path in [*_files(folder), *sorted(p for p in folder.rglob("*") if p.is_dir()), folder]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_checkpoint(root: Path, step: int, policy: Any, trainer_state: dict[str, Any], keep: int = 2) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically; keep the newest ``keep`` checkpoints."""
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f"{TMP_PREFIX}*"):  # left by a run killed mid-save: one writer per run folder
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"{PREFIX}{step:06d}"
    tmp = root / f"{TMP_PREFIX}{step:06d}-{os.getpid()}"
    tmp.mkdir()
    policy.save(tmp / "policy")
    tensors: dict[str, torch.Tensor] = {}
    data = encode({**trainer_state, "rng": rng_state()}, tensors)
    save_file(tensors, tmp / "trainer.safetensors")
    (tmp / "trainer.json").write_text(json.dumps(data))
    files = {str(p.relative_to(tmp)): {"bytes": p.stat().st_size, "sha256": _digest(p)} for p in _files(tmp)}
    (tmp / "meta.json").write_text(json.dumps({"format": FORMAT, "step": step, "files": files}, indent=1))
    fsync_tree(tmp)
    if final.exists():
        remove_checkpoint(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    for stale in list_checkpoints(root)[:-keep]:
        remove_checkpoint(stale)
    return final


def remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint so that a kill midway never leaves a half-deleted ``step-N``: rename, then delete."""
    doomed = path.parent / f"{TMP_PREFIX}{path.name[len(PREFIX) :]}-removed-{os.getpid()}"
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_step(path: Path) -> int | None:
    name = path.name
    if not name.startswith(PREFIX) or not name[len(PREFIX) :].isdigit():
        return None
    return int(name[len(PREFIX) :])


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders under ``root`` (damaged ones included, temporary ones not), oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=lambda p: checkpoint_step(p) or 0)


def is_old_format(path: Path) -> bool:
    """A checkpoint of mappa before format 2: its trainer state is ``trainer.pt``, a pickle."""
    return (path / "trainer.pt").exists() and not (path / "trainer.json").exists()


def damage(path: Path) -> str | None:
    """Why the checkpoint at ``path`` cannot be loaded, or ``None`` when it is intact."""
    meta_path = path / "meta.json"
    if not path.is_dir():
        return "it does not exist"
    if is_old_format(path):
        return (
            "it is in the old format (trainer.pt, a pickle, which can run code when loaded and is no longer "
            "read); retrain, or load its policy/ weights alone with the policy's load()"
        )
    if not meta_path.exists():
        return "meta.json is missing (the checkpoint was never completed)"
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "meta.json is not valid JSON"
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return f"meta.json says format {meta.get('format') if isinstance(meta, dict) else '?'}, expected {FORMAT}"
    for name, expected in meta.get("files", {}).items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != expected["bytes"]:
            return f"{name} has {file.stat().st_size} bytes, {expected['bytes']} were written"
        if _digest(file) != expected["sha256"]:
            return f"{name} does not match the checksum written with it"
    for required in ("trainer.json", "trainer.safetensors", "policy/team.json"):
        if required not in meta.get("files", {}):
            return f"{required} is not part of it"
    return None


def latest_checkpoint(root: Path, report: Any = None) -> Path | None:
    """The newest intact checkpoint under ``root``; each newer damaged one is passed to ``report(path, why)``."""
    for path in reversed(list_checkpoints(root)):
        why = damage(path)
        if why is None:
            return path
        if report is not None:
            report(path, why)
    return None


def describe_available(root: Path) -> str:
    """``"step-000002, step-000004 (damaged: ...)"`` or a sentence saying there are none."""
    found = list_checkpoints(root)
    if not found:
        return f"there are no checkpoints in {root}"
    parts = []
    for path in found:
        why = damage(path)
        parts.append(path.name if why is None else f"{path.name} (damaged: {why})")
    return f"available in {root}: {', '.join(parts)}"


def check_checkpoint(path: Path) -> Path:
    """``path`` if it is an intact checkpoint, else a :class:`CheckpointError` naming the ones there are."""
    why = damage(path)
    if why is None:
        return path
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}; {describe_available(path.parent)}")
    raise CheckpointError(f"checkpoint {path} cannot be loaded: {why}; {describe_available(path.parent)}")


def load_trainer_state(path: Path) -> dict[str, Any]:
    """The trainer state of an intact checkpoint (tensors + JSON: nothing in it is executed)."""
    from safetensors.torch import load_file

    check_checkpoint(path)
    try:
        tensors = load_file(str(path / "trainer.safetensors"))
        return decode(json.loads((path / "trainer.json").read_text()), tensors)
    except (
        Exception
    ) as e:  # a file that matches its checksum but is not what mappa writes: refuse it, run nothing
        raise CheckpointError(
            f"checkpoint {path}: trainer.safetensors / trainer.json are not a mappa trainer state ({e}); "
            f"use another checkpoint ({describe_available(path.parent)})"
        ) from None


def saved_config(path: Path) -> dict[str, Any]:
    """The resolved config a checkpoint was trained with."""
    check_checkpoint(path)
    return json.loads((path / "trainer.json").read_text())["config"]
