"""Run outputs: a JSONL of metrics (the source of truth), TensorBoard scalars, episode transcripts.

Resuming appends: rows from steps after the resumed checkpoint are dropped first, so a killed-and-resumed run
has exactly one row per step, as an uninterrupted run would. The files survive a kill at any moment: each row is
one ``write`` followed by an fsync, so at worst the last line is half-written (readers drop it and say so), and
the resume's cut is a new file renamed over the old one (:func:`atomic_write_text`), never a rewrite in place.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mappa_envs.records import ActionRecord
from mappa_train.rollout import Episode


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunLogger:
    def __init__(
        self, out_dir: Path, resume_step: int | None = None, tensorboard: bool = True, keep: bool = False
    ) -> None:
        """A fresh log (``resume_step=None``), one cut after ``resume_step``, or, with ``keep``, the files as they
        are (``mappa eval --log`` adds a row to a finished or killed run without touching its history)."""
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = out_dir / "metrics.jsonl"
        self.transcripts_path = out_dir / "transcripts.jsonl"
        for path in (self.metrics_path, self.transcripts_path):
            if keep:
                drop_partial_line(path)  # so the next row starts on a line of its own
            else:
                self._truncate_after(path, resume_step)
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(out_dir / "tensorboard"))
            except ImportError:  # tensorboard is optional; the JSONL has everything
                self._tb = None

    @staticmethod
    def _truncate_after(path: Path, step: int | None) -> None:
        if not path.exists():
            return
        if step is None:
            path.unlink()
            return
        kept = [json.dumps(row, default=str) for row in read_jsonl(path) if row.get("step", 0) <= step]
        atomic_write_text(path, "".join(line + "\n" for line in kept))

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        append_line(self.metrics_path, json.dumps(row, default=str))
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)
            self._tb.flush()

    def transcripts(self, step: int, split: str, episodes: Sequence[Episode]) -> None:
        lines = []
        for ep in episodes:
            row = {
                "step": step,
                "split": split,
                "task_id": ep.task_id,
                "outcome": ep.outcome,
                "actions": [
                    {
                        "role": r.role,
                        "turn": r.turn,
                        "action": r.action,
                        "tool_output": r.tool_output_text(limit=2000),
                        "code": code_status(r),
                        "files_written": [f.name for f in r.files_written()],
                        "silent": r.ran_silently,
                        "reward": reward,
                        "judgement": None if r.judgement is None else r.judgement.__dict__,
                        "agent_error": r.agent_error,  # a served turn that failed (empty action)
                    }
                    for r, reward in zip(ep.records, ep.rewards, strict=True)
                ],
            }
            lines.append(json.dumps(row, default=str))
        if lines:
            append_line(self.transcripts_path, "\n".join(lines))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def code_status(record: ActionRecord) -> str:
    """``"none"`` (no block ran), ``"error"`` (a block failed) or ``"ok"``: what a transcript reader counts."""
    if not record.ran_code:
        return "none"
    return "error" if record.had_error else "ok"


class RunLogError(ValueError):
    """A log file that is damaged other than by a kill mid-write; the message names the file and the line."""


def read_jsonl(path: Path, quiet: bool = False) -> list[dict[str, Any]]:
    """The rows of a JSONL log. A half-written last line (a kill mid-write) is dropped with a note on stderr;
    a bad line anywhere else is a :class:`RunLogError`, since that is not what a kill leaves."""
    if not path.exists():
        return []
    text = path.read_text(errors="replace")
    lines = text.split("\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        elif number == len(lines):  # no newline after it: the write was cut
            if not quiet:
                print(
                    f"{path}: dropped a half-written last line (the run was killed while writing it)",
                    file=sys.stderr,
                )
        else:
            raise RunLogError(
                f"{path}, line {number}: not a JSON object ({line[:80]!r}); the file was edited or damaged. "
                "Delete that line to keep the rest, or start the run again in a new out_dir"
            )
    return rows


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return read_jsonl(path)


def drop_partial_line(path: Path) -> None:
    """Cut a half-written last line (left by a kill), keeping every complete row, atomically."""
    if not path.exists():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    read_jsonl(path)  # says what is dropped (or refuses a damaged file)
    atomic_write_text(path, data[: data.rfind(b"\n") + 1].decode(errors="replace"))


def append_line(path: Path, text: str) -> None:
    """Append ``text`` and a newline in one write, then fsync: a kill leaves whole rows and at most one cut one."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (text + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` so that a kill leaves either the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
