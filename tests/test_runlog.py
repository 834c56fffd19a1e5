"""Run logs survive a kill at any moment: whole rows, at most one cut last line (dropped, with a note), and
rewrites that leave the old file or the new one, never a mix."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from mappa_train.runlog import RunLogError, RunLogger, atomic_write_text, read_metrics


def _rows(*steps: int) -> str:
    return "".join(json.dumps({"step": s, "loss": 0.5}) + "\n" for s in steps)


def test_a_half_written_last_line_is_dropped_on_resume_and_said(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text(_rows(0, 1, 2) + '{"step": 3, "lo')
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [0, 1, 2]
    assert "dropped a half-written last line" in capsys.readouterr().err
    logger = RunLogger(tmp_path, resume_step=1, tensorboard=False)
    logger.log(2, {"loss": 0.25})
    logger.close()
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [0, 1, 2]
    assert "dropped a half-written last line" in capsys.readouterr().err
    assert (tmp_path / "metrics.jsonl").read_text().endswith("\n")


def test_appending_to_a_cut_log_starts_a_new_line(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text(_rows(1) + '{"step": 2')
    logger = RunLogger(tmp_path, tensorboard=False, keep=True)  # mappa eval --log into a killed run
    logger.log(2, {"eval/success_rate": 0.5})
    logger.close()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and rows[1]["eval/success_rate"] == 0.5
    assert "half-written" in capsys.readouterr().err


def test_a_damaged_line_inside_the_log_is_a_clear_error(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(_rows(0) + "garbage\n" + _rows(1))
    with pytest.raises(RunLogError, match=r"metrics.jsonl, line 2: not a JSON object .*Delete that line"):
        read_metrics(tmp_path / "metrics.jsonl")


def test_a_failed_rewrite_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    path.write_text(_rows(0, 1))

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, _rows(0))
    assert path.read_text() == _rows(0, 1) and [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


WRITER = """
import sys
from pathlib import Path
from mappa_train.runlog import append_line, atomic_write_text
path = Path(sys.argv[1])
big = [f'{{"step": {i}, "pad": "{"x" * 2000}"}}' for i in range(2000)]
print("go", flush=True)
while True:
    atomic_write_text(path, "".join(line + "\\n" for line in big[:1000]))  # the resume's cut
    for line in big[1000:1100]:
        append_line(path, line)
"""


def test_kills_during_rewrites_and_appends_leave_a_readable_log(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rng = random.Random(1)
    for _ in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)],
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        assert proc.stdout.readline().strip() == "go"
        time.sleep(rng.uniform(0.05, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        rows = read_metrics(path)  # a cut last line is dropped; anything else would raise
        assert [r["step"] for r in rows] == list(range(len(rows))) and 1000 <= len(rows) <= 1100
