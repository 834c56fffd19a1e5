"""What a tabular task's ``metric.json`` says, validated once so the scorer can trust it.

Why a dataclass: the loader, the scorer and the task generator all need the same facts (metric, id column,
target columns, direction, baseline and best scores); keeping the parsing and its error messages in one place
means a broken task is reported the same way wherever it is first touched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mappa_envs.tabular.metrics import get_metric, known_metrics
from mappa_envs.tasks import TaskError

TASK_TYPES = ("classification", "regression")
REQUIRED_KEYS = ("metric", "id_column", "target_columns", "higher_is_better", "baseline", "best", "task_type")


@dataclass(frozen=True)
class TabularMeta:
    """The scoring facts of one task (``metric.json`` plus where the task and its hidden answers live)."""

    metric: str
    id_column: str
    target_columns: tuple[str, ...]
    higher_is_better: bool
    baseline: float
    best: float
    task_type: str
    params: Mapping[str, Any] = field(default_factory=dict)
    task_dir: Path | None = None
    answers_csv: Path | None = None
    task_id: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "metric.json") -> TabularMeta:
        """Validate and build; every problem raises :class:`TaskError` naming ``where`` and the field."""
        if isinstance(data, TabularMeta):
            return data
        if not isinstance(data, Mapping):
            raise TaskError(f"{where}: expected a JSON object, got {type(data).__name__}")
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise TaskError(f"{where}: missing key(s) {missing}; a tabular task needs {list(REQUIRED_KEYS)}")

        name = data["metric"]
        if not isinstance(name, str):
            raise TaskError(f"{where}: 'metric' must be a string, got {name!r}")
        try:
            metric = get_metric(name)
        except KeyError:
            raise TaskError(
                f"{where}: unknown metric {name!r}; known metrics: {', '.join(known_metrics())}"
            ) from None

        id_column = data["id_column"]
        if not isinstance(id_column, str) or not id_column:
            raise TaskError(f"{where}: 'id_column' must be a non-empty string, got {id_column!r}")
        targets = data["target_columns"]
        if isinstance(targets, str):
            targets = [targets]
        if (
            not isinstance(targets, (list, tuple))
            or not targets
            or not all(isinstance(t, str) and t for t in targets)
        ):
            raise TaskError(
                f"{where}: 'target_columns' must be a non-empty list of column names, got {targets!r}"
            )
        if id_column in targets or len(set(targets)) != len(targets):
            raise TaskError(f"{where}: 'target_columns' {targets!r} repeat a column or include the id column")

        hib = data["higher_is_better"]
        if not isinstance(hib, bool):
            raise TaskError(f"{where}: 'higher_is_better' must be true or false, got {hib!r}")
        if hib != metric.higher_is_better:
            raise TaskError(
                f"{where}: 'higher_is_better' is {str(hib).lower()} but {metric.name} is "
                f"{'higher' if metric.higher_is_better else 'lower'}-is-better; fix the flag"
            )
        baseline, best = (_number(data[k], k, where) for k in ("baseline", "best"))
        if (best < baseline) if hib else (best > baseline):
            raise TaskError(
                f"{where}: 'best' ({best}) is worse than 'baseline' ({baseline}) for {metric.name}"
            )

        task_type = data["task_type"]
        if task_type not in TASK_TYPES:
            raise TaskError(f"{where}: 'task_type' must be one of {list(TASK_TYPES)}, got {task_type!r}")
        params = data.get("params") or {}
        if not isinstance(params, Mapping):
            raise TaskError(
                f"{where}: 'params' must be an object of metric keyword arguments, got {params!r}"
            )
        unknown = sorted(set(params) - set(metric.params))
        if unknown:
            raise TaskError(
                f"{where}: metric {metric.name} takes no parameter(s) {unknown}; accepted: {list(metric.params)}"
            )

        def path(key: str) -> Path | None:
            v = data.get(key)
            return None if v is None else Path(v)

        return cls(
            metric=name,
            id_column=id_column,
            target_columns=tuple(targets),
            higher_is_better=hib,
            baseline=baseline,
            best=best,
            task_type=task_type,
            params=dict(params),
            task_dir=path("task_dir"),
            answers_csv=path("answers_csv"),
            task_id=data.get("task_id"),
        )

    def to_meta(self) -> dict[str, Any]:
        """The ``Task.meta`` dict (the loader's documented keys, plus ``task_id`` for outcomes)."""
        return {
            "task_dir": self.task_dir,
            "answers_csv": self.answers_csv,
            "metric": self.metric,
            "id_column": self.id_column,
            "target_columns": list(self.target_columns),
            "higher_is_better": self.higher_is_better,
            "baseline": self.baseline,
            "best": self.best,
            "task_type": self.task_type,
            "params": dict(self.params),
            "task_id": self.task_id,
        }


def _number(v: Any, key: str, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise TaskError(f"{where}: {key!r} must be a finite number (the metric's value), got {v!r}")
    return float(v)
