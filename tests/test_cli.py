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
    play = ["play", "math-chat", "--team", "model", "--config", TINY]
    assert main([*play, "--checkpoint", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_eval_of_a_pruned_checkpoint_lists_the_ones_there_are(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--config", TINY, f"out_dir={run}", "steps=3", "eval_at_start=false"]) == 0
    capsys.readouterr()
    pruned = run / "checkpoints" / "step-000001"  # a run keeps its last two
    assert main(["eval", "--checkpoint", str(pruned)]) == 2
    err = capsys.readouterr().err
    assert (
        f"no checkpoint at {pruned}" in err and "step-000002, step-000003" in err and "Traceback" not in err
    )
    # --resume of the finished run: says so and prints its numbers, runs nothing
    assert (
        main(["train", "--config", TINY, f"out_dir={run}", "steps=3", "eval_at_start=false", "--resume"]) == 0
    )
    out = capsys.readouterr().out
    assert f"the run in {run} is finished: step 3 of 3" in out and "None" not in out
    assert "after 0.0" in out or "after 1.0" in out or "after 0." in out


def test_a_used_run_folder_is_refused_unless_resumed_or_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    train = ["train", "--config", TINY, f"out_dir={run}", "eval_at_start=false"]
    assert main([*train, "steps=1"]) == 0
    first = (run / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main([*train, "steps=2"]) == 2  # a fresh run into a used folder: refused, nothing touched
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert (run / "metrics.jsonl").read_text() == first
    assert main([*train, "steps=2", "lr=0.5", "--resume"]) == 2  # a resume is the same run: same config
    assert "lr: 0.0001 then, 0.5 now" in capsys.readouterr().err
    assert main([*train, "steps=2", "--overwrite"]) == 0  # starts clean: no step-1 checkpoint or row left
    assert [json.loads(r)["step"] for r in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000001", "step-000002"]


def test_play_and_eval_of_a_checkpoint_use_the_env_settings_it_was_trained_with(
    tmp_path, capsys, monkeypatch
):
    import mappa_envs

    run = tmp_path / "run"
    trained = ["env_kwargs={cell_timeout_s: 7, answer_format: boxed_or_statement}", "task_filter=[level:2]"]
    assert (
        main(["train", "--config", TINY, f"out_dir={run}", "steps=1", "eval_at_start=false", *trained]) == 0
    )
    made = []
    real_make = mappa_envs.make

    def spy(env_id, **kwargs):
        env = real_make(env_id, **kwargs)
        made.append((env_id, kwargs, env))
        return env

    monkeypatch.setattr(mappa_envs, "make", spy)
    capsys.readouterr()
    # tiny.yaml says cell_timeout_s: 10 and level:1; the checkpoint's own settings win, and the user is told
    assert main(["play", "math-chat", "--team", "model", "--config", TINY, "--checkpoint", str(run)]) == 0
    assert "was trained with env_kwargs=" in capsys.readouterr().err
    played = [env for _, kwargs, env in made if kwargs.get("cell_timeout_s") == 7]
    assert played and all("level:2" in env.unwrapped.task.tags for env in played if env.unwrapped.task)
    assert all(
        kwargs.get("answer_format") == "boxed_or_statement"
        for _, kwargs, _ in made
        if kwargs.get("reward") != "outcome"
    )
    made.clear()
    assert main(["eval", "--checkpoint", str(run), "eval_episodes=1"]) == 0
    graded = [kwargs for _, kwargs, _ in made if kwargs.get("reward") != "outcome"]
    assert graded and all(
        k["cell_timeout_s"] == 7 and k["answer_format"] == "boxed_or_statement" for k in graded
    )


def test_help_is_plain_text_with_every_option_explained(capsys):
    import argparse

    from mappa_train.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in [("mappa", parser), *sub.choices.items()]:
        for action in command._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"{name}: {action.dest} has no help text"
        text = command.format_help()
        assert "``" not in text and ":class:" not in text and ":func:" not in text, name
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "examples:" in capsys.readouterr().out


def test_config_errors_name_the_key_and_the_fix_without_a_traceback(tmp_path, capsys):
    assert main(["train", "--config", TINY, f"out_dir={tmp_path}", "lr=1e-4"]) == 2
    err = capsys.readouterr().err
    assert "lr: must be a number, got '1e-4' (a string); write 1.0e-4" in err
    assert not (tmp_path / "metrics.jsonl").exists()


def test_the_untrained_default_team_plays_the_env_it_is_asked_to():
    import mappa_train.cli as cli

    args = cli.parse(
        ["play", "math-debate", "--team", "model", "model=tiny"]
    )  # an override after the options
    env = cli.model_env(args)  # no --config, no --checkpoint: the default config, on the env asked for
    try:
        assert (
            env.unwrapped.env_id.startswith("math-debate") and cli._team_config(args)[0].env == "math-debate"
        )
    finally:
        env.close()
    with pytest.raises(SystemExit):
        cli.parse(["play", "math-debate", "--team", "model", "--bogus"])
