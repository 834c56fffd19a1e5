"""The experiment report: step-0 sharing, rollouts-to-target, lift, and the files it writes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from mappa_train.report import load_arm, main, rollouts_to_reach, summary_table


def _run(root: Path, name: str, rows: list[dict]) -> Path:
    run = root / name
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def _eval(step: int, seen: int, success: float, **extra: float) -> dict:
    return {
        "step": step,
        "episodes_seen": seen,
        "eval/success_rate": success,
        "eval/mean_outcome_reward": success,
        **extra,
    }


def _arms(tmp_path: Path) -> tuple[Path, Path, Path]:
    untrained = _run(tmp_path, "untrained", [_eval(0, 0, 0.10, **{"eval_by_tag/level:1/coach": 0.3})])
    train = {"reward/solver": 0.4, "reward/verifier": 0.2}
    outcome = _run(
        tmp_path,
        "outcome",
        [{"step": 1, "episodes_seen": 20, **train}, _eval(2, 40, 0.15, **train), _eval(4, 80, 0.20, **train)],
    )
    coach = _run(tmp_path, "coach", [_eval(2, 40, 0.25, **train), _eval(4, 80, 0.35, **train)])
    return untrained, outcome, coach


def test_arms_share_the_untrained_step_zero_and_reach_the_target(tmp_path):
    untrained_dir, outcome_dir, coach_dir = _arms(tmp_path)
    untrained = load_arm(untrained_dir)
    outcome, coach = load_arm(outcome_dir, untrained), load_arm(coach_dir, untrained)
    assert coach.curve() == [(0, 0.10), (40, 0.25), (80, 0.35)]
    assert len(outcome.rows) == 3 and outcome.final == 0.20
    assert rollouts_to_reach(coach, outcome.final) == 40
    assert rollouts_to_reach(outcome, outcome.final) == 80
    assert rollouts_to_reach(untrained, outcome.final) is None
    table = summary_table([untrained, coach, outcome], untrained, outcome)
    coach_line = next(line for line in table.splitlines() if line.startswith("| coach"))
    assert "+25.0" in coach_line and "40 (0.50×)" in coach_line
    assert "never" in next(line for line in table.splitlines() if line.startswith("| untrained"))


def test_main_writes_plots_and_the_by_tag_table(tmp_path, capsys):
    untrained_dir, outcome_dir, coach_dir = _arms(tmp_path)
    out = tmp_path / "docs" / "math"
    assert (
        main(
            [
                str(coach_dir),
                "--untrained",
                str(untrained_dir),
                "--outcome",
                str(outcome_dir),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (tmp_path / "docs" / "math-success.png").stat().st_size > 0
    assert (tmp_path / "docs" / "math-roles.png").stat().st_size > 0
    assert "| level:1 | 0.300 |" in (tmp_path / "docs" / "math-by-tag.md").read_text()
    assert "| coach |" in capsys.readouterr().out


def test_seeds_are_grouped_into_arms_with_spread_and_paired_comparison(tmp_path, capsys):
    untrained_dir, outcome_dir, coach_dir = _arms(
        tmp_path
    )  # seed 0: outcome 0.15 -> 0.20, coach 0.25 -> 0.35
    _run(tmp_path, "outcome-seed1", [_eval(2, 40, 0.10), _eval(4, 80, 0.30)])
    _run(tmp_path, "coach-seed1", [_eval(2, 40, 0.05), _eval(4, 80, 0.25)])  # loses to outcome at seed 1
    _run(tmp_path, "coach-seed2", [_eval(2, 40, 0.45)])  # stopped half way; outcome has no seed 2
    out = tmp_path / "docs" / "x"
    runs = [str(coach_dir), str(tmp_path / "coach-seed1"), str(tmp_path / "coach-seed2")]
    outcomes = ["--outcome", str(outcome_dir), "--outcome", str(tmp_path / "outcome-seed1")]
    assert main(["--untrained", str(untrained_dir), *outcomes, *runs, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    seeds = printed.split("\n\n")[1]
    coach_line = next(line for line in seeds.splitlines() if line.startswith("| coach |"))
    outcome_line = next(line for line in seeds.splitlines() if line.startswith("| outcome |"))
    assert "| 0,1,2 |" in coach_line
    assert "0.250 ± 0.200 (0.050–0.450, 3 seeds)" in coach_line  # @ 40: mean, sd, range of all three
    assert "0.300 ± 0.071 (0.250–0.350, 2 seeds)" in coach_line  # @ 80: seed 2 never got there
    # the target is outcome-only's mean final (0.25); the coach's mean curve reaches it at 40 episodes
    assert "(0.250)" in seeds and "40 (0.50×); per seed: 40, 80, 40" in coach_line
    assert "1 / 0 / 1" in coach_line  # won at seed 0 (0.35 > 0.20), lost at seed 1 (0.25 < 0.30)
    assert "| +15.0 |" in coach_line  # lift at the last evaluation every seed reached (40: 0.25 - 0.10)
    assert "0.250 ± 0.071 (0.200–0.300, 2 seeds)" in outcome_line
    assert (tmp_path / "docs" / "x-seeds.png").stat().st_size > 1000
    # paired with outcome-only at seeds 0 and 1 (seed 2 has no outcome run): +10 and -5 points after 40 episodes
    paired = printed.split("\n\n")[2]
    half = 12.706 * 10.607 / 2**0.5  # t(0.975, 1 df) * sd / sqrt(2)
    row_40 = next(line for line in paired.splitlines() if line.startswith("| coach | 40 |"))
    assert f"| 2 | +2.5 ± 10.6 | {2.5 - half:+.1f} to {2.5 + half:+.1f} |" in row_40
    # against outcome-only's final (80: 0.20 and 0.30): +5 and -25 points after 40 episodes
    assert "| -10.0 ± 21.2 |" in row_40 and "final (80 episodes)" in paired
    assert "| coach | 80 | 2 | +5.0 ± 14.1 |" in paired
    assert "| outcome |" not in paired


def test_group_seeds_refuses_two_runs_of_one_seed(tmp_path):
    import pytest

    from mappa_train.report import Arm, group_seeds, seed_of

    assert seed_of("math-coach-seed12") == ("math-coach", 12) and seed_of("math-coach") == ("math-coach", 0)
    with pytest.raises(ValueError, match="two runs are coach seed 0"):
        group_seeds([Arm("coach"), Arm("coach-seed0")])
    # the seed a run was trained with (its config.json) wins over the folder name, and a contradiction is refused
    (group,) = group_seeds([Arm("coach"), Arm("coach-seed3", seed=3)])
    assert sorted(group.arms) == [0, 3]
    (group,) = group_seeds([Arm("coach", seed=2)])
    assert list(group.arms) == [2]
    with pytest.raises(ValueError, match="named seed 1 but its config.json says seed 2.*coach-seed2"):
        group_seeds([Arm("coach-seed1", seed=2)])


def _record(role: str, results: list, written: tuple[str, ...] = ()):
    from mappa_envs.records import ActionRecord, FileInfo

    return ActionRecord(
        env_id="dsbench-3agent-v0",
        task_id="t",
        task_tags=(),
        episode_id="e",
        step=0,
        role=role,
        turn=0,
        round=0,
        observation=[],
        action="```python\n...\n```" if results else "no code",
        visible_action="",
        tool_results=results,
        files_after=[FileInfo(name, 10) for name in written],
    )


def test_actions_table_counts_what_each_role_did_at_the_last_eval(tmp_path):
    """From the trainer's own transcripts (structured fields) and from older ones (the tool output's text); a clean
    run that printed nothing and wrote no file is counted as silent (a warning on stderr is not output, as for the
    coach's ``require_output``), one that printed or wrote a file is not."""
    from mappa_envs.records import ToolResult
    from mappa_train.report import actions_table
    from mappa_train.rollout import Episode
    from mappa_train.runlog import RunLogger

    ok, failed, printed = (
        ToolResult("x = 1"),
        ToolResult("1/0", stderr="Traceback", error="ZeroDivisionError: division"),
        ToolResult("print(1)", stdout="1\n"),
    )
    warned = ToolResult("warn()", stderr="UserWarning: careful\n")
    run = tmp_path / "coach"
    log = RunLogger(run, tensorboard=False)
    early = [_record("engineer", [failed]), _record("analyst", [])]
    log.transcripts(0, "eval", [Episode(early, [], {}, "t", rewards=[0.1, 0.0])])
    episodes = [
        Episode(
            [_record("engineer", [ok], ("X.pkl",)), _record("analyst", [ok, failed])],
            [],
            {},
            "t",
            rewards=[0.8, 0.3],
        ),
        Episode([_record("engineer", []), _record("analyst", [ok])], [], {}, "t", rewards=[0.2, 0.6]),
        Episode(
            [_record("engineer", [warned]), _record("analyst", [printed])], [], {}, "t", rewards=[0.5, 0.9]
        ),
    ]
    log.transcripts(2, "train", [Episode(early, [], {}, "t", rewards=[0.0, 0.0])])
    log.transcripts(2, "eval", episodes)
    rows = [json.loads(line) for line in (run / "transcripts.jsonl").read_text().splitlines()]
    assert rows[-3]["actions"][0]["files_written"] == ["X.pkl"] and rows[-3]["actions"][1]["code"] == "error"
    assert [a["silent"] for a in rows[-1]["actions"]] == [True, False]
    # a transcript from before "silent" was logged: read from the tool output's text, with the same counts
    unlogged = tmp_path / "unlogged"
    unlogged.mkdir()
    for row in rows:
        for action in row["actions"]:
            del action["silent"]
    (unlogged / "transcripts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # an older transcript: no structured fields, only the text the agents saw
    old = tmp_path / "old"
    old.mkdir()
    for row in rows:
        for action in row["actions"]:
            del action["code"], action["files_written"]
    (old / "transcripts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = actions_table([run, unlogged, old]).splitlines()
    for name in ("coach", "unlogged"):
        assert f"| {name} | 2 | engineer | 3 | 67% | 1/2 | 0% | 33% | 33% | 0.500 |" in table
        assert f"| {name} | 2 | analyst | 3 | 67% | 1/2 | 33% | 0% | 0% | 0.600 |" in table
    assert "| old | 2 | engineer | 3 | 67% |  | 0% | 33% |  | 0.500 |" in table
    assert "| old | 2 | analyst | 3 | 67% |  | 33% | 0% |  | 0.600 |" in table


def test_outcome_runs_without_a_config_show_no_coach_score(tmp_path, capsys):
    """Runs kept as metrics only (no config.json): those given as --outcome are read as outcome-rewarded, so their
    mean action reward (the outcome bit) is not printed as a coach score."""
    score = {"eval/mean_action_reward": 0.37}
    untrained = _run(tmp_path, "untrained", [_eval(0, 0, 0.10, **score)])
    outcome = _run(tmp_path, "outcome", [_eval(2, 40, 0.15, **score)])
    coach = _run(tmp_path, "coach", [_eval(2, 40, 0.25, **{"eval/mean_action_reward": 0.61})])
    assert main([str(coach), "--untrained", str(untrained), "--outcome", str(outcome)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "| 0.610 |" in next(line for line in lines if line.startswith("| coach |"))
    outcome_line = next(line for line in lines if line.startswith("| outcome |"))
    assert "| n/a |" in outcome_line and "0.370" not in outcome_line
    # the run's own config.json still wins over the flag it was given with
    (outcome / "config.json").write_text(json.dumps({"reward": "coach", "seed": 0}))
    assert load_arm(outcome, reward="outcome").reward == "coach"


def _maths_episode(
    step: int, expected: str, replies: dict[str, str], success: bool, split: str = "eval"
) -> dict:
    """One transcript row as the trainer writes it for math-chat (only the fields the answers table reads)."""
    actions = [{"role": role, "turn": 0, "action": text} for role, text in replies.items()]
    return {
        "step": step,
        "split": split,
        "outcome": {"expected": expected, "success": success},
        "actions": actions,
    }


def test_answers_table_grades_every_role_at_every_eval(tmp_path):
    """Each role's last reply is graded with the run's answer format: an upstream agent can be right while the team
    fails (the verifier did not pass it on), and the team can succeed with the solver wrong. Training rows and
    runs without an expected answer (DSBench) are left out; main writes the table next to the others."""
    from mappa_train.report import answers_table

    rows = [
        _maths_episode(
            1, "3", {"solver": "the answer is 3", "verifier": "the answer is 3"}, True, split="train"
        ),
        _maths_episode(5, "7", {"solver": "The answer is 7.", "verifier": "So \\boxed{7}"}, True),
        _maths_episode(
            5, "7", {"solver": "the answer is 7", "verifier": "The code printed no output."}, False
        ),
        _maths_episode(
            5, "12", {"solver": "I think 5", "coder": "the answer is 9", "verifier": "The answer is 12"}, True
        ),
        _maths_episode(10, "4", {"solver": "the answer is 5", "verifier": "the answer is 5"}, False),
    ]
    # the coder's first turn is wrong, its second right: the last reply of a role is the one graded
    rows[3]["actions"].insert(1, {"role": "coder", "turn": 0, "action": "the answer is 1"})
    rows[3]["actions"][2]["action"] = "the answer is 12"
    statement = tmp_path / "statement"
    statement.mkdir()
    (statement / "transcripts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (statement / "config.json").write_text(
        json.dumps({"env_kwargs": {"answer_format": "boxed_or_statement"}})
    )
    boxed = tmp_path / "boxed"  # the same replies graded boxed-only (no config.json: the envs' default)
    boxed.mkdir()
    (boxed / "transcripts.jsonl").write_text((statement / "transcripts.jsonl").read_text())
    dsbench = tmp_path / "dsbench"
    dsbench.mkdir()
    row = {
        "step": 5,
        "split": "eval",
        "outcome": {"success": False},
        "actions": [{"role": "modeler", "action": "x"}],
    }
    (dsbench / "transcripts.jsonl").write_text(json.dumps(row) + "\n")
    table = answers_table([statement, boxed, dsbench]).splitlines()
    assert "| statement | 5 | solver | 3 | 2 | 2 | 1 | 2 |" in table
    assert "| statement | 5 | coder | 1 | 1 | 1 | 1 | 2 |" in table
    assert "| statement | 5 | verifier | 3 | 2 | 2 | 2 | 2 |" in table
    assert "| statement | 10 | solver | 1 | 1 | 0 | 0 | 0 |" in table
    assert "| boxed | 5 | verifier | 3 | 1 | 1 | 1 | 2 |" in table
    assert "| boxed | 5 | solver | 3 | 0 | 0 | 0 | 2 |" in table
    assert not any(line.startswith(("| dsbench", "| statement | 1 |")) for line in table)
    assert len(table) == 2 + 3 + 2 + 3 + 2
    # a kept run's transcripts, gzipped, read the same
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "transcripts.jsonl.gz").write_bytes(gzip.compress((statement / "transcripts.jsonl").read_bytes()))
    (kept / "config.json").write_text((statement / "config.json").read_text())
    assert answers_table([kept]).replace("| kept |", "| statement |") == answers_table([statement])

    untrained = _run(tmp_path, "untrained", [_eval(0, 0, 0.10)])
    statement_metrics = [_eval(5, 40, 2 / 3), _eval(10, 80, 0.0)]
    (statement / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in statement_metrics))
    out = tmp_path / "docs" / "maths"
    assert main([str(statement), "--untrained", str(untrained), "--out", str(out)]) == 0
    written = (tmp_path / "docs" / "maths-answers.md").read_text()
    assert "| statement | 5 | verifier | 3 | 2 | 2 | 2 | 2 |" in written
    assert main([str(dsbench), "--untrained", str(untrained), "--out", str(tmp_path / "ds")]) == 0
    assert not (tmp_path / "ds-answers.md").exists()
