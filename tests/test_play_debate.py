"""``mappa play math-debate`` with the scripted team: it used to die with a KeyError (no scripted debate team)."""

from __future__ import annotations

import time

from mappa_envs import cli


def test_play_math_debate_with_the_scripted_team(capsys) -> None:
    start = time.monotonic()
    args = ["play", "math-debate", "--episodes", "2", "--tasks", "embedded:one-step-train"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert time.monotonic() - start < 60
    assert out.count("── Judge") == 2 and "2/2 episodes succeeded" in out
