"""DSBench-style task folders: the embedded splits, the shared real tasks, broken folders, the generator."""

from __future__ import annotations

import hashlib
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


V1 = json.loads(
    (Path(dsbench_gen.__file__).resolve().parents[2] / "tasks" / "dsbench" / "v1.json").read_text()
)
SOME = ["iris-species", "match-outcome", "loan-default", "delivery-time"]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_public_seeds_reproduce_the_v1_tasks_byte_for_byte(tmp_path):
    rows = dsbench_gen.generate(tmp_path, only=SOME, secret=None)
    assert sorted(r["id"] for r in rows) == sorted(SOME)
    for r in rows:
        want = V1["splits"][r["split"]][r["id"]]["sha256"]
        got = {k: hashlib.sha256(v).hexdigest() for k, v in _files(tmp_path / r["split"] / r["id"]).items()}
        assert got == want, r["id"]


def test_a_secret_decides_the_answers_deterministically_and_keeps_the_sizes(tmp_path):
    a1, a2, b = (tmp_path / n for n in ("a1", "a2", "b"))
    dsbench_gen.generate(a1, only=SOME, secret=b"A" * 32)
    dsbench_gen.generate(a2, only=SOME, secret=b"A" * 32)
    dsbench_gen.generate(b, only=SOME, secret=b"B" * 32)
    for spec in (s for s in dsbench_gen.SPECS if s.id in SOME):
        rel = Path(spec.split) / spec.id
        assert _files(a1 / rel) == _files(a2 / rel), spec.id  # same secret, same bytes
        v1 = V1["splits"][spec.split][spec.id]
        for name in ("train", "test"):
            assert len((a1 / rel / f"{name}.csv").read_text().splitlines()) - 1 == v1[f"rows_{name}"], spec.id
        assert _files(a1 / rel)["answers/test_answer.csv"] != _files(b / rel)["answers/test_answer.csv"], (
            spec.id
        )
        assert "seed derived from the task secret" in (a1 / rel / "metric.json").read_text()
        assert "seed derived" not in (a1 / rel / "description.md").read_text()


def test_embedded_splits_keep_the_v1_task_ids_and_sizes(embedded):
    for split, tasks in embedded.items():
        assert sorted(t.id for t in tasks) == sorted(V1["splits"][split]), split
        for t in tasks:
            v1 = V1["splits"][split][t.id]
            assert len(t.files["test.csv"].read_text().splitlines()) - 1 == v1["rows_test"], t.id
            answers = hashlib.sha256(Path(t.meta["answers_csv"]).read_bytes()).hexdigest()
            assert answers != v1["sha256"]["answers/test_answer.csv"], (
                f"{t.id} still has its public-seed answers"
            )


def test_generator_rejects_unknown_ids(tmp_path):
    with pytest.raises(SystemExit, match="unknown task id"):
        dsbench_gen.generate(tmp_path, only=["nope"], secret=None)
