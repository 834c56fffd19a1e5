"""``mappa play`` and ``mappa eval`` with a served team, against the fake OpenAI server (no model)."""

from __future__ import annotations

import json
from pathlib import Path

try:
    from tests.fake_openai_server import FakeOpenAIServer, Reply, closed_port
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from fake_openai_server import FakeOpenAIServer, Reply, closed_port  # type: ignore

import pytest

from mappa_train.cli import main

CODE = "```python\nprint('served coder was here')\n```"


def test_play_with_one_served_role_and_scripted_others(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeOpenAIServer(replies=[Reply(text=CODE)]) as srv:
        argv = ["play", "math-chat", "--tasks", "embedded:eval", "--team", "served"]
        assert main([*argv, "--served", f"coder={srv.base_url}@fake-agent"]) == 0
        systems = [r.body["messages"][0]["content"] for r in srv.chat_requests()]
    out = capsys.readouterr().out
    assert "served coder was here" in out  # the served reply ran in the kernel
    assert "── Problem Solver" in out and "── Verifier" in out  # the scripted roles still played
    assert "served agents:" in out and "fake-agent" in out
    assert systems and all("Code" in s for s in systems)  # only the coder's turns went to the server


def test_play_shows_a_failed_served_turn_in_the_transcript(capsys: pytest.CaptureFixture[str]) -> None:
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    argv = [
        "play",
        "math-chat",
        "--tasks",
        "embedded:eval",
        "--team",
        "served",
        "--served",
        f"solver={dead}@m",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "agent error (empty reply)" in out and "connection error" in out


def test_play_served_errors_name_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="needs --served"):
        main(["play", "math-chat", "--team", "served"])
    with pytest.raises(SystemExit, match="does not have"):
        main(["play", "math-chat", "--team", "served", "--served", "codr=http://x/v1@m"])
    with pytest.raises(SystemExit, match="ROLE=URL@MODEL"):
        main(["play", "math-chat", "--team", "served", "--served", "coder=http://x/v1"])


def test_eval_a_fully_served_team_logs_metrics_usage_and_transcripts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def reply(body: dict, index: int) -> Reply:
        return Reply(text=CODE if "Code" in body["messages"][0]["content"] else "The answer is \\boxed{4}.")

    with FakeOpenAIServer(behaviour=reply, latency_s=0.05) as srv:
        argv = ["eval", "--team", "served", "--served", f"*={srv.base_url}@fake-agent", "--log"]
        assert (
            main([*argv, f"out_dir={tmp_path}", "progress=false", "eval_episodes=3", "parallel_envs=3"]) == 0
        )
        peak = srv.max_in_flight
    out = capsys.readouterr().out
    metrics = json.loads(out[out.index("{") : out.rindex("}") + 1])
    assert metrics["eval/episodes"] == 3 and "eval/success_rate" in metrics
    for role in ("solver", "coder", "verifier"):
        assert metrics[f"eval/served/{role}/turns"] >= 3 and metrics[f"eval/served/{role}/failed_turns"] == 0
        assert metrics[f"eval/served/{role}/prompt_tokens"] > 0
    assert peak == 3  # the lockstep batch of one role went out concurrently
    episodes = [json.loads(line) for line in (tmp_path / "transcripts.jsonl").read_text().splitlines()]
    assert len(episodes) == 3 and "served coder was here" in json.dumps(episodes)
    assert all(a["agent_error"] is None for e in episodes for a in e["actions"])
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["eval/served/coder/turns"] >= 3


def test_eval_served_rejects_a_checkpoint_with_no_trained_role(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "eval",
        "--team",
        "served",
        "--served",
        "*=http://x/v1@m",
        "--checkpoint",
        "nowhere",
        "progress=false",
    ]
    assert main(argv) == 2
    assert "no role of this team is trained" in capsys.readouterr().err


def test_eval_with_a_dead_served_role_counts_and_records_the_failures(tmp_path: Path, capsys) -> None:
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    argv = ["eval", "--team", "served", "--served", f"solver={dead}@m", "--others", "scripted", "--log"]
    assert main([*argv, f"out_dir={tmp_path}", "progress=false", "eval_episodes=2", "parallel_envs=2"]) == 0
    metrics = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert metrics["eval/episodes"] == 2 and metrics["eval/served/solver/failed_turns"] == 2
    episodes = [json.loads(line) for line in (tmp_path / "transcripts.jsonl").read_text().splitlines()]
    solver = [a for e in episodes for a in e["actions"] if a["role"] == "solver"]
    assert len(solver) == 2 and all(
        a["action"] == "" and "connection error" in a["agent_error"] for a in solver
    )
    others = [a for e in episodes for a in e["actions"] if a["role"] != "solver"]
    assert others and all(a["agent_error"] is None for a in others)  # the episode carried on


def test_eval_one_served_role_with_the_trained_team_playing_the_others(tmp_path: Path, capsys) -> None:
    tiny = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
    with FakeOpenAIServer(replies=[Reply(text=CODE)]) as srv:
        argv = [
            "eval",
            "--team",
            "served",
            "--served",
            f"coder={srv.base_url}@fake-agent",
            "--others",
            "model",
        ]
        assert (
            main([*argv, "--config", tiny, f"out_dir={tmp_path}", "progress=false", "eval_episodes=2"]) == 0
        )
        served_turns = len(srv.chat_requests())
    out = capsys.readouterr().out
    metrics = json.loads(out[out.index("{") : out.rindex("}") + 1])
    assert metrics["eval/episodes"] == 2 and metrics["eval/served/coder/turns"] == served_turns >= 2
    assert "eval/served/solver/turns" not in metrics  # the tiny model played the solver and the verifier
