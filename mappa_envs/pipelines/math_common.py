"""What the maths pipelines share: how a problem is shown and how the team's final answer is graded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mappa_envs.grading.math import ANSWER_FORMATS, extract_boxed, extract_statement, grade_math
from mappa_envs.records import ActionRecord
from mappa_envs.tasks import Task
from mappa_envs.text import strip_think


def render_problem(task: Task) -> str:
    return f"## Problem\n{task.prompt.strip()}"


def grade_last_role(final_role: str, answer_format: str = "boxed"):
    """A grader that checks the last ``\\boxed{}`` of ``final_role``'s last action against the task's answer.

    ``answer_format="boxed_or_statement"`` also accepts a final "the answer is N" when there is no ``\\boxed{}``:
    small untrained models rarely box, and an outcome-only baseline cannot learn from 0% success.
    """
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")

    def grade(task: Task, records: Sequence[ActionRecord], workspace: Path | None) -> dict[str, Any]:
        finals = [r for r in records if r.role == final_role]
        reply = finals[-1].action if finals else ""
        return grade_math(reply, task.answer or "", answer_format=answer_format)

    return grade


@dataclass(frozen=True)
class MathAnswer:
    """A maths role's answer format (a :class:`~mappa_envs.pipeline.AnswerFormat`), read as the grader reads it.

    ``"boxed"``: the last ``\\boxed{}``; ``"boxed_or_statement"``: also a final "the answer is N". The pipeline
    puts it on its roles, so the rules coach pays the format the grader accepts without importing the grader.
    """

    name: str = "boxed"

    def __post_init__(self) -> None:
        if self.name not in ANSWER_FORMATS:
            raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}, got {self.name!r}")

    @property
    def present_rule(self) -> str:
        return "answer_boxed" if self.name == "boxed" else "answer_stated"

    @property
    def absent_rule(self) -> str:
        return "no_boxed_answer" if self.name == "boxed" else "no_answer_stated"

    def extract(self, text: str) -> str | None:
        boxed = extract_boxed(text)
        if boxed:
            return boxed
        return extract_statement(text) if self.name == "boxed_or_statement" else None

    def check(self, text: str, expected: str) -> bool | None:
        graded = grade_math(text, expected, self.name)
        return None if graded["answer"] is None else bool(graded["correct"])

    def state(self, answer: str) -> str:
        """A reply stating ``answer`` so that both formats read it (a ``\\boxed{}`` is read by each)."""
        return f"The answer is \\boxed{{{answer}}}."


def correct_math(record: ActionRecord, role: Any, episode: Sequence[ActionRecord]) -> str | None:
    """The maths :data:`~mappa_envs.pipeline.Corrector`: on the action that ends a part of a role that states an
    answer, the right result stated in the role's format, when its stated answer is missing or wrong.

    The expected answer comes from the graded outcome, so corrections exist once the episode has ended
    (hindsight); the expected answer is the env's own, never shown to an agent, and the correction is a
    training target only.
    """
    fmt = getattr(role, "answer", None)
    expected = (record.outcome or {}).get("expected")
    if (
        fmt is None
        or not record.ends_turn
        or expected in (None, "")
        or not callable(getattr(fmt, "state", None))
    ):
        return None
    if fmt.check(strip_think(record.visible_action or record.action), str(expected)):
        return None
    return fmt.state(str(expected))
