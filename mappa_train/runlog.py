"""Run outputs: a JSONL of metrics (the source of truth), TensorBoard scalars, episode transcripts.

Resuming appends: rows from steps after the resumed checkpoint are dropped first, so a killed-and-resumed run
has exactly one row per step, as an uninterrupted run would.
"""

from __future__ import annotations

import json
import math
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
        if not keep:
            for path in (self.metrics_path, self.transcripts_path):
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
        kept = [
            line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step
        ]
        path.write_text("".join(line + "\n" for line in kept))

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(row, default=str) + "\n")
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)
            self._tb.flush()

    def transcripts(self, step: int, split: str, episodes: Sequence[Episode]) -> None:
        with self.transcripts_path.open("a") as f:
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
                f.write(json.dumps(row, default=str) + "\n")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def code_status(record: ActionRecord) -> str:
    """``"none"`` (no block ran), ``"error"`` (a block failed) or ``"ok"``: what a transcript reader counts."""
    if not record.ran_code:
        return "none"
    return "error" if record.had_error else "ok"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]
