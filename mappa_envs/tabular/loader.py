"""Load DSBench-style tabular tasks (one folder per task) into a :class:`~mappa_envs.tasks.TaskSet`.

A task folder holds ``description.md``, ``train.csv``, ``test.csv``, ``sample_submission.csv``,
``metric.json`` and the hidden ``answers/test_answer.csv``. Only the four input files go into ``Task.files``
(they are what the workspace receives); the answers path lives in ``Task.meta`` for the grader alone.

Validation is deliberately cheap (JSON plus CSV header lines, never whole files) so loading a big task set is
instant, yet catches what would otherwise fail at the end of an episode: a missing file, a bad metric.json, an
unknown metric, a target or id column absent from the CSVs, or a test.csv that leaks the target.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from mappa_envs.tabular.meta import TabularMeta
from mappa_envs.tasks import Task, TaskError, TaskSet, embedded_path

INPUT_FILES = ("train.csv", "test.csv", "sample_submission.csv", "description.md")
ANSWERS = Path("answers") / "test_answer.csv"


def load_dsbench_tasks(source: str | Path | TaskSet) -> TaskSet:
    """Tasks from ``"embedded:<split>"``, a folder of task folders, or a single task folder.

    A single task folder is recognised by its ``metric.json``; otherwise every non-hidden sub-folder is a task
    (sorted by name, so the order is stable).
    """
    if isinstance(source, TaskSet):
        return source
    if isinstance(source, str) and source.startswith("embedded:"):
        split = source.removeprefix("embedded:")
        return _load_folder(embedded_path("dsbench", split), name=source)
    if not isinstance(source, (str, Path)):
        raise TaskError(
            f"cannot load DSBench tasks from a {type(source).__name__}; give a folder or 'embedded:<split>'"
        )
    path = Path(source).expanduser()
    if not path.is_dir():
        raise TaskError(
            f"DSBench task source {path} is not a folder; give a task folder or a folder of task folders"
        )
    return _load_folder(path, name=str(path))


def _load_folder(path: Path, name: str) -> TaskSet:
    if (path / "metric.json").exists():
        return TaskSet([load_task(path)], name=name)
    dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    if not dirs:
        raise TaskError(
            f"{path} holds no task folders (each needs metric.json, description.md, train.csv, ...)"
        )
    return TaskSet([load_task(d) for d in dirs], name=name)


def load_task(task_dir: Path) -> Task:
    """One task folder -> Task; raises TaskError naming the task and the missing or malformed piece."""
    task_dir = Path(task_dir).resolve()
    tid = task_dir.name

    def fail(what: str) -> TaskError:
        return TaskError(f"DSBench task {tid!r} ({task_dir}): {what}")

    missing = [f for f in (*INPUT_FILES, "metric.json", str(ANSWERS)) if not (task_dir / f).is_file()]
    if missing:
        raise fail(f"missing file(s) {missing}")
    try:
        raw = json.loads((task_dir / "metric.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise fail(f"metric.json is not valid JSON ({e}); fix the file") from None
    if not isinstance(raw, dict):
        raise fail(f"metric.json must hold a JSON object, got {type(raw).__name__}")
    data: dict[str, Any] = {**raw, "task_dir": task_dir, "answers_csv": task_dir / ANSWERS, "task_id": tid}
    try:
        meta = TabularMeta.from_mapping(data, where="metric.json")
    except TaskError as e:
        raise fail(str(e)) from None

    # Several class-probability columns (Kaggle's otto/lmsys style) are usually one label column in train.csv,
    # so train.csv must hold the target columns except in that case.
    class_probs = meta.metric == "log_loss" and len(meta.target_columns) > 1
    needs = {
        str(ANSWERS): [meta.id_column, *meta.target_columns],
        "sample_submission.csv": [meta.id_column, *meta.target_columns],
        "test.csv": [meta.id_column],
        "train.csv": [] if class_probs else list(meta.target_columns),
    }
    for fname, cols in needs.items():
        header = _header(task_dir / fname, fail)
        absent = [c for c in cols if c not in header]
        if absent:
            raise fail(f"{fname} lacks column(s) {absent}; its header is {header[:12]}")
    leaked = [c for c in meta.target_columns if c in _header(task_dir / "test.csv", fail)]
    if leaked:
        raise fail(
            f"test.csv contains the target column(s) {leaked}; remove them (they are the hidden answers)"
        )
    prompt = (task_dir / "description.md").read_text(encoding="utf-8")
    if not prompt.strip():
        raise fail("description.md is empty; describe the task, columns, metric and submission format")

    tags = ("family:dsbench", f"task_type:{meta.task_type}", f"metric:{meta.metric}")
    if len(meta.target_columns) > 1:
        tags += ("multi_target",)
    return Task(
        id=tid,
        prompt=prompt,
        answer=None,
        tags=tags,
        files={f: task_dir / f for f in INPUT_FILES},
        meta=meta.to_meta(),
    )


def _header(path: Path, fail: Any) -> list[str]:
    """The first CSV row, stripped (BOM included): enough to validate columns without reading the file."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            row = next(csv.reader(f), None)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise fail(f"{path.name} cannot be read as CSV ({e})") from None
    if not row:
        raise fail(f"{path.name} is empty; it needs a header row")
    return [c.strip() for c in row]
