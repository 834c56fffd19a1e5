"""The ``mappa`` command line: envs, play (scripted and model teams), train, eval, and its error paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mappa_train.cli import main

TINY = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")


def test_envs_lists_the_registry(capsys):
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    for env_id in ("math-chat-v0", "math-debate-v0", "dsbench-3agent-v0"):
        assert env_id in out


def test_play_scripted_prints_per_action_coach_scores(capsys):
    assert main(["play", "math-chat", "--team", "scripted", "--tasks", "embedded:eval"]) == 0
    out = capsys.readouterr().out
    assert "coach" in out and "/10" in out and "══ outcome:" in out
    succeeded = json.loads(out.split("══ outcome: ")[1].splitlines()[0])["success"]
    assert f"{int(succeeded)}/1 episodes succeeded" in out


def test_play_unknown_team_names_the_choices(capsys):
    assert main(["play", "math-chat", "--team", "gpt5"]) == 2
    assert "available: model, scripted" in capsys.readouterr().err


def test_train_then_play_and_eval_the_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--config", TINY, f"out_dir={run}", "steps=1", "progress=false"]) == 0
    out = capsys.readouterr().out
    assert "held-out success: before" in out and str(run) in out
    assert main(["play", "math-chat", "--team", "model", "--config", TINY, "--checkpoint", str(run)]) == 0
    out = capsys.readouterr().out
    assert "adapters from" in out and "step-000001" in out and "episodes succeeded" in out
    assert (
        main(
            [
                "eval",
                "--config",
                TINY,
                "--checkpoint",
                str(run / "checkpoints" / "step-000001"),
                "progress=false",
            ]
        )
        == 0
    )
    assert '"eval/success_rate"' in capsys.readouterr().out
    # --log: the evaluation lands in the config's out_dir like the trainer's own, once per step
    logged = tmp_path / "logged"
    evaluate = ["eval", "--config", TINY, "--checkpoint", str(run / "checkpoints" / "step-000001"), "--log"]
    assert main([*evaluate, f"out_dir={logged}", "progress=false"]) == 0
    (row,) = [json.loads(line) for line in (logged / "metrics.jsonl").read_text().splitlines()]
    assert row["step"] == 1 and row["episodes_seen"] > 0 and "eval/success_rate" in row
    episodes = [json.loads(line) for line in (logged / "transcripts.jsonl").read_text().splitlines()]
    assert episodes and {(e["step"], e["split"]) for e in episodes} == {(1, "eval")}
    assert main([*evaluate, f"out_dir={logged}", "progress=false"]) == 2
    assert "already has a held-out evaluation at step 1" in capsys.readouterr().err
    assert len((logged / "metrics.jsonl").read_text().splitlines()) == 1
    # the untrained team (no checkpoint) is step 0: appended, the step-1 row kept
    assert main(["eval", "--config", TINY, "--log", f"out_dir={logged}", "progress=false"]) == 0
    steps = [json.loads(line)["step"] for line in (logged / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 0]
    with pytest.raises(SystemExit, match="no checkpoint at"):
        main(
            [
                "play",
                "math-chat",
                "--team",
                "model",
                "--config",
                TINY,
                "--checkpoint",
                str(tmp_path / "nothing"),
            ]
        )
