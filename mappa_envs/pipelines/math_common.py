"""What the maths pipelines share: how a problem is shown and how the team's final answer is graded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mappa_envs.grading.math import grade_math
from mappa_envs.records import ActionRecord
from mappa_envs.tasks import Task


def render_problem(task: Task) -> str:
    return f"## Problem\n{task.prompt.strip()}"


def grade_last_role(final_role: str):
    """A grader that checks the last ``\\boxed{}`` of ``final_role``'s last action against the task's answer."""

    def grade(task: Task, records: Sequence[ActionRecord], workspace: Path | None) -> dict[str, Any]:
        finals = [r for r in records if r.role == final_role]
        reply = finals[-1].action if finals else ""
        return grade_math(reply, task.answer or "")

    return grade
