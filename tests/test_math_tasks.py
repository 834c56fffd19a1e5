"""Math task loading (lists, files, embedded splits, the reference files) and the embedded-task generator."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from pathlib import Path

import pytest

import mappa_tasks
from mappa_envs.grading.math import grade_math
from mappa_envs.math_tasks import load_math_tasks
from mappa_envs.taskgen import math_gen
from mappa_envs.tasks import TaskError, TaskSet

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REFERENCE = SHARED / "data" / "reference-bench"
REFERENCE_MATH = [
    "AIME_1983_2024.json",
    "aime_2025.json",
    "aime_eval_32.json",
    "amc.json",
    "amc_32.json",
    "amc_eval_32.json",
]
EMBEDDED = mappa_tasks.root() / "math"


# ---------------------------------------------------------------- loaders


def test_load_from_list_with_aliases_defaults_and_meta():
    ts = load_math_tasks(
        [
            {"problem": "What is 1 + 1?", "answer": 2},
            {"prompt": "What is 2 + 2?", "answer": "4", "id": 7, "tags": ["easy"], "source": "me"},
            {"problem": "Half of 1?", "answer": 0.5, "tags": "frac"},
        ]
    )
    assert isinstance(ts, TaskSet) and len(ts) == 3
    assert [t.id for t in ts] == ["task-0", "7", "task-2"]
    assert [t.answer for t in ts] == ["2", "4", "0.5"]
    assert ts[1].prompt == "What is 2 + 2?" and ts[1].tags == ("easy",) and ts[1].meta["source"] == "me"
    assert ts[2].tags == ("frac",)


def test_load_jsonl_and_json_array(tmp_path):
    recs = [{"problem": "p1", "answer": 142.0}, {"problem": "p2", "answer": "023", "id": "x"}]
    jsonl = tmp_path / "mine.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in recs))
    arr = tmp_path / "arr.json"
    arr.write_text(json.dumps(recs, indent=2))
    for path, stem in ((jsonl, "mine"), (str(arr), "arr")):
        ts = load_math_tasks(path)
        assert [t.id for t in ts] == [f"{stem}-0", "x"]
        assert [t.answer for t in ts] == ["142", "023"]


@pytest.mark.parametrize(("split", "minimum"), [("train", 240), ("eval", 120)])
def test_embedded_splits(split, minimum):
    ts = load_math_tasks(f"embedded:{split}")
    assert len(ts) >= minimum and ts.name == f"embedded:{split}"
    assert all(t.id.startswith(f"{split}-") for t in ts)
    assert all(any(tag.startswith("family:") for tag in t.tags) for t in ts)
    assert "expr" in ts[0].meta
    assert len(ts.with_tag("level:1")) > 0


def test_unknown_embedded_split():
    with pytest.raises(TaskError, match="nope"):
        load_math_tasks("embedded:nope")


@pytest.mark.parametrize("name", REFERENCE_MATH)
def test_reference_files_load(name):
    path = REFERENCE / name
    if not path.exists():
        pytest.skip(f"{path} not present (the shared folder is outside the repository)")
    ts = load_math_tasks(path)
    assert len(ts) >= 30
    for t in ts:
        assert t.prompt.strip() and t.answer and not t.answer.endswith(".0")


def test_reference_amc_float_answers_grade():
    path = REFERENCE / "amc.json"
    if not path.exists():
        pytest.skip(f"{path} not present")
    t = load_math_tasks(path)[0]
    assert t.answer == "142" and grade_math("\\boxed{142}", t.answer)["correct"]


@pytest.mark.parametrize(
    ("record", "pattern"),
    [
        ({"answer": "1"}, r"record 1: missing field 'problem'"),
        ({"problem": 5, "answer": "1"}, r"record 1: field 'problem' must be a non-empty string"),
        ({"problem": "  ", "answer": "1"}, r"record 1: field 'problem'"),
        ({"problem": "p"}, r"record 1: missing field 'answer'"),
        ({"problem": "p", "answer": ""}, r"record 1: field 'answer' is empty"),
        ({"problem": "p", "answer": [1]}, r"record 1: field 'answer' is invalid"),
        ({"problem": "p", "answer": True}, r"record 1: field 'answer' is invalid"),
        ({"problem": "p", "answer": "1", "id": 1.5}, r"record 1: field 'id'"),
        ({"problem": "p", "answer": "1", "tags": [1]}, r"record 1: field 'tags'"),
    ],
)
def test_malformed_list_record(record, pattern):
    with pytest.raises(TaskError, match=pattern) as e:
        load_math_tasks([{"problem": "ok", "answer": "1"}, record])
    assert str(e.value).startswith("tasks list")


def test_malformed_file_record_names_the_file(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"problem": "p", "answer": "1"}\n{"problem": "q"}\n')
    with pytest.raises(TaskError, match=r"broken\.jsonl: record 1: missing field 'answer'"):
        load_math_tasks(path)


def test_bad_sources(tmp_path):
    with pytest.raises(TaskError, match="does not exist"):
        load_math_tasks(tmp_path / "missing.json")
    with pytest.raises(TaskError, match="folder"):
        load_math_tasks(tmp_path)
    with pytest.raises(TaskError, match="not a dict"):
        load_math_tasks(["What is 1 + 1?"])
    with pytest.raises(TaskError, match="cannot load"):
        load_math_tasks(42)
    with pytest.raises(TaskError, match="duplicate task id"):
        load_math_tasks([{"problem": "a", "answer": 1, "id": 1}, {"problem": "b", "answer": 2, "id": "1"}])


# ---------------------------------------------------------------- generator


@pytest.fixture(scope="module")
def splits() -> tuple[list[dict], list[dict]]:
    return math_gen.generate()


def test_generator_is_deterministic(splits):
    assert math_gen.generate(0) == splits
    assert math_gen.generate(1) != splits


def test_shipped_files_match_regeneration(splits, tmp_path):
    math_gen.main(["--out", str(tmp_path)])
    for split, records in zip(("train", "eval"), splits, strict=True):
        shipped = (EMBEDDED / f"{split}.jsonl").read_bytes()
        assert (tmp_path / f"{split}.jsonl").read_bytes() == shipped
        assert math_gen.to_jsonl(records).encode() == shipped


def test_sizes_and_record_shape(splits):
    train, eval_ = splits
    assert len(train) >= 240 and len(eval_) >= 120
    for r in train + eval_:
        assert set(r) == {"id", "problem", "answer", "tags", "meta"}
        assert r["problem"].endswith(" Put your final answer in \\boxed{}.")
        assert str(int(r["answer"])) == r["answer"]
        assert r["tags"][0].startswith("family:") and r["tags"][1] in {f"level:{n}" for n in math_gen.LEVELS}


def _key(r: dict) -> str:
    return json.dumps([r["tags"][0], r["meta"]["params"]], sort_keys=True)


def test_splits_are_disjoint(splits):
    train, eval_ = splits
    for field in (lambda r: r["problem"], _key):
        tr, ev = [field(r) for r in train], [field(r) for r in eval_]
        assert len(set(tr)) == len(tr) and len(set(ev)) == len(ev)
        assert not set(tr) & set(ev)


def test_splits_are_stratified(splits):
    cells = {(f"family:{f}", f"level:{n}") for f in math_gen.FAMILIES for n in math_gen.LEVELS}
    assert len(math_gen.FAMILIES) >= 8
    for records in splits:
        counts = Counter(tuple(r["tags"]) for r in records)
        assert set(counts) == cells
        assert max(counts.values()) - min(counts.values()) <= 1
        assert {tuple(r["tags"]) for r in records[: len(cells)]} == cells  # any prefix is mixed


ONE_STEP = ["--prefix", "one-step-", "--levels", "1", "--families", "addition,multiplication,word_problem"]


def test_one_step_splits_match_regeneration_and_hold_only_their_cells(tmp_path):
    """The shipped easier mix is regenerated byte for byte from its documented command, and holds only its cells."""
    math_gen.main(["--out", str(tmp_path), *ONE_STEP, "--n-train", "96", "--n-eval", "48"])
    sets = {}
    for split in ("train", "eval"):
        shipped = (EMBEDDED / f"one-step-{split}.jsonl").read_bytes()
        assert (tmp_path / f"one-step-{split}.jsonl").read_bytes() == shipped
        sets[split] = load_math_tasks(f"embedded:one-step-{split}")
        assert all(t.id.startswith(f"one-step-{split}-") for t in sets[split])
        cells = Counter(tuple(t.tags) for t in sets[split])
        assert set(cells) == {
            (f"family:{f}", "level:1") for f in ("addition", "multiplication", "word_problem")
        }
        assert max(cells.values()) == min(cells.values())
    assert len(sets["train"]) == 96 and len(sets["eval"]) == 48
    assert not {t.prompt for t in sets["train"]} & {t.prompt for t in sets["eval"]}


def test_generator_rejects_unknown_families_and_levels():
    with pytest.raises(ValueError, match="unknown or empty.*families: addition"):
        math_gen.generate(families=["algebra"])
    with pytest.raises(ValueError, match="unknown or empty"):
        math_gen.generate(levels=[7])
    with pytest.raises(ValueError, match="found only"):  # level-1 powers have ~23 distinct problems
        math_gen.generate(n_train=100, n_eval=100, families=["power"], levels=[1])


def test_level_one_is_trivial(splits):
    easy = [r for r in splits[0] if r["tags"][1] == "level:1"]
    assert all(len(r["problem"]) < 160 and abs(int(r["answer"])) <= 225 for r in easy)
    assert any(r["problem"].startswith("What is ") and " + " in r["problem"] for r in easy)


SAFE = {
    "__builtins__": {},
    "math": math,
    "sum": sum,
    "int": int,
    "str": str,
    "range": range,
    "pow": pow,
    "next": next,
}


def test_answers_match_stored_expressions(splits):
    for r in splits[0] + splits[1]:
        assert str(eval(r["meta"]["expr"], SAFE)) == r["answer"], r  # noqa: S307 - our own generated expressions
        assert grade_math(f"\\boxed{{{r['answer']}}}", r["answer"])["correct"]


def test_answers_recomputed_independently(splits):
    for r in splits[0] + splits[1]:
        family, p, ans = r["tags"][0].removeprefix("family:"), r["meta"]["params"], int(r["answer"])
        if family == "linear_equation" and "eqs" not in p:
            assert p["a"] * ans + p["b"] == p["c"] * ans + p["d"]
        elif family == "linear_equation":
            solutions = [
                x + y
                for x, y in itertools.product(range(-12, 21), repeat=2)
                if all(a * x + b * y == c for a, b, c in p["eqs"])
            ]
            assert solutions == [ans]
        elif family == "power":
            value = 1
            for _ in range(p["exp"]):
                value = value * p["base"] % p.get("mod", 10**9)
            assert ans == value
        elif family == "digit_sum" and p["kind"] == "number":
            assert ans == sum(map(int, str(p["n"])))
        elif family == "addition":
            assert ans == sum(p["terms"])
        elif family == "counting" and p["kind"] == "pairs":
            assert ans == len(list(itertools.combinations(range(p["n"]), 2)))
        elif family == "gcd_lcm" and p["kind"] == "gcd" and max(p["nums"]) < 10**4:
            assert ans == max(d for d in range(1, min(p["nums"]) + 1) if all(n % d == 0 for n in p["nums"]))
