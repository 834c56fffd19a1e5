"""Math task loading: user lists, JSON/JSONL files, the reference AIME/AMC files and the embedded splits.

Records are ``{"problem" (or "prompt"), "answer", "id"?, "tags"?, "meta"?}``; other fields (year, source, ...)
go to ``Task.meta``. Answers are normalised once here (``142.0`` -> ``"142"``) so every consumer sees a string.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mappa_envs.grading.math import normalize_expected
from mappa_envs.tasks import Task, TaskError, TaskSet, embedded_path, read_records

_CORE_FIELDS = {"problem", "prompt", "answer", "id", "tags", "meta"}


def load_math_tasks(source: Any) -> TaskSet:
    """Load math tasks from a list of dicts, a JSON array / JSONL file path, or ``"embedded:<split>"``."""
    if isinstance(source, TaskSet):
        return source
    if isinstance(source, str) and source.startswith("embedded:"):
        split = source.removeprefix("embedded:")
        path = embedded_path("math", split)
        return _from_records(read_records(path), where=str(path), stem=path.stem, name=source)
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if path.is_dir():
            raise TaskError(
                f"{path} is a folder; pass a JSON or JSONL file of math tasks (or 'embedded:<split>')"
            )
        return _from_records(read_records(path), where=str(path), stem=path.stem, name=str(path))
    if isinstance(source, Sequence) and not isinstance(source, (bytes, bytearray)):
        for i, rec in enumerate(source):
            if not isinstance(rec, Mapping):
                raise TaskError(f"tasks list: record {i} is a {type(rec).__name__}, not a dict; give dicts")
        return _from_records(list(source), where="tasks list", stem="task", name="tasks list")
    raise TaskError(
        f"cannot load math tasks from a {type(source).__name__}; "
        "give a list of dicts, a JSON/JSONL file path or 'embedded:<split>'"
    )


def _from_records(records: list[Mapping[str, Any]], where: str, stem: str, name: str) -> TaskSet:
    return TaskSet((_task(rec, i, where, stem) for i, rec in enumerate(records)), name=name)


def _task(rec: Mapping[str, Any], i: int, where: str, stem: str) -> Task:
    def fail(what: str) -> TaskError:
        return TaskError(f"{where}: record {i}: {what}")

    key = "problem" if "problem" in rec else "prompt"
    problem = rec.get(key)
    if problem is None:
        raise fail("missing field 'problem' (or its alias 'prompt'); add the problem text")
    if not isinstance(problem, str) or not problem.strip():
        raise fail(f"field {key!r} must be a non-empty string, got {problem!r:.60}; give the problem text")

    answer = rec.get("answer")
    if answer is None:
        raise fail("missing field 'answer'; add the expected final answer (a string or a number)")
    try:
        answer_s = normalize_expected(answer)
    except (TypeError, ValueError) as e:
        raise fail(f"field 'answer' is invalid ({e}); give a string or a finite number") from None
    if not answer_s:
        raise fail("field 'answer' is empty; give the expected final answer")

    tid = rec.get("id")
    if tid is None:
        tid = f"{stem}-{i}"
    elif isinstance(tid, bool) or not isinstance(tid, (str, int)):
        raise fail(f"field 'id' must be a string or an integer, got {tid!r:.60}; fix or drop it")
    elif not str(tid).strip():
        raise fail("field 'id' is empty; give a non-empty id or drop the field")

    tags = rec.get("tags", ())
    if tags is None:
        tags = ()
    if isinstance(tags, str):
        tags = (tags,)
    if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
        raise fail(f"field 'tags' must be a list of strings, got {tags!r:.60}")

    meta = rec.get("meta", {})
    if not isinstance(meta, Mapping):
        raise fail(f"field 'meta' must be an object, got {type(meta).__name__}")
    meta = {**{k: v for k, v in rec.items() if k not in _CORE_FIELDS}, **meta}
    return Task(id=str(tid).strip(), prompt=problem, answer=answer_s, tags=tuple(tags), meta=meta)
