"""Pipelines as data: roles, the turn schedule, how a task is shown, how an episode is graded.

The engine (:mod:`mappa_envs.engine`) knows nothing about maths or data science; a :class:`PipelineSpec` tells it
who acts, in which order, what each role sees, whether a role's code runs, and how the finished episode is graded.
Adding a pipeline means writing one of these, not a new engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from mappa_envs.records import ActionRecord
from mappa_envs.tasks import Task, TaskSet

Visibility = Literal["upstream", "previous_round", "all_rounds"]
"""What a role sees of the other roles' actions.

- ``upstream``: every earlier action of every other role (sequential pipelines).
- ``previous_round``: the other roles' actions from the round before this one (debaters).
- ``all_rounds``: every earlier action of every other role, grouped by round (the debate judge).
"""


@runtime_checkable
class AnswerFormat(Protocol):
    """How a role must state its answer, as the pipeline's grader reads it (a coach never imports a grader).

    ``extract(text)``: the stated answer of a visible reply, or None. ``check(text, expected)``: is the stated
    answer right (None when nothing is stated). ``present_rule`` / ``absent_rule``: the names the rules coach
    gives a reply that states / does not state an answer this way (``"answer_boxed"`` / ``"no_boxed_answer"``).
    """

    name: str
    present_rule: str
    absent_rule: str

    def extract(self, text: str) -> str | None: ...

    def check(self, text: str, expected: str) -> bool | None: ...


Corrector = Callable[[ActionRecord, "Role", Sequence[ActionRecord]], "str | None"]
"""``correct(record, role, episode) -> reply | None``: what ``role`` should have replied at ``record``, where the
pipeline knows it (the maths answer once the outcome holds it, the scripted competent code), else None (the action
did not fall short, or nothing is known). The coach calls it, so no coach module knows a pipeline's answers; it
reads only the receipts, and never anything hidden from the agents it trains (a DSBench test label)."""


@dataclass(frozen=True)
class Role:
    """One agent of the team, and what a coach needs to know about it.

    ``max_turns`` bounds how many actions the role takes in one slot: it keeps the turn while its answer contains
    code that ran and it has turns left; an answer without code ends its part. ``required_artifacts`` are files
    the role must leave in the workspace (checked by the rule coach and named in its prompt). ``answer``: the
    format its final reply must state an answer in (None: it states none). ``graded``: the episode outcome grades
    this role's final work (the rules coach books the outcome on its last action). ``rubrics``: extra rubric
    objects (:class:`mappa_envs.coach.rubrics.Rubric`) the rules coach applies to this role's actions.
    ``corrector``: the pipeline's :data:`Corrector` for this role; a coach asked for corrections calls it.
    """

    name: str
    title: str
    system_prompt: str
    max_turns: int = 1
    runs_code: bool = False
    visibility: Visibility = "upstream"
    required_artifacts: tuple[str, ...] = ()
    rubric: str = ""
    answer: AnswerFormat | None = None
    graded: bool = False
    rubrics: tuple[Any, ...] = ()
    corrector: Corrector | None = None

    def __post_init__(self) -> None:
        if self.max_turns < 1:
            raise ValueError(f"role {self.name!r}: max_turns must be >= 1, got {self.max_turns}")
        if self.answer is not None and not isinstance(self.answer, AnswerFormat):
            raise TypeError(
                f"role {self.name!r}: answer must be an AnswerFormat (name, present_rule, absent_rule, extract, "
                f"check), e.g. mappa_envs.pipelines.math_common.MathAnswer('boxed'); got {type(self.answer).__name__}"
            )
        for rubric in self.rubrics:
            if not callable(getattr(rubric, "score", None)):
                raise TypeError(
                    f"role {self.name!r}: every rubric needs a score(record, context) method; got {rubric!r}"
                )
        if self.corrector is not None and not callable(self.corrector):
            raise TypeError(
                f"role {self.name!r}: corrector must be a callable (record, role, episode) -> str | None; "
                f"got {self.corrector!r}"
            )


@dataclass(frozen=True)
class Slot:
    """One place in the schedule: a role acting in a round (up to ``role.max_turns`` actions)."""

    role: str
    round: int = 0


Grader = Callable[[Task, Sequence[ActionRecord], Path | None], dict[str, Any]]
"""``grade(task, records, workspace_dir) -> outcome``.

The outcome always has ``success`` (bool) and ``reward`` (float in [0, 1], the bare env's terminal reward for
every agent) plus pipeline-specific keys (math: ``correct``, ``answer``, ``expected``; tabular: ``valid``,
``metric``, ``score``, ``relative``, ``reason``).
"""


@dataclass(frozen=True)
class PipelineSpec:
    """Everything that makes one pipeline different from another.

    ``preload`` is code a pooled kernel runs before it is handed out (imports agents will need).
    ``kernel_per_role``: each role gets a fresh kernel, so roles can hand work on only through workspace files
    (the artifact contract the coach checks), never through variables left in memory.
    """

    name: str
    description: str
    roles: tuple[Role, ...]
    schedule: tuple[Slot, ...]
    grade: Grader
    load_tasks: Callable[[Any], TaskSet]
    render_task: Callable[[Task], str]
    default_tasks: str = "embedded:train"
    preload: str = ""
    kernel_per_role: bool = False
    coach_context: str = ""

    def __post_init__(self) -> None:
        names = [r.name for r in self.roles]
        if len(set(names)) != len(names):
            raise ValueError(f"pipeline {self.name!r}: role names must be unique, got {names}")
        for slot in self.schedule:
            if slot.role not in names:
                raise ValueError(f"pipeline {self.name!r}: schedule names unknown role {slot.role!r}")

    def role(self, name: str) -> Role:
        for r in self.roles:
            if r.name == name:
                return r
        raise KeyError(f"pipeline {self.name!r} has no role {name!r}; roles: {[r.name for r in self.roles]}")

    @property
    def runs_code(self) -> bool:
        return any(r.runs_code for r in self.roles)

    def with_answer_format(self, answer: AnswerFormat) -> PipelineSpec:
        """This pipeline with every role that states an answer stating it as ``answer`` (the grader is the
        caller's to match): one setting, read by the grader and the coach alike."""
        roles = tuple(replace(r, answer=answer) if r.answer is not None else r for r in self.roles)
        return replace(self, roles=roles)


def sequential(roles: Sequence[Role]) -> tuple[Slot, ...]:
    """Each role acts once in order (with up to ``max_turns`` actions)."""
    return tuple(Slot(r.name, 0) for r in roles)


def debate(debaters: Sequence[Role], judge: Role, rounds: int) -> tuple[Slot, ...]:
    """Every debater speaks once per round; after the last round the judge decides."""
    if rounds < 1:
        raise ValueError(f"a debate needs at least one round, got {rounds}")
    slots = [Slot(d.name, r) for r in range(rounds) for d in debaters]
    slots.append(Slot(judge.name, rounds - 1))
    return tuple(slots)


LATEST_VERSION = 2
"""The newest env version of mappa's own pipelines (``math-chat-v2`` ...); each module's docstring says what each
version changed."""


def versioned(name: str, version: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with the defaults that follow from ``<name>-v<version>``: the env id, and closed code fences in
    replies shown to other agents from v1 on. Explicit keyword arguments win."""
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= LATEST_VERSION:
        raise ValueError(f"{name}: version must be an integer from 0 to {LATEST_VERSION}, got {version!r}")
    kwargs.setdefault("env_id", f"{name}-v{version}")
    kwargs.setdefault("close_fences", version >= 1)
    return kwargs
