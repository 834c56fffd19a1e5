"""Receipts: what happened at one agent turn, in a form the coach, the trainer and a person can all read.

An :class:`ActionRecord` is produced by every env step and put in ``infos[agent]["record"]``. It holds the exact
observation the agent saw, its action, what the code in the action did and how the workspace changed. Records are
plain data (``to_dict()`` gives JSON); two runs with the same seed produce equal records, because every field that
depends on wall-clock time is excluded from equality (``compare=False``).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

Message = dict[str, str]
"""One chat message: ``{"role": "system" | "user" | "assistant" | "tool", "content": str}``."""


@dataclass(frozen=True)
class FileInfo:
    """A file in the episode workspace, by path relative to the workspace root."""

    name: str
    size: int


@dataclass(frozen=True)
class ToolResult:
    """What one executed code block produced.

    ``error`` is ``None`` when the block ran cleanly, otherwise a one-line summary (``"ZeroDivisionError: ..."``,
    ``"Timeout: ..."``, ``"KernelDied: ..."``); the traceback text is in ``stderr``.
    """

    code: str
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    timed_out: bool = False
    kernel_restarted: bool = False
    output_truncated: bool = False
    duration_s: float = field(default=0.0, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None


_SOURCE = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}")


@dataclass(frozen=True)
class Judgement:
    """A coach's verdict on one action: a score in [0, 10], why, and where it came from.

    ``source`` says where the score came from. The built-in coaches use ``"llm"`` (a model answered), ``"cache"``
    (a stored model answer), ``"rules"`` (the offline rule coach) and ``"fallback"`` (no usable answer; the score
    is the configured fallback value, counted as such); a user's coach names its own (a short identifier such as
    ``"custom"`` or ``"heuristic"``). Only ``"fallback"`` has a meaning to the rest of mappa.

    ``correction``: what this role should have replied at this point (a coach that knows, or was asked to say),
    else None. It is a training target only (the trainer's supervised term): the env never shows it to an agent.
    """

    score: float
    rationale: str
    source: str
    correction: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.score) <= 10.0:
            raise ValueError(f"Judgement.score must be in [0, 10], got {self.score!r}")
        if not isinstance(self.source, str) or not _SOURCE.fullmatch(self.source):
            raise ValueError(
                "Judgement.source must be a short identifier such as 'llm', 'rules' or 'custom' "
                f"(letters, digits, '_', '-', '.', ':'; at most 64), got {self.source!r}"
            )
        if self.correction is not None and not isinstance(self.correction, str):
            raise TypeError(
                f"Judgement.correction must be a str or None, got {type(self.correction).__name__}"
            )


@dataclass
class ActionRecord:
    """One agent turn: who acted, what they saw, what they did, what it caused.

    ``step`` counts actions in the episode (0-based); ``turn`` counts this role's actions within its current slot
    of the schedule; ``round`` is the schedule round (0 for sequential pipelines, the debate round otherwise).
    ``outcome`` is filled on every record of the episode once it ends; ``judgement`` by a coach wrapper.
    """

    env_id: str
    task_id: str
    task_tags: tuple[str, ...]
    episode_id: str
    step: int
    role: str
    turn: int
    round: int
    observation: list[Message]
    action: str
    visible_action: str
    tool_results: list[ToolResult] = field(default_factory=list)
    files_before: list[FileInfo] = field(default_factory=list)
    files_after: list[FileInfo] = field(default_factory=list)
    action_clipped: bool = False
    ends_turn: bool = True
    outcome: dict[str, Any] | None = None
    judgement: Judgement | None = None
    agent_error: str | None = (
        None  # why the agent's reply is empty (a served model that failed), never silent
    )

    @property
    def ran_code(self) -> bool:
        return bool(self.tool_results)

    @property
    def had_error(self) -> bool:
        return any(not r.ok for r in self.tool_results)

    @property
    def ran_silently(self) -> bool:
        """Its code ran cleanly but printed nothing and wrote no file. Such code runs cleanly by construction, so
        the coach's ``require_output`` and the report's clean-run counts must not take it for work."""
        return (
            self.ran_code
            and not self.had_error
            and not any(t.stdout.strip() for t in self.tool_results)
            and not self.files_written()
        )

    def files_written(self) -> list[FileInfo]:
        """Files that appeared or changed size during this action."""
        before = {f.name: f.size for f in self.files_before}
        return [f for f in self.files_after if before.get(f.name) != f.size]

    def tool_output_text(self, limit: int | None = None) -> str:
        """The tool results as the agents see them (see :func:`format_tool_results`)."""
        return format_tool_results(self.tool_results, limit=limit)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ActionRecord:
        data = dict(data)
        data["task_tags"] = tuple(data.get("task_tags", ()))
        data["tool_results"] = [ToolResult(**r) for r in data.get("tool_results", [])]
        data["files_before"] = [FileInfo(**f) for f in data.get("files_before", [])]
        data["files_after"] = [FileInfo(**f) for f in data.get("files_after", [])]
        if data.get("judgement") is not None:
            data["judgement"] = Judgement(**data["judgement"])
        return cls(**data)


TRUNCATION_MARKER = "\n[... {n} characters cut ...]\n"


def trim(text: str, limit: int | None) -> str:
    """Keep the head and tail of ``text`` within ``limit`` characters, with a visible marker where it was cut."""
    if limit is None or len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    return text[:head] + TRUNCATION_MARKER.format(n=len(text) - head - tail) + text[len(text) - tail :]


def format_tool_results(results: list[ToolResult], limit: int | None = None) -> str:
    """Render executed blocks as one text: stdout, then stderr/traceback, then the error line, per block."""
    parts = []
    for i, r in enumerate(results):
        lines = []
        if len(results) > 1:
            lines.append(f"[block {i + 1}]")
        if r.stdout:
            lines.append(r.stdout.rstrip("\n"))
        if r.stderr:
            lines.append("[stderr]\n" + r.stderr.rstrip("\n"))
        if r.error:
            lines.append(f"[error] {r.error}")
        if not (r.stdout or r.stderr or r.error):
            lines.append("[no output]")
        parts.append("\n".join(lines))
    return trim("\n".join(parts), limit)
