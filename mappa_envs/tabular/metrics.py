"""Task metrics for tabular (DSBench-style) tasks: one registry, name -> :class:`Metric`.

Why a registry: the reference implementation never computed a task's official metric (it guessed a generic one
from keywords and read only the second column). Here every task names its metric in ``metric.json`` and the
scorer looks it up; an unknown name is a task error listing the known ones.

Conventions every metric function follows (``fn(y_true, y_pred, **params) -> float``):

- Inputs are array-likes with one row per test row, aligned. A 1-D array is one target column; a 2-D array
  ``(n_rows, n_columns)`` holds every target column of the task.
- Column-wise metrics (all except ``log_loss`` and ``mcrmse``) score each column on its own and return the
  mean over columns: e.g. accuracy on two label columns is the mean of the two accuracies (not exact-match),
  and ``roc_auc`` on seven binary columns is the mean AUC (Kaggle's multi-label AUC).
- Joint metrics read the columns together: ``log_loss`` with several columns treats them as the
  probabilities of mutually exclusive classes (answers one-hot, predictions renormalised per row, Kaggle
  style); ``mcrmse`` is the mean over columns of each column's RMSE (so on one column it equals ``rmse``).
- ``Metric.prediction`` says what a submission holds: ``label`` (class labels, compared to the answers'
  labels), ``score`` (any real number, higher = more likely positive), ``probability`` (numbers in [0, 1]),
  ``value`` (real numbers, regression) or ``ranking`` (space-separated labels, best first, for MAP@k).
- Labels arrive canonicalised by the scorer: numeric label columns as floats, others as stripped strings.
  Binary metrics that need a positive class (f1 with ``average="binary"``, roc_auc, single-column log_loss)
  take ``pos_label``; without it the positive class is 1 for {0, 1} labels and ``True`` for {False, True}
  labels, and any other label set is an error asking for ``params.pos_label``.
- Degenerate inputs get a defined value instead of NaN, so a constant baseline submission has a score:
  pearson/spearman of a constant column is 0.0; f1 with no predicted positives is 0.0 (``zero_division=0``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import stats
from sklearn import metrics as skm

Prediction = Literal["label", "score", "probability", "value", "ranking"]

_LOG_LOSS_EPS = 1e-15  # Kaggle's clipping constant, so scores match the leaderboard convention


@dataclass(frozen=True)
class Metric:
    """A named metric: the function, its direction, what predictions it reads, and the params it accepts."""

    name: str
    fn: Callable[..., float]
    higher_is_better: bool
    prediction: Prediction
    doc: str
    params: tuple[str, ...] = ()
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, y_true: Any, y_pred: Any, **params: Any) -> float:
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            raise TypeError(
                f"metric {self.name!r} takes no parameter(s) {unknown}; accepted: {list(self.params)}"
            )
        return float(self.fn(y_true, y_pred, **{**params, **self.fixed}))


# ---------------------------------------------------------------------------------------------- helpers


def _arrays(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """As numpy arrays of equal shape; a single-column 2-D input is squeezed to 1-D."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if t.shape != p.shape:
        raise ValueError(f"y_true has shape {t.shape} but y_pred has shape {p.shape}")
    if t.ndim not in (1, 2) or t.shape[0] == 0:
        raise ValueError(f"expected a non-empty 1-D or 2-D array, got shape {t.shape}")
    return t, p


def _columnwise(fn: Callable[..., float]) -> Callable[..., float]:
    """Lift a one-column metric to several columns: the mean over columns (see the module docstring)."""

    def wrapped(y_true: Any, y_pred: Any, **params: Any) -> float:
        t, p = _arrays(y_true, y_pred)
        if t.ndim == 1:
            return float(fn(t, p, **params))
        return float(np.mean([fn(t[:, j], p[:, j], **params) for j in range(t.shape[1])]))

    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped


def _numeric(a: np.ndarray, what: str) -> np.ndarray:
    try:
        out = a.astype(float)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be numbers ({e})") from None
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{what} must be finite numbers")
    return out


def _is_true_word(v: Any) -> bool | None:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        return v.strip().lower() == "true"
    return None


