"""`mappa bench`: a suite runs as an arm x seed grid, a second call keeps what finished and resumes what did not,
and the leaderboard pairs every arm with the baseline seed by seed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from mappa_train.benchmark import Suite, SuiteError, finished, mean_interval, report, run_grid

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "configs" / "tiny.yaml"


def _suite(tmp_path: Path, **extra) -> Path:
    data = {
        "name": "tiny-grid",
        "config": str(TINY),
        "overrides": {
            "steps": 2,
            "checkpoint_every": 1,
            "episodes_per_step": 2,
            "parallel_envs": 2,
            "eval_episodes": 2,
            "mask_truncated": False,
        },
        "seeds": [0, 1],
        "baseline": "outcome",
        "arms": {"coach": {"reward": "coach"}, "outcome": {"reward": "outcome"}},
        **extra,
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_suite_errors_name_the_problem(tmp_path):
    with pytest.raises(SuiteError, match="baseline 'nope'"):
        Suite.load(_suite(tmp_path, baseline="nope"))
    with pytest.raises(SuiteError, match="unknown keys"):
        Suite.load(_suite(tmp_path, steps=3))
    with pytest.raises(SuiteError, match="may not contain '-seed'"):
        Suite.load(_suite(tmp_path, arms={"a-seed1": {}}))
    with pytest.raises(SuiteError, match="unknown arms"):
        Suite.load(_suite(tmp_path)).runs(["grpo"])


def test_grid_order_is_seed_by_seed(tmp_path):
    runs = Suite.load(_suite(tmp_path)).runs()
    assert [r.folder for r in runs] == [
        "untrained",
        "coach-seed0",
        "outcome-seed0",
        "coach-seed1",
        "outcome-seed1",
    ]
    assert runs[0].overrides["steps"] == 0 and runs[2].overrides == {
        **runs[2].overrides,
        "reward": "outcome",
        "seed": 0,
    }


def test_mean_interval_by_hand():
    mean, low, high = mean_interval([0.2, 0.4, 0.6])
    # sd 0.2, t(0.975, 2) = 4.3027, half = 4.3027 * 0.2 / sqrt(3) = 0.4968
    assert mean == pytest.approx(0.4)
    assert (low, high) == pytest.approx((0.4 - 0.4968, 0.4 + 0.4968), abs=1e-3)


@pytest.mark.slow
def test_grid_runs_resumes_and_reports(tmp_path):
    suite = Suite.load(REPO / "bench" / "suites" / "tiny.yaml")
    out = tmp_path / "grid"
    trained: list[str] = []

    def train(config, resume):
        trained.append(f"{Path(config.out_dir).name}:{'resume' if resume else 'fresh'}")
        from mappa_train.trainer import Trainer

        Trainer(config).fit(resume=resume)

    folders = run_grid(suite, out, train=train, log=lambda s: None)
    assert trained == [f"{f.name}:fresh" for f in folders]
    assert all(finished(f, 0 if f.name == "untrained" else 2) for f in folders)
    assert json.loads((out / "coach-hindsight-seed1" / "config.json").read_text())["seed"] == 1

    # a run killed during its last step: no final checkpoint, no final row; the rest of the grid is kept
    killed = out / "outcome-seed1"
    shutil.rmtree(killed / "checkpoints" / "step-000002")
    rows = [
        line
        for line in (killed / "metrics.jsonl").read_text().splitlines()
        if json.loads(line).get("step") != 2
    ]
    (killed / "metrics.jsonl").write_text("".join(line + "\n" for line in rows))
    trained.clear()
    run_grid(suite, out, train=train, log=lambda s: None)
    assert trained == ["outcome-seed1:resume"]
    assert finished(killed, 2)

    board = report(suite, out, folders).read_text()
    assert "| coach-hindsight | 2 |" in board and "| outcome | 2 |" in board
    assert "minus outcome, paired" in board
    assert (out / "leaderboard.png").exists()


def test_cli_dry_run_lists_the_grid(capsys):
    from mappa_train.cli import main

    assert (
        main(["bench", str(REPO / "bench" / "suites" / "tiny.yaml"), "--dry-run", "--arms", "outcome"]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0].rsplit("/", 1)[-1] for line in lines] == [
        "untrained",
        "outcome-seed0",
        "outcome-seed1",
    ]
    assert main(["bench", str(REPO / "bench" / "suites" / "tiny.yaml"), "--dry-run", "--arms", "nope"]) == 2


@pytest.mark.parametrize("path", sorted((REPO / "bench" / "suites").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_suites_build_valid_configs(path, tmp_path):
    from mappa_train.benchmark import run_config

    suite = Suite.load(path)
    for run in suite.runs(seeds=suite.seeds[:1]):
        config = run_config(suite, run, tmp_path / run.folder)
        assert config.seed == run.overrides.get("seed", config.seed)
