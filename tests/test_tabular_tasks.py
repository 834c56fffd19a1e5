"""DSBench-style task folders: the embedded splits, the shared real tasks, broken folders, the generator."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from mappa_envs.tabular.loader import INPUT_FILES, load_dsbench_tasks
from mappa_envs.tabular.scoring import score_submission
from mappa_envs.taskgen import dsbench_gen
from mappa_envs.tasks import TaskError, embedded_path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dsbench"


@pytest.fixture(scope="module")
def embedded() -> dict:
    return {split: load_dsbench_tasks(f"embedded:{split}") for split in ("train", "eval")}


def test_embedded_splits_cover_the_required_mix(embedded):
    train, eval_ = embedded["train"], embedded["eval"]
    assert len(train) >= 8 and len(eval_) >= 4 and len(train) + len(eval_) >= 12
    assert not {t.id for t in train} & {t.id for t in eval_}
    for split in (train, eval_):
        assert {t.meta["task_type"] for t in split} == {"classification", "regression"}
    tasks = [*train, *eval_]
    assert len({t.meta["metric"] for t in tasks}) >= 5
    assert any(len(t.meta["target_columns"]) > 1 and t.meta["task_type"] == "regression" for t in tasks)
    assert any("multi_target" in t.tags for t in tasks)
    assert Counter(t.meta["task_type"] for t in tasks)["classification"] >= 4


def test_tasks_expose_inputs_but_never_the_answers(embedded):
    for task in [*embedded["train"], *embedded["eval"]]:
        assert set(task.files) == set(INPUT_FILES)
        assert all(p.is_file() for p in task.files.values())
        assert all("answer" not in str(p) for p in task.files.values())
        assert task.meta["answers_csv"] not in set(task.files.values())
        assert task.answer is None and task.prompt.startswith("# ")
        assert (
            f"task_type:{task.meta['task_type']}" in task.tags
            and f"metric:{task.meta['metric']}" in task.tags
        )
        assert set(task.meta) >= {
            "task_dir",
            "answers_csv",
            "metric",
            "id_column",
            "target_columns",
            "params",
        }


def test_embedded_baseline_and_best_reproduce(embedded):
    for task in [*embedded["train"], *embedded["eval"]]:
        meta = task.meta
        best = score_submission(meta, meta["answers_csv"], meta["answers_csv"])
        base = score_submission(meta, meta["answers_csv"], task.files["sample_submission.csv"])
        assert best["valid"] and best["relative"] == 1.0, (task.id, best)
        assert base["valid"] and base["relative"] == 0.0, (task.id, base)
        assert base["score"] == pytest.approx(meta["baseline"], abs=1e-9), task.id
        assert best["score"] == pytest.approx(meta["best"], abs=1e-9), task.id
        header = task.files["sample_submission.csv"].read_text().splitlines()[0]
        assert f"\n{header}\n" in task.prompt, task.id  # the description shows the exact header


def test_string_labels_are_present(embedded):
    iris = next(t for t in embedded["train"] if t.id == "iris-species")
    assert "setosa" in iris.meta["answers_csv"].read_text()


def test_single_task_folder_and_bad_sources(embedded):
    one = load_dsbench_tasks(embedded["train"][0].meta["task_dir"])
    assert len(one) == 1 and one[0].id == embedded["train"][0].id
    with pytest.raises(TaskError, match="not a folder"):
        load_dsbench_tasks("/nonexistent/dsbench")
    with pytest.raises(TaskError, match="no embedded dsbench split"):
        load_dsbench_tasks("embedded:nope")


# ---------------------------------------------------------------------------------------------- shared real tasks


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared DSBench examples not present")
def test_shared_dsbench_tasks_load_and_score():
    tasks = load_dsbench_tasks(SHARED)
    assert {"titanic", "spaceship-titanic", "playground-series-s4e2"} <= {t.id for t in tasks}
    titanic = next(t for t in tasks if t.id == "titanic")
    meta = titanic.meta
    assert meta["id_column"] == "PassengerId" and meta["target_columns"] == ["Survived"]
    perfect = score_submission(meta, meta["answers_csv"], meta["answers_csv"])
    assert perfect["valid"] and perfect["relative"] == 1.0 and perfect["score"] == 1.0
    base = score_submission(meta, meta["answers_csv"], titanic.files["sample_submission.csv"])
    assert base["valid"] and base["score"] == pytest.approx(meta["baseline"], abs=1e-6)
    for task in tasks:  # string (s4e2) and True/False (spaceship) labels score too
        sample = score_submission(task.meta, task.meta["answers_csv"], task.files["sample_submission.csv"])
        assert sample["valid"] and sample["score"] == pytest.approx(task.meta["baseline"], abs=1e-6), task.id


# ---------------------------------------------------------------------------------------------- broken folders


@pytest.fixture
def task_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "iris-species"
    shutil.copytree(embedded_path("dsbench", "train") / "iris-species", dst)
    return dst


def edit_meta(task_dir: Path, **changes) -> None:
    path = task_dir / "metric.json"
    meta = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            meta.pop(k)
        else:
            meta[k] = v
    path.write_text(json.dumps(meta))


def _missing_answers(d: Path) -> None:
    (d / "answers" / "test_answer.csv").unlink()


def _bad_json(d: Path) -> None:
    (d / "metric.json").write_text("{metric: accuracy")


def _answers_without_target(d: Path) -> None:
    (d / "answers" / "test_answer.csv").write_text("id,kind\n1,setosa\n")


def _leaky_test(d: Path) -> None:
    p = d / "test.csv"
    lines = p.read_text().splitlines()
    p.write_text("\n".join([lines[0] + ",species", *(line + ",setosa" for line in lines[1:])]) + "\n")


@pytest.mark.parametrize(
    ("breaker", "message"),
    [
        (_missing_answers, r"missing file\(s\) \['answers/test_answer.csv'\]"),
        (lambda d: (d / "train.csv").unlink(), r"missing file\(s\) \['train.csv'\]"),
        (_bad_json, "metric.json is not valid JSON"),
        (lambda d: edit_meta(d, metric="brier"), "unknown metric 'brier'; known metrics: .*accuracy.*rmse"),
        (lambda d: edit_meta(d, id_column=None), r"missing key\(s\) \['id_column'\]"),
        (lambda d: edit_meta(d, higher_is_better=False), "accuracy is higher-is-better"),
        (lambda d: edit_meta(d, target_columns=[]), "non-empty list"),
        (lambda d: edit_meta(d, params={"k": 3}), "takes no parameter"),
        (lambda d: edit_meta(d, task_type="ranking"), "'task_type' must be one of"),
        (
            lambda d: edit_meta(d, target_columns=["kind"]),
            r"answers/test_answer.csv lacks column\(s\) \['kind'\]",
        ),
        (_answers_without_target, r"lacks column\(s\) \['species'\]"),
        (_leaky_test, "test.csv contains the target"),
        (lambda d: (d / "description.md").write_text("  \n"), "description.md is empty"),
    ],
)
def test_broken_task_folder_raises_task_error(task_copy, breaker, message):
    breaker(task_copy)
    with pytest.raises(TaskError, match=message) as info:
        load_dsbench_tasks(task_copy.parent)
    assert "'iris-species'" in str(info.value)


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(TaskError, match="holds no task folders"):
        load_dsbench_tasks(tmp_path)


# ---------------------------------------------------------------------------------------------- generator


def test_generator_is_deterministic(tmp_path):
    ids = ["iris-species", "match-outcome", "loan-default", "delivery-time"]
    rows = dsbench_gen.generate(tmp_path, only=ids)
    assert sorted(r["id"] for r in rows) == sorted(ids)
    for r in rows:
        fresh = tmp_path / r["split"] / r["id"]
        shipped = embedded_path("dsbench", r["split"]) / r["id"]
        files = sorted(p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(shipped) for p in shipped.rglob("*") if p.is_file())
        for rel in files:
            assert (fresh / rel).read_bytes() == (shipped / rel).read_bytes(), f"{r['id']}/{rel} differs"


def test_generator_rejects_unknown_ids(tmp_path):
    with pytest.raises(SystemExit, match="unknown task id"):
        dsbench_gen.generate(tmp_path, only=["nope"])