def _binarize(y_true: np.ndarray, pos_label: Any = None) -> np.ndarray:
    """0/1 truth for a binary metric: ``y_true == pos_label``, or the default positive class (module docstring)."""
    values = list(dict.fromkeys(y_true.tolist()))
    if pos_label is None:
        words = [_is_true_word(v) for v in values]
        if all(w is not None for w in words):
            return np.array([bool(_is_true_word(v)) for v in y_true.tolist()], dtype=float)
        try:
            nums = {float(v) for v in values}
        except (TypeError, ValueError):
            nums = None
        if nums is not None and nums <= {0.0, 1.0}:
            return (np.array([float(v) for v in y_true.tolist()]) == 1.0).astype(float)
        raise ValueError(
            f"cannot tell the positive class among labels {sorted(map(str, values))}; set params.pos_label"
        )
    if all(isinstance(v, str) for v in values) and _is_true_word(pos_label) is not None:
        return np.array([_is_true_word(v) == _is_true_word(pos_label) for v in y_true.tolist()], dtype=float)
    try:
        if all(not isinstance(v, str) for v in values):
            return (y_true.astype(float) == float(pos_label)).astype(float)
    except (TypeError, ValueError):
        pass
    return np.array([str(v) == str(pos_label) for v in y_true.tolist()], dtype=float)


def _label_pos(y_true: np.ndarray, pos_label: Any) -> Any:
    """The positive label in y_true's own type (for sklearn's ``pos_label``)."""
    truth = _binarize(y_true, pos_label)
    hits = y_true[truth == 1]
    if len(hits):
        return hits[0]
    if pos_label is None:  # all-negative truth with an inferred positive class: use the conventional one
        return 1.0 if not isinstance(y_true[0], str) else "True"
    return float(pos_label) if not isinstance(y_true[0], str) else str(pos_label)


def _labels_for_sklearn(t: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sklearn refuses mixed str/float label arrays; compare as strings when either side is not numeric."""
    if t.dtype.kind in "fiub" and p.dtype.kind in "fiub":
        return t, p
    if all(not isinstance(v, str) for v in t.tolist()) and all(not isinstance(v, str) for v in p.tolist()):
        return t.astype(float), p.astype(float)
    return t.astype(str), p.astype(str)


# ---------------------------------------------------------------------------------------------- classification


def _accuracy(t: np.ndarray, p: np.ndarray) -> float:
    """Fraction of rows whose predicted label equals the true label."""
    t, p = _labels_for_sklearn(t, p)
    return skm.accuracy_score(t, p)


def _f1(t: np.ndarray, p: np.ndarray, average: str = "binary", pos_label: Any = None) -> float:
    """F1 of predicted labels; ``average`` binary (needs a positive class), macro, micro or weighted."""
    if average not in ("binary", "macro", "micro", "weighted"):
        raise ValueError(f"f1 average must be binary, macro, micro or weighted, got {average!r}")
    t, p = _labels_for_sklearn(t, p)
    if average != "binary":
        return skm.f1_score(t, p, average=average, zero_division=0)
    pos = _label_pos(t, pos_label)
    return skm.f1_score(t, p, average="binary", pos_label=pos, labels=None, zero_division=0)


def _qwk(t: np.ndarray, p: np.ndarray) -> float:
    """Cohen's kappa with quadratic weights over ordinal labels (1 = perfect, 0 = chance)."""
    t, p = _labels_for_sklearn(t, p)
    return skm.cohen_kappa_score(t, p, weights="quadratic")


def _roc_auc(t: np.ndarray, p: np.ndarray, pos_label: Any = None) -> float:
    """Binary ROC AUC of real-valued scores against the positive class."""
    truth = _binarize(t, pos_label)
    if len(np.unique(truth)) < 2:
        raise ValueError("roc_auc needs both classes among the answers of every column")
    return skm.roc_auc_score(truth, _numeric(p, "roc_auc predictions"))


def _normalized_gini(t: np.ndarray, p: np.ndarray, pos_label: Any = None) -> float:
    """Normalised Gini coefficient = 2 * AUC - 1 (Kaggle's Porto Seguro metric)."""
    return 2.0 * _roc_auc(t, p, pos_label) - 1.0


def _check_probabilities(p: np.ndarray) -> np.ndarray:
    p = _numeric(p, "log_loss predictions")
    if np.any((p < 0) | (p > 1)):
        bad = p[(p < 0) | (p > 1)]
        raise ValueError(
            f"log_loss expects probabilities in [0, 1]; found {bad.size} outside, e.g. {bad[0]:g}"
        )
    return p


def log_loss(y_true: Any, y_pred: Any, pos_label: Any = None) -> float:
    """Cross-entropy. One column: true labels vs P(positive). Several: one-hot answers vs class probabilities.

    Predictions are clipped to [1e-15, 1 - 1e-15] and, with several columns, each row is renormalised to sum to
    1 — Kaggle's convention. (scikit-learn clips at machine epsilon and warns on unnormalised rows, which would
    give a different, warning-laden number.)
    """
    t, p = _arrays(y_true, y_pred)
    p = _check_probabilities(p)
    if t.ndim == 1:
        y = _binarize(t, pos_label)
        q = np.clip(p, _LOG_LOSS_EPS, 1 - _LOG_LOSS_EPS)
        return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))
    y = _numeric(t, "log_loss answers (one-hot class columns)")
    q = np.clip(p, _LOG_LOSS_EPS, 1 - _LOG_LOSS_EPS)
    q = q / q.sum(axis=1, keepdims=True)
    return float(-np.mean(np.sum(y * np.log(q), axis=1)))


