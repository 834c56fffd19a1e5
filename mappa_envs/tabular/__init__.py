"""Tabular (DSBench-style) tasks: metrics, loading task folders, and scoring ``submission.csv`` files."""

from mappa_envs.tabular.loader import load_dsbench_tasks, load_task
from mappa_envs.tabular.meta import TabularMeta
from mappa_envs.tabular.metrics import METRICS, Metric, get_metric, known_metrics
from mappa_envs.tabular.scoring import aggregate, invalid_outcome, relative_score, score_submission

__all__ = [
    "METRICS",
    "Metric",
    "TabularMeta",
    "aggregate",
    "get_metric",
    "invalid_outcome",
    "known_metrics",
    "load_dsbench_tasks",
    "load_task",
    "relative_score",
    "score_submission",
]
