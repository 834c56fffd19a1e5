"""Score a ``submission.csv`` against a task's hidden answers with the task's own metric.

Why this shape (the reference's bugs we must not repeat): rows are matched by the id column, never by position;
every target column is scored, not "column 2"; string labels stay labels; a missing or malformed submission is a
*failure* with a one-line reason (never an exception, never silently truncated), and fair aggregates count it at
the baseline level instead of dropping it.

Multi-column rule: the metric receives all target columns at once (``metrics`` module docstring): column-wise
metrics average over the columns, ``log_loss`` with several columns reads them as class probabilities, and
``mcrmse`` is the mean of the per-column RMSEs.

What counts as an invalid submission, in the order checked (each gives ``valid=False`` and its reason):
missing file, unreadable/empty CSV, missing id column, missing target column(s), wrong row count, duplicate
ids, unknown/missing ids, NaN values, unparseable numbers, labels outside the known label set (for metrics that
read class labels; known = the answers' labels plus the train set's), and a metric that cannot be computed on
the values given (e.g. probabilities outside [0, 1]). A broken *answers* file is a task error and raises
:class:`~mappa_envs.tasks.TaskError`: that is the task author's bug, not the agent's.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mappa_envs.grading import isolated
from mappa_envs.tabular.meta import TabularMeta
from mappa_envs.tabular.metrics import Metric, get_metric
from mappa_envs.tasks import TaskError
from mappa_envs.workspace import hostio

MAX_SUBMISSION_BYTES = 256 * 1024**2
TIMEOUT_S = 60.0
"""Wall time one tabular grade may take in the grader process."""
NA_TOKENS = frozenset({"", "nan", "-nan", "na", "n/a", "null", "none", "<na>", "nat"})
_INT_ID = re.compile(r"^[+-]?\d+$")
_INTEGRAL = re.compile(r"^[+-]?\d+(\.0*)?$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class _Invalid(Exception):
    """A submission problem; its message is the one-line reason reported to the caller."""


# ---------------------------------------------------------------------------------------------- public API


def score_submission(
    meta: TabularMeta | Mapping[str, Any],
    answers_csv: Path,
    submission_csv: Path,
    timeout_s: float = TIMEOUT_S,
) -> dict:
    """Grade one submission. Never raises on a bad submission; raises TaskError on a broken task/answers file.

    Returns ``{valid, success, metric, score, relative, reward, reason, baseline, best, higher_is_better,
    task_id}`` where ``success == valid``, ``reward == relative`` (0.0 when invalid), ``score`` is the raw metric
    (None when invalid) and ``relative = clip((score - baseline) / (best - baseline), 0, 1)`` — the same formula
    serves both directions because ``best - baseline`` carries the sign.

    The grade runs in the isolated grader process (:mod:`mappa_envs.grading.isolated`) under a wall-time limit
    of ``timeout_s``; a grade that times out or crashes the grader is an invalid submission saying so.
    """
    TabularMeta.from_mapping(meta, where="task meta")  # a broken meta is the caller's error, raised here
    try:
        return isolated.run(
            "mappa_envs.tabular.scoring:_score_direct",
            meta,
            Path(answers_csv),
            Path(submission_csv),
            timeout_s=timeout_s,
        )
    except isolated.RemoteError as e:
        if e.kind == "TaskError":
            raise TaskError(str(e)) from None
        return invalid_outcome(meta, f"the grader failed on this submission ({e.kind}: {e})")
    except (isolated.GraderTimeout, isolated.GraderFailed) as e:
        return invalid_outcome(meta, str(e))


def _score_direct(meta: TabularMeta | Mapping[str, Any], answers_csv: Path, submission_csv: Path) -> dict:
    """:func:`score_submission` in this process (what the grader worker runs)."""
    m = TabularMeta.from_mapping(meta, where="task meta")
    metric = get_metric(m.metric)
    answers = _load_answers(Path(answers_csv), m, metric)
    try:
        y_true, y_pred = _read_submission(Path(submission_csv), m, answers, metric)
    except _Invalid as e:
        return _outcome(m, None, str(e))
    try:
        score = metric(y_true, y_pred, **m.params)
    except Exception as e:  # a value the metric cannot take (e.g. probability 1.7): the submission's fault
        return _outcome(m, None, f"{metric.name} cannot be computed on this submission: {_one_line(e)}")
    if not math.isfinite(score):
        return _outcome(m, None, f"{metric.name} of this submission is not a finite number ({score})")
    return _outcome(m, score, "")


def invalid_outcome(meta: TabularMeta | Mapping[str, Any], reason: str) -> dict:
    """The outcome of a run that produced nothing to score (crash, timeout): a failure at baseline level."""
    return _outcome(
        TabularMeta.from_mapping(meta, where="task meta"), None, _one_line(reason) or "no submission"
    )


def relative_score(score: float, baseline: float, best: float, higher_is_better: bool) -> float:
    """``(score - baseline) / (best - baseline)`` clipped to [0, 1]; 0 = baseline level, 1 = the answers.

    Direction-aware by construction (for lower-is-better metrics both differences are negative). When best
    equals baseline the task cannot separate them: 1.0 if the score reaches best, else 0.0.
    """
    if best == baseline:
        reached = score >= best if higher_is_better else score <= best
        return 1.0 if reached else 0.0
    return float(min(1.0, max(0.0, (score - baseline) / (best - baseline))))


def aggregate(outcomes: Iterable[Mapping[str, Any]]) -> dict:
    """Summarise outcomes the fair way: failures count at baseline level instead of being dropped.

    Returns ``n``, ``n_valid``, ``success_rate``, ``mean_relative_fair`` (invalid runs count 0),
    ``mean_score_fair`` (per metric name; invalid runs count at their task's baseline value),
    and, for contrast with the reference's drop-the-failures averages, ``mean_relative_valid`` and
    ``mean_score_valid`` (over valid runs only; None / absent when there are none).
    """
    outs = list(outcomes)
    n = len(outs)
    valid = [o for o in outs if o.get("valid")]
    fair_rel = [float(o.get("relative") or 0.0) if o.get("valid") else 0.0 for o in outs]
    by_metric_fair: dict[str, list[float]] = {}
    by_metric_valid: dict[str, list[float]] = {}
    for o in outs:
        name = str(o.get("metric"))
        if o.get("valid") and o.get("score") is not None:
            by_metric_fair.setdefault(name, []).append(float(o["score"]))
            by_metric_valid.setdefault(name, []).append(float(o["score"]))
        elif o.get("baseline") is not None:
            by_metric_fair.setdefault(name, []).append(float(o["baseline"]))
    return {
        "n": n,
        "n_valid": len(valid),
        "success_rate": len(valid) / n if n else 0.0,
        "mean_relative_fair": float(np.mean(fair_rel)) if n else 0.0,
        "mean_score_fair": {k: float(np.mean(v)) for k, v in sorted(by_metric_fair.items())},
        "mean_relative_valid": float(np.mean([o.get("relative") or 0.0 for o in valid])) if valid else None,
        "mean_score_valid": {k: float(np.mean(v)) for k, v in sorted(by_metric_valid.items())},
    }


# ---------------------------------------------------------------------------------------------- answers


@dataclass
class _Column:
    """One answer column: its canonical values and how submission cells of this column are canonicalised."""

    name: str
    raw: list[str]
    numeric: bool
    bool_words: bool
    values: np.ndarray
    labels: set[Any]

    def canon(self, cell: str) -> Any:
        """Canonical label of a stripped cell (float for numeric columns; None if it cannot be one)."""
        if self.numeric:
            return float(cell) if _NUMBER.match(cell) else None
        if self.bool_words and cell.lower() in ("true", "false"):
            return "True" if cell.lower() == "true" else "False"
        return cell


@dataclass
class _Answers:
    ids: list[str]
    integer_ids: bool
    columns: list[_Column]


def _read_csv(path: Path | io.BytesIO) -> pd.DataFrame:
    """Every cell as a stripped string ("" for empty), header names stripped: parsing is ours, not pandas'."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig")
    df.columns = [str(c).strip() for c in df.columns]
    return df.apply(lambda s: s.str.strip())


def _load_answers(path: Path, m: TabularMeta, metric: Metric) -> _Answers:
    where = f"answers file {path}"
    if not path.is_file():
        raise TaskError(f"{where} does not exist; the task folder needs answers/test_answer.csv")
    try:
        df = _read_csv(path)
    except Exception as e:
        raise TaskError(f"{where} is not a readable CSV ({_one_line(e)})") from None
    need = [m.id_column, *m.target_columns]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise TaskError(f"{where} lacks column(s) {missing}; it has {list(df.columns)}")
    raw_ids = df[m.id_column].tolist()
    integer_ids = all(_INT_ID.match(i) for i in raw_ids) and len({int(i) for i in raw_ids}) == len(raw_ids)
    ids = [_canon_id(i, integer_ids) for i in raw_ids]
    if len(set(ids)) != len(ids) or not ids:
        raise TaskError(f"{where}: the id column {m.id_column!r} is empty or has duplicate ids")
    columns = []
    for name in m.target_columns:
        raw = df[name].tolist()
        if any(v.lower() in NA_TOKENS for v in raw) and metric.prediction not in ("label", "ranking"):
            raise TaskError(f"{where}: column {name!r} has empty/NaN answers")
        numeric = all(_NUMBER.match(v) for v in raw)
        bool_words = not numeric and all(v.lower() in ("true", "false") for v in raw)
        col = _Column(name, raw, numeric, bool_words, np.empty(0), set())
        values = [col.canon(v) for v in raw]
        col.values = np.array(values, dtype=float if numeric else object)
        col.labels = set(values) | _train_labels(m, col)
        columns.append(col)
    return _Answers(ids, integer_ids, columns)


def _train_labels(m: TabularMeta, col: _Column) -> set[Any]:
    """Labels of ``col`` in train.csv: a class absent from the test answers is still a legitimate prediction."""
    if m.task_dir is None:
        return set()
    train = Path(m.task_dir) / "train.csv"
    try:
        values = pd.read_csv(
            train, usecols=[col.name], dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig"
        )[col.name].str.strip()
    except Exception:  # no train file or no such column: the answers' labels alone
        return set()
    return {c for v in values.tolist() if v.lower() not in NA_TOKENS and (c := col.canon(v)) is not None}


def max_submission_bytes(answers: _Answers) -> int:
    """The largest submission read: generous for any honest file (64 bytes a cell, 16 MiB at least), far below
    what would cost the env real memory or time (256 MiB at most)."""
    cells = len(answers.ids) * (1 + len(answers.columns))
    return int(min(MAX_SUBMISSION_BYTES, max(16 * 1024**2, 64 * cells)))


def _canon_id(value: str, integer_ids: bool) -> str:
    """Ids compare as stripped strings; integer ids also accept ``17.0`` (pandas upcasts ids with NaN to float)."""
    if integer_ids and _INTEGRAL.match(value):
        return str(int(float(value)))
    return value


# ---------------------------------------------------------------------------------------------- submission


def _read_submission(
    path: Path, m: TabularMeta, answers: _Answers, metric: Metric
) -> tuple[np.ndarray, np.ndarray]:
    name = path.name
    try:  # the workspace is hostile: a regular file of its own, inside it, of bounded size (see hostio)
        data = hostio.read_bytes(path.parent, name, max_submission_bytes(answers))
    except FileNotFoundError:
        raise _Invalid(f"no submission file: {name} was not written") from None
    except hostio.Refused as e:
        raise _Invalid(str(e)) from None
    try:
        df = _read_csv(io.BytesIO(data))
    except pd.errors.EmptyDataError:
        raise _Invalid(f"{name} is empty") from None
    except Exception as e:
        raise _Invalid(f"{name} is not a readable CSV: {_one_line(e)}") from None

    if m.id_column not in df.columns:
        raise _Invalid(f"{name} has no id column {m.id_column!r}; columns are {_short(list(df.columns))}")
    missing_cols = [c for c in m.target_columns if c not in df.columns]
    if missing_cols:
        raise _Invalid(
            f"{name} lacks target column(s) {missing_cols}; columns are {_short(list(df.columns))}"
        )

    ids = [_canon_id(i, answers.integer_ids) for i in df[m.id_column].tolist()]
    expected = set(answers.ids)
    unknown = [i for i in dict.fromkeys(ids) if i not in expected]
    given = set(ids)
    absent = [i for i in answers.ids if i not in given]
    dupes = [i for i, c in pd.Series(ids, dtype=object).value_counts(sort=False).items() if c > 1]
    problems = {
        "duplicate": f"{len(dupes)} duplicate id(s), e.g. {_examples(dupes)}" if dupes else "",
        "missing": f"{len(absent)} test id(s) missing, e.g. {_examples(absent)}" if absent else "",
        "unknown": f"{len(unknown)} id(s) not in test.csv, e.g. {_examples(unknown)}" if unknown else "",
    }
    detail = "; ".join(p for p in problems.values() if p)
    if len(ids) != len(answers.ids):
        raise _Invalid(
            f"{name} has {len(ids)} rows, expected {len(answers.ids)} (one per test row; {detail})"
        )
    if dupes:
        raise _Invalid(f"{name} has {detail}")
    if detail:
        raise _Invalid(f"{name} ids do not match test.csv: {detail}")

    df.index = ids
    df = df.loc[answers.ids]
    true_cols, pred_cols = [], []
    for col in answers.columns:
        cells = df[col.name].tolist()
        nan_rows = [c for c in cells if c.lower() in NA_TOKENS and c not in col.raw]
        if nan_rows:
            raise _Invalid(f"{name} column {col.name!r} has {len(nan_rows)} empty/NaN value(s)")
        pred_cols.append(_parse_predictions(name, col, cells, metric))
        true_cols.append(col.values)
    if len(true_cols) == 1:
        return true_cols[0], pred_cols[0]
    return _stack(true_cols), _stack(pred_cols)


def _parse_predictions(name: str, col: _Column, cells: list[str], metric: Metric) -> np.ndarray:
    if metric.prediction == "ranking":
        return np.array(cells, dtype=object)
    if metric.prediction == "label":
        values = [col.canon(c) for c in cells]
        bad = [c for c, v in zip(cells, values, strict=True) if v is None or v not in col.labels]
        if bad:
            raise _Invalid(
                f"{name} column {col.name!r} has {len(bad)} label(s) outside the known classes "
                f"{_short(sorted(map(_fmt, col.labels)))}, e.g. {_examples(bad)}"
            )
        return np.array(values, dtype=float if col.numeric else object)
    numbers = pd.to_numeric(pd.Series(cells, dtype=object), errors="coerce").to_numpy(dtype=float)
    bad = [c for c, v in zip(cells, numbers, strict=True) if not math.isfinite(v)]
    if bad:
        raise _Invalid(
            f"{name} column {col.name!r} has {len(bad)} value(s) that are not finite numbers, e.g. {_examples(bad)}"
        )
    return numbers


def _stack(cols: Sequence[np.ndarray]) -> np.ndarray:
    if all(c.dtype.kind == "f" for c in cols):
        return np.column_stack(cols)
    out = np.empty((len(cols[0]), len(cols)), dtype=object)
    for j, c in enumerate(cols):
        out[:, j] = c
    return out


# ---------------------------------------------------------------------------------------------- outcome helpers


def _outcome(m: TabularMeta, score: float | None, reason: str) -> dict:
    valid = score is not None
    rel = relative_score(score, m.baseline, m.best, m.higher_is_better) if valid else 0.0
    return {
        "valid": valid,
        "success": valid,
        "metric": m.metric,
        "score": float(score) if valid else None,
        "relative": rel,
        "reward": rel,
        "reason": reason,
        "baseline": m.baseline,
        "best": m.best,
        "higher_is_better": m.higher_is_better,
        "task_id": m.task_id,
    }


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _examples(items: Sequence[Any], k: int = 3) -> str:
    shown = ", ".join(repr(str(x))[:40] for x in list(items)[:k])
    return shown + (", ..." if len(items) > k else "")


def _short(items: Sequence[Any], k: int = 12) -> str:
    items = list(items)
    return "[" + ", ".join(map(str, items[:k])) + (", ...]" if len(items) > k else "]")


def _one_line(e: BaseException | str) -> str:
    text = " ".join(str(e).split())
    return text[:300]