def _apk(actual: Any, predicted: list[Any], k: int) -> float:
    """Average precision at k with one relevant item: 1/rank of its first occurrence in the top k, else 0."""
    seen: list[Any] = []
    for i, item in enumerate(predicted[:k]):
        if item == actual and item not in seen:
            return 1.0 / (i + 1)
        seen.append(item)
    return 0.0


def _tokens(cell: Any, numeric: bool) -> list[Any]:
    items = list(cell) if isinstance(cell, (list, tuple, np.ndarray)) else str(cell).split()
    if not numeric:
        return [str(x).strip() for x in items]
    out: list[Any] = []
    for x in items:
        try:
            out.append(float(x))
        except (TypeError, ValueError):
            out.append(str(x))
    return out


def _map_at_k(t: np.ndarray, p: np.ndarray, k: int = 3) -> float:
    """Mean average precision at k: each prediction is up to k space-separated labels, best first."""
    if int(k) != k or k < 1:
        raise ValueError(f"map@k needs a positive integer k, got {k!r}")
    numeric = all(not isinstance(v, str) for v in t.tolist())
    truth = [float(v) if numeric else str(v).strip() for v in t.tolist()]
    return float(
        np.mean([_apk(a, _tokens(c, numeric), int(k)) for a, c in zip(truth, p.tolist(), strict=True)])
    )


# ---------------------------------------------------------------------------------------------- regression


