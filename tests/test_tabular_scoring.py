"""Tabular metrics against hand-computed numbers, and submission scoring: matching, validity, fair aggregates."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mappa_envs.tabular.metrics import METRICS, get_metric, known_metrics
from mappa_envs.tabular.scoring import aggregate, invalid_outcome, relative_score, score_submission
from mappa_envs.tasks import TaskError

# ---------------------------------------------------------------------------------------------- metrics


def m(name: str, y_true, y_pred, **params) -> float:
    return get_metric(name)(y_true, y_pred, **params)


@pytest.mark.parametrize(
    ("name", "y_true", "y_pred", "params", "expected"),
    [
        ("accuracy", ["a", "b", "c", "a"], ["a", "b", "a", "a"], {}, 0.75),
        # tp=2 fp=1 fn=1 -> P = R = 2/3
        ("f1", [1, 1, 0, 0, 1], [1, 0, 0, 1, 1], {}, 2 / 3),
        ("f1", ["yes", "no", "yes"], ["yes", "yes", "no"], {"pos_label": "yes"}, 0.5),
        # per class F1: 0.5, 0.8, 2/3
        ("f1", [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0], {"average": "macro"}, (0.5 + 0.8 + 2 / 3) / 3),
        ("f1_macro", [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0], {}, (0.5 + 0.8 + 2 / 3) / 3),
        ("f1_micro", [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0], {}, 4 / 6),
        ("f1_weighted", [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0], {}, (0.5 + 0.8 + 2 / 3) / 3),
        # 3 of 4 positive/negative pairs ranked right
        ("roc_auc", [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], {}, 0.75),
        ("roc_auc", ["False", "False", "True", "True"], [0.1, 0.4, 0.35, 0.8], {}, 0.75),
        ("roc_auc", ["n", "n", "y", "y"], [0.1, 0.4, 0.35, 0.8], {"pos_label": "y"}, 0.75),
        ("normalized_gini", [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], {}, 0.5),
        ("log_loss", [1, 0], [0.8, 0.4], {}, -(math.log(0.8) + math.log(0.6)) / 2),
        # second row renormalised to (0.25, 0.25, 0.5)
        (
            "log_loss",
            [[1, 0, 0], [0, 1, 0]],
            [[0.5, 0.25, 0.25], [0.2, 0.2, 0.4]],
            {},
            -(math.log(0.5) + math.log(0.25)) / 2,
        ),
        ("rmse", [1, 2, 3], [1, 2, 5], {}, math.sqrt(4 / 3)),
        ("mse", [1, 2, 3], [1, 2, 5], {}, 4 / 3),
        ("mae", [1, 2, 3], [1, 2, 5], {}, 2 / 3),
        ("medae", [1, 2, 3], [1, 2, 5], {}, 0.0),
        ("r2", [1, 2, 3], [1, 2, 5], {}, -1.0),  # SS_res 4, SS_tot 2
        ("rmsle", [0, math.e - 1], [math.e - 1, math.e - 1], {}, math.sqrt(0.5)),
        ("smape", [100, 0], [110, 0], {}, 100 * (20 / 210) / 2),  # 0/0 counts 0
        # O = [[1,1],[0,2]], E = [[.5,1.5],[.5,1.5]] -> 1 - 1/2
        ("qwk", [0, 0, 1, 1], [0, 1, 1, 1], {}, 0.5),
        ("quadratic_weighted_kappa", [1, 2, 3], [1, 2, 3], {}, 1.0),
        ("map@3", ["a", "b", "c"], ["a b c", "c b a", "x y z"], {}, (1 + 1 / 2 + 0) / 3),
        ("map@3", ["c"], ["b b c"], {}, 1 / 3),
        ("map@k", ["a", "b"], ["a b", "a b"], {"k": 1}, 0.5),
        ("map@2", [1, 2], ["1 2", "1 2.0"], {}, (1 + 1 / 2) / 2),  # numeric labels compare as numbers
        ("mcrmse", [[0, 0], [0, 0]], [[1, 2], [1, 2]], {}, 1.5),
        ("pearson", [1, 2, 3], [2, 4, 7], {}, 5 / (math.sqrt(2) * math.sqrt(38 / 3))),
        ("pearson", [1, 2, 3], [5, 5, 5], {}, 0.0),  # constant prediction: defined as 0
        ("spearman", [1, 2, 3, 4], [1, 3, 2, 4], {}, 0.8),  # 1 - 6*2/(4*15)
        # column-wise: mean of per-column accuracies 1.0 and 0.5
        ("accuracy", [[1, "a"], [0, "b"]], [[1, "a"], [0, "a"]], {}, 0.75),
        ("rmse", [[0, 0], [0, 0]], [[1, 2], [1, 2]], {}, 1.5),
        (
            "roc_auc",
            [[0, 0], [0, 0], [1, 1], [1, 1]],
            [[0.1, 0.1], [0.4, 0.2], [0.35, 0.3], [0.8, 0.4]],
            {},
            0.875,
        ),
    ],
)
def test_metric_matches_hand_computed_value(name, y_true, y_pred, params, expected):
    assert m(name, y_true, y_pred, **params) == pytest.approx(expected, abs=1e-9)


def test_metric_directions_and_names():
    lower = {"log_loss", "rmse", "mse", "mae", "medae", "rmsle", "smape", "mcrmse"}
    for name, metric in METRICS.items():
        assert metric.higher_is_better == (name not in lower), name
    assert get_metric("QWK").name == "qwk"
    assert get_metric("map@5").fixed == {"k": 5}
    assert "map@<k>" in known_metrics() and "f1_micro" in known_metrics()
    with pytest.raises(KeyError, match="known metrics: .*accuracy"):
        get_metric("brier")


def test_metric_rejects_bad_inputs_with_clear_messages():
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        m("log_loss", [0, 1], [0.5, 1.7])
    with pytest.raises(ValueError, match="pos_label"):
        m("f1", ["cat", "dog"], ["cat", "cat"])
    with pytest.raises(TypeError, match="no parameter"):
        m("rmse", [1.0], [1.0], k=3)


# ---------------------------------------------------------------------------------------------- a tiny task


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def cls_task(tmp_path: Path) -> dict:
    """Binary string labels: 4 test rows, train also knows the class 'maybe'."""
    tmp_path = tmp_path / "cls"
    write(tmp_path / "train.csv", "id,x,label\n1,0.1,yes\n2,0.2,no\n3,0.3,maybe\n")
    answers = write(tmp_path / "answers.csv", "id,label\n10,yes\n11,no\n12,yes\n13,no\n")
    meta = {
        "metric": "accuracy",
        "id_column": "id",
        "target_columns": ["label"],
        "higher_is_better": True,
        "baseline": 0.5,
        "best": 1.0,
        "task_type": "classification",
        "task_dir": tmp_path,
    }
    return {"meta": meta, "answers": answers, "dir": tmp_path}


@pytest.fixture
def reg_task(tmp_path: Path) -> dict:
    """Two regression targets, all answers 0, so a constant prediction c has RMSE |c|."""
    tmp_path = tmp_path / "reg"
    answers = write(tmp_path / "answers.csv", "id,y,z\n1,0,0\n2,0,0\n3,0,0\n4,0,0\n")
    meta = {
        "metric": "rmse",
        "id_column": "id",
        "target_columns": ["y", "z"],
        "higher_is_better": False,
        "baseline": 10.0,
        "best": 0.0,
        "task_type": "regression",
    }
    return {"meta": meta, "answers": answers, "dir": tmp_path}


def score(task: dict, text: str | None, name: str = "submission.csv") -> dict:
    sub = task["dir"] / name
    if text is not None:
        write(sub, text)
    return score_submission(task["meta"], task["answers"], sub)


def test_rows_are_matched_by_id_not_position(cls_task):
    ordered = score(cls_task, "id,label\n10,yes\n11,no\n12,yes\n13,yes\n")
    shuffled = score(cls_task, "id,label\n13,yes\n12,yes\n10,yes\n11,no\n", "shuffled.csv")
    assert ordered["valid"] and shuffled["valid"]
    assert ordered["score"] == shuffled["score"] == 0.75
    assert ordered["relative"] == pytest.approx(0.5)  # (0.75 - 0.5) / (1 - 0.5)
    assert ordered["reward"] == ordered["relative"] and ordered["success"] is True and ordered["reason"] == ""


def test_perfect_submission_with_lenient_formatting(cls_task):
    # extra column, spaces, a train-only class is still a legal label, integer ids written as floats
    out = score(cls_task, "id , label,extra\n10.0, yes,1\n11,no,2\n12,yes,3\n13,maybe,4\n")
    assert out["valid"], out["reason"]
    assert out["score"] == 0.75


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (None, "no submission file"),
        ("", "is empty"),
        ('id,label\n10,"yes\n11,no\n', "not a readable CSV"),
        ("row,label\n10,yes\n11,no\n12,yes\n13,no\n", "no id column 'id'"),
        ("id,pred\n10,yes\n11,no\n12,yes\n13,no\n", "lacks target column(s) ['label']"),
        ("id,label\n10,yes\n11,no\n12,yes\n", "has 3 rows, expected 4"),
        ("id,label\n10,yes\n10,no\n12,yes\n13,no\n", "duplicate id"),
        ("id,label\n10,yes\n11,no\n12,yes\n99,no\n", "not in test.csv"),
        ("id,label\n10,yes\n11,\n12,yes\n13,NaN\n", "2 empty/NaN value(s)"),
        ("id,label\n10,yes\n11,no\n12,YES!\n13,no\n", "outside the known classes"),
    ],
)
def test_invalid_submissions_fail_with_a_reason(cls_task, text, reason):
    out = score(cls_task, text)
    assert out["valid"] is False and out["success"] is False
    assert out["score"] is None and out["reward"] == 0.0 and out["relative"] == 0.0
    assert reason in out["reason"], out["reason"]
    assert "\n" not in out["reason"]


def test_unreadable_binary_file_is_invalid(cls_task):
    (cls_task["dir"] / "submission.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    out = score(cls_task, None)
    assert not out["valid"] and out["reason"]


def test_submission_that_is_a_folder_is_invalid(cls_task):
    (cls_task["dir"] / "submission.csv").mkdir()
    assert "not a file" in score(cls_task, None)["reason"]


def test_unparseable_numbers_are_invalid(reg_task):
    out = score(reg_task, "id,y,z\n1,0,0\n2,abc,0\n3,0,inf\n4,0,0\n")
    assert not out["valid"] and "column 'y'" in out["reason"] and "not finite numbers" in out["reason"]


def test_probability_outside_unit_interval_is_invalid(tmp_path):
    answers = write(tmp_path / "a.csv", "id,p\n1,1\n2,0\n")
    meta = {
        "metric": "log_loss",
        "id_column": "id",
        "target_columns": ["p"],
        "higher_is_better": False,
        "baseline": 0.69,
        "best": 0.0,
        "task_type": "classification",
    }
    out = score_submission(meta, answers, write(tmp_path / "s.csv", "id,p\n1,1.5\n2,0.1\n"))
    assert not out["valid"] and "log_loss cannot be computed" in out["reason"]


def test_every_target_column_is_scored_and_relative_is_direction_aware(reg_task):
    # column errors: y all 3 -> rmse 3; z all 5 -> rmse 5; mean 4 -> relative (4 - 10) / (0 - 10) = 0.6
    out = score(reg_task, "id,y,z\n4,3,5\n3,3,5\n2,3,5\n1,3,5\n")
    assert out["valid"] and out["score"] == pytest.approx(4.0)
    assert out["relative"] == pytest.approx(0.6)
    worse = score(reg_task, "id,y,z\n1,30,0\n2,30,0\n3,30,0\n4,30,0\n", "worse.csv")
    assert worse["valid"] and worse["score"] == pytest.approx(15.0) and worse["relative"] == 0.0


def test_relative_score_formula():
    assert relative_score(0.8, 0.5, 1.0, True) == pytest.approx(0.6)
    assert relative_score(0.2, 0.5, 1.0, True) == 0.0
    assert relative_score(2.0, 10.0, 0.0, False) == pytest.approx(0.8)
    assert relative_score(-1.0, 10.0, 0.0, False) == 1.0  # clipped
    assert relative_score(1.0, 1.0, 1.0, True) == 1.0 and relative_score(0.9, 1.0, 1.0, True) == 0.0


def test_bool_labels_compare_case_insensitively(tmp_path):
    answers = write(tmp_path / "a.csv", "PassengerId,Transported\n0001_01,False\n0002_01,True\n")
    meta = {
        "metric": "accuracy",
        "id_column": "PassengerId",
        "target_columns": ["Transported"],
        "higher_is_better": True,
        "baseline": 0.5,
        "best": 1.0,
        "task_type": "classification",
    }
    out = score_submission(
        meta, answers, write(tmp_path / "s.csv", "PassengerId,Transported\n0002_01,true\n0001_01,FALSE\n")
    )
    assert out["valid"] and out["score"] == 1.0
    # string ids are not numbers: '1_01' is not '0001_01'
    bad = score_submission(
        meta, answers, write(tmp_path / "t.csv", "PassengerId,Transported\n1_01,False\n2_01,True\n")
    )
    assert not bad["valid"] and "do not match" in bad["reason"]


def test_broken_answers_raise_task_error(tmp_path, cls_task):
    sub = write(tmp_path / "s.csv", "id,label\n10,yes\n")
    with pytest.raises(TaskError, match="does not exist"):
        score_submission(cls_task["meta"], tmp_path / "missing.csv", sub)
    with pytest.raises(TaskError, match="lacks column"):
        score_submission(cls_task["meta"], write(tmp_path / "bad.csv", "id,other\n10,yes\n"), sub)


def test_aggregate_counts_failures_at_baseline(reg_task, cls_task):
    good = score(reg_task, "id,y,z\n1,3,5\n2,3,5\n3,3,5\n4,3,5\n")  # rmse 4, relative 0.6
    failed = score(reg_task, "id,y\n1,3\n", "bad.csv")  # rmse counted at baseline 10
    also_failed = invalid_outcome(reg_task["meta"], "kernel died\nbefore writing")
    acc = score(cls_task, "id,label\n10,yes\n11,no\n12,yes\n13,no\n")  # accuracy 1.0
    agg = aggregate([good, failed, also_failed, acc])
    assert agg["n"] == 4 and agg["n_valid"] == 2 and agg["success_rate"] == 0.5
    assert agg["mean_relative_fair"] == pytest.approx((0.6 + 0 + 0 + 1.0) / 4)
    assert agg["mean_score_fair"] == {"accuracy": 1.0, "rmse": pytest.approx((4 + 10 + 10) / 3)}
    assert agg["mean_score_valid"] == {"accuracy": 1.0, "rmse": pytest.approx(4.0)}
    assert agg["mean_relative_valid"] == pytest.approx(0.8)
    assert also_failed["reason"] == "kernel died before writing"
    assert aggregate([])["success_rate"] == 0.0
