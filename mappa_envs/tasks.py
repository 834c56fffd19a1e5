"""Tasks and task sets: what an episode is about.

A :class:`Task` is pipeline-neutral: an id, the text shown to agents, the hidden expected answer (math), tags
(difficulty, family, task type — used for stratified batches and the coach bias monitor), the input files copied
into the workspace, and pipeline-specific metadata (e.g. the DSBench metric and where its hidden answers live).
Loaders turn user input (a list of dicts, a JSON/JSONL file, a folder, ``"embedded:<split>"``) into a
:class:`TaskSet`; every malformed input raises :class:`TaskError` naming the file, the record and the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class TaskError(ValueError):
    """A task source is missing or malformed; the message names the file, record and field, and the fix."""


@dataclass(frozen=True)
class Task:
    id: str
    prompt: str
    answer: str | None = None
    tags: tuple[str, ...] = ()
    files: Mapping[str, Path] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)


class TaskSet(Sequence[Task]):
    """An ordered, indexable collection of tasks with a name saying where they came from."""

    def __init__(self, tasks: Iterable[Task], name: str = "tasks") -> None:
        self._tasks = list(tasks)
        self.name = name
        if not self._tasks:
            raise TaskError(f"task source {name!r} holds no tasks; give at least one")
        seen: set[str] = set()
        for t in self._tasks:
            if t.id in seen:
                raise TaskError(f"task source {name!r}: duplicate task id {t.id!r}; ids must be unique")
            seen.add(t.id)

    def __len__(self) -> int:
        return len(self._tasks)

    def __getitem__(self, i):  # type: ignore[override]
        return self._tasks[i]

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks)

    def __repr__(self) -> str:
        return f"TaskSet({self.name!r}, {len(self)} tasks)"

    def with_tag(self, tag: str) -> TaskSet:
        return TaskSet([t for t in self if tag in t.tags], name=f"{self.name}[{tag}]")


def read_records(path: Path) -> list[dict[str, Any]]:
    """Read a JSON array or a JSONL file (one object per line; the reference ships JSONL named ``.json``)."""
    if not path.exists():
        raise TaskError(f"task file {path} does not exist; pass an existing JSON or JSONL file")
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise TaskError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); fix the file") from e
        if not all(isinstance(r, dict) for r in data):
            raise TaskError(f"{path}: a JSON task file must be an array of objects")
        return data
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskError(
                f"{path}:{lineno}: not valid JSON ({e.msg}); each line of a JSONL file is one object"
            ) from e
        if not isinstance(rec, dict):
            raise TaskError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
        records.append(rec)
    return records


def embedded_path(kind: str, split: str) -> Path:
    """Path of a shipped task split, e.g. ``embedded_path("math", "train")``.

    DSBench splits are not shipped but generated on first use from the installation's task secret (their answers
    must not be recomputable from public code): see :mod:`mappa_envs.taskgen.cache`."""
    if kind == "dsbench":
        from mappa_envs.taskgen.cache import embedded_dsbench_split

        return embedded_dsbench_split(split)
    import mappa_tasks

    root = mappa_tasks.root() / kind
    candidates = [root / f"{split}.jsonl", root / split]
    for c in candidates:
        if c.exists():
            return c
    available = sorted(p.stem for p in root.iterdir()) if root.exists() else []
    raise TaskError(f"no embedded {kind} split {split!r}; available: {available or 'none'}")
