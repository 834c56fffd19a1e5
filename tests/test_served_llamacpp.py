"""A served team against a real model: llama-cpp-python's OpenAI server with SmolLM2-135M-Instruct.

``mappa eval --team served`` plays one held-out math-chat episode with every role on the local server (the
issue's "three math-chat roles on one local server") and must give the trainer's metrics, the per-role token
usage and the transcript, exactly as for a trained team. Checks the protocol, not quality (a 135M model is weak).
Skipped without the server or the GGUF (see tests/test_coach_llamacpp.py); about 30 s on 2 CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

try:
    from tests.test_coach_llamacpp import llama_server
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from test_coach_llamacpp import llama_server  # type: ignore

from mappa_train.cli import main

pytestmark = pytest.mark.slow
__all__ = ["llama_server"]  # the fixture is used by name


def test_eval_a_team_served_by_llamacpp(
    llama_server: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    team = tmp_path / "team.yaml"
    team.write_text(
        f"concurrency: 4\ntimeout_s: 120\nmax_retries: 1\n"
        f"roles:\n  '*': {{base_url: '{llama_server}', model: smollm2, max_tokens: 64, temperature: 0.0}}\n"
    )
    out_dir = tmp_path / "run"
    argv = ["eval", "--team", "served", "--served", str(team), "--log"]
    assert main([*argv, f"out_dir={out_dir}", "progress=false", "eval_episodes=1", "parallel_envs=1"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads(out[out.index("{") : out.rindex("}") + 1])
    assert metrics["eval/episodes"] == 1 and 0.0 <= metrics["eval/success_rate"] <= 1.0
    for role in ("solver", "coder", "verifier"):
        assert metrics[f"eval/served/{role}/turns"] >= 1
        assert metrics[f"eval/served/{role}/failed_turns"] == 0
        assert metrics[f"eval/served/{role}/prompt_tokens"] > 0
        assert metrics[f"eval/served/{role}/completion_tokens"] > 0
    assert "served agents:" in out and "smollm2" in out
    (episode,) = [json.loads(line) for line in (out_dir / "transcripts.jsonl").read_text().splitlines()]
    actions = episode["actions"]
    assert {a["role"] for a in actions} == {"solver", "coder", "verifier"}
    assert all(a["agent_error"] is None for a in actions)  # recorded, and no turn failed
    assert all(a["action"].strip() for a in actions)  # the model's replies are in the transcript