def _values(t: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _numeric(t, "answers"), _numeric(p, "predictions")


def _rmse(t: np.ndarray, p: np.ndarray) -> float:
    """Root mean squared error."""
    return skm.root_mean_squared_error(*_values(t, p))


def _mse(t: np.ndarray, p: np.ndarray) -> float:
    """Mean squared error."""
    return skm.mean_squared_error(*_values(t, p))


def _mae(t: np.ndarray, p: np.ndarray) -> float:
    """Mean absolute error."""
    return skm.mean_absolute_error(*_values(t, p))


def _medae(t: np.ndarray, p: np.ndarray) -> float:
    """Median absolute error."""
    return skm.median_absolute_error(*_values(t, p))


def _r2(t: np.ndarray, p: np.ndarray) -> float:
    """Coefficient of determination (1 = perfect, 0 = predicting the answers' mean, can be negative)."""
    return skm.r2_score(*_values(t, p))


def _rmsle(t: np.ndarray, p: np.ndarray) -> float:
    """Root mean squared log error, sqrt(mean((log1p(pred) - log1p(true))^2)); values must exceed -1."""
    return skm.root_mean_squared_log_error(*_values(t, p))


def _smape(t: np.ndarray, p: np.ndarray) -> float:
    """Symmetric MAPE in percent (0-200), Kaggle's form: mean(2|p - t| / (|t| + |p|)) * 100, with 0/0 = 0."""
    a, f = _values(t, p)
    den = np.abs(a) + np.abs(f)
    ratio = np.divide(2 * np.abs(f - a), den, out=np.zeros_like(den), where=den != 0)
    return float(100 * np.mean(ratio))


def mcrmse(y_true: Any, y_pred: Any) -> float:
    """Mean column-wise RMSE: RMSE of each target column, averaged (equals ``rmse`` for one column)."""
    t, p = _arrays(y_true, y_pred)
    t, p = _values(t, p)
    if t.ndim == 1:
        return float(np.sqrt(np.mean((t - p) ** 2)))
    return float(np.mean(np.sqrt(np.mean((t - p) ** 2, axis=0))))


def _correlation(kind: str) -> Callable[[np.ndarray, np.ndarray], float]:
    def corr(t: np.ndarray, p: np.ndarray) -> float:
        a, b = _values(t, p)
        if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
            return 0.0  # undefined for a constant column; 0 = no measurable association
        r = stats.pearsonr(a, b)[0] if kind == "pearson" else stats.spearmanr(a, b)[0]
        return float(r)

    corr.__name__ = kind
    corr.__doc__ = f"{kind.capitalize()} correlation of predictions with answers (0.0 if either is constant)."
    return corr


# ---------------------------------------------------------------------------------------------- registry


def _m(
    name: str, fn: Callable[..., float], hib: bool, pred: Prediction, doc: str, params=(), fixed=None
) -> Metric:
    return Metric(name, fn, hib, pred, doc, tuple(params), dict(fixed or {}))


_F1_DOC = (
    "F1 of predicted class labels; params average (binary|macro|micro|weighted, default binary), pos_label"
)

METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        _m("accuracy", _columnwise(_accuracy), True, "label", "fraction of correct class labels"),
        _m("f1", _columnwise(_f1), True, "label", _F1_DOC, ("average", "pos_label")),
        _m(
            "f1_micro",
            _columnwise(_f1),
            True,
            "label",
            "micro-averaged F1 of class labels",
            fixed={"average": "micro"},
        ),
        _m(
            "f1_macro",
            _columnwise(_f1),
            True,
            "label",
            "macro-averaged F1 of class labels",
            fixed={"average": "macro"},
        ),
        _m(
            "f1_weighted",
            _columnwise(_f1),
            True,
            "label",
            "support-weighted F1 of class labels",
            fixed={"average": "weighted"},
        ),
        _m("qwk", _columnwise(_qwk), True, "label", "quadratic weighted kappa of ordinal labels"),
        _m(
            "roc_auc",
            _columnwise(_roc_auc),
            True,
            "score",
            "ROC AUC of scores/probabilities for the positive class; several columns = mean AUC; param pos_label",
            ("pos_label",),
        ),
        _m(
            "normalized_gini",
            _columnwise(_normalized_gini),
            True,
            "score",
            "2*AUC-1 of scores for the positive class; param pos_label",
            ("pos_label",),
        ),
        _m(
            "log_loss",
            log_loss,
            False,
            "probability",
            "cross-entropy of probabilities: one column = P(positive) (param pos_label), several = class probabilities",
            ("pos_label",),
        ),
        _m(
            "map@k",
            _columnwise(_map_at_k),
            True,
            "ranking",
            "MAP@k of space-separated ranked labels; param k",
            ("k",),
        ),
        _m("rmse", _columnwise(_rmse), False, "value", "root mean squared error"),
        _m("mse", _columnwise(_mse), False, "value", "mean squared error"),
        _m("mae", _columnwise(_mae), False, "value", "mean absolute error"),
        _m("medae", _columnwise(_medae), False, "value", "median absolute error"),
        _m("r2", _columnwise(_r2), True, "value", "coefficient of determination"),
        _m("rmsle", _columnwise(_rmsle), False, "value", "root mean squared log error (values > -1)"),
        _m("smape", _columnwise(_smape), False, "value", "symmetric mean absolute percentage error, 0-200"),
        _m("mcrmse", mcrmse, False, "value", "mean column-wise root mean squared error"),
        _m("pearson", _columnwise(_correlation("pearson")), True, "value", "Pearson correlation"),
        _m("spearman", _columnwise(_correlation("spearman")), True, "value", "Spearman rank correlation"),
    ]
}

ALIASES: dict[str, str] = {
    "quadratic_weighted_kappa": "qwk",
    "auc": "roc_auc",
    "logloss": "log_loss",
    "median_absolute_error": "medae",
}

_MAP_AT = re.compile(r"^map@(\d+)$")


def known_metrics() -> list[str]:
    """Every accepted metric name (``map@<k>`` stands for any positive k)."""
    return sorted([*METRICS, *ALIASES, "map@<k>"])


def get_metric(name: str) -> Metric:
    """The metric called ``name`` (case-insensitive; aliases and ``map@3``-style names resolved).

    Raises KeyError naming the known metrics, so a task author sees the fix at once.
    """
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key in METRICS:
        return METRICS[key]
    match = _MAP_AT.match(key)
    if match and int(match.group(1)) >= 1:
        base = METRICS["map@k"]
        return Metric(
            key, base.fn, base.higher_is_better, base.prediction, base.doc, (), {"k": int(match.group(1))}
        )
    raise KeyError(f"unknown metric {name!r}; known metrics: {', '.join(known_metrics())}")


def compute(name: str, y_true: Any, y_pred: Any, **params: Any) -> float:
    """Shorthand for ``get_metric(name)(y_true, y_pred, **params)``."""
    return get_metric(name)(y_true, y_pred, **params)
