"""The rules coach's rules, one small rubric object each; a pipeline composes more through ``Role.rubrics``.

A :class:`Rubric` looks at one action (with its :class:`RubricContext`: role, episode, blame) and returns the
rules that fired, each a :class:`Fired` with its points, or nothing. It returns a sequence rather than one
``(delta, reason)`` because one rubric may fire several times for one action (one ``artifact_missing`` per
missing file). A rubric never reads the workspace or imports a grader: it sees the receipts, and what the
pipeline declared on the role (required artifacts, the answer format and its checker, whether the outcome grades
it). ``cap`` on a :class:`Fired` bounds the action's score from above, whatever else fired.

Rules since the v2 envs (records of ``-v0``/``-v1`` envs keep the rules those runs were trained with, ``legacy``):

- **progress** (:class:`Progress`): a code turn that does not end the role's part must move its work on, or it
  scores 0 (``no_progress``): for a role that must leave files, a required file of its own appears (non-empty) for
  the first time; for a role that leaves none, its code prints something it had not printed before in this part.
  Extra turns that change nothing earn nothing, so they cannot raise a role's summed reward.
- **artifacts** (:class:`Artifacts`): an empty file is not a saved artifact, nor (hindsight) one a later role's
  code could not read (``artifact_unreadable``; that role is excused and the saver blamed).
- **removal** (:class:`ArtifactRemoval`): removing or emptying a file another role was required to leave costs
  ``removed_artifact``; the blame for the failure it causes goes to the remover, never to the producer.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from mappa_envs.records import ActionRecord, FileInfo

if TYPE_CHECKING:
    from mappa_envs.coach.rules import RuleWeights
    from mappa_envs.pipeline import Role


@dataclass(frozen=True)
class Fired:
    """One rule that fired for an action: its name, the points it gave and what it saw; ``cap``, if set, is the
    highest score the action can get."""

    rule: str
    points: float
    detail: str = ""
    cap: float | None = None

    def __str__(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        cap = f" cap {self.cap:g}" if self.cap is not None else ""
        return f"{self.rule}{detail} {self.points:+g}{cap}"


@dataclass(frozen=True)
class Blame:
    """An action's code failed for want of ``file``; ``producer`` (another role) is answerable for it."""

    file: str
    producer: str
    victim_step: int
    victim_role: str
    error: str
    kind: str = "missing"  # or "unreadable" (v2: the file was there, but could not be read)


@dataclass(frozen=True)
class RubricContext:
    """What a rubric may know about the judged action beyond its record."""

    role: Role
    roles: dict[str, Role]
    episode: Sequence[ActionRecord]
    answer: str  # the visible reply, <think> removed
    weights: RuleWeights
    hindsight: bool
    final_roles: Collection[str]
    legacy: bool
    blames: Sequence[Blame] = ()
    caused_upstream: Sequence[Blame] = ()  # blames whose victim is this very action
    victim: bool = False  # this role's part was broken by an upstream failure (excused from here on)
    options: dict[str, object] = field(default_factory=dict)


@runtime_checkable
class Rubric(Protocol):
    """``score(record, context)``: the rules that fire for one action (empty when none)."""

    name: str

    def score(self, record: ActionRecord, context: RubricContext) -> Sequence[Fired]: ...


# ------------------------------------------------------------------------------------------------------ helpers


def base_name(name: str) -> str:
    return name.replace("\\", "/").rsplit("/", 1)[-1]


def present(artifact: str, files: Sequence[FileInfo], *, legacy: bool) -> bool:
    """Is ``artifact`` among ``files`` (also in a subfolder)? Since v2 it must also be non-empty."""
    return any(
        (f.name == artifact or base_name(f.name) == base_name(artifact)) and (legacy or f.size > 0)
        for f in files
    )


def one_line(text: str | None, limit: int = 160) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def part_of(record: ActionRecord, episode: Sequence[ActionRecord]) -> list[ActionRecord]:
    """The earlier actions of the same role in the same slot (same round), in step order."""
    return [x for x in episode if x.role == record.role and x.round == record.round and x.step < record.step]


# ------------------------------------------------------------------------------------------------------ rubrics


@dataclass(frozen=True)
class ReplyHygiene:
    """An empty reply, a reply cut at the length limit, and (opt-in) one sentence said three times or more."""

    penalize_repetition: bool = False
    name: str = "reply"

    def score(self, record: ActionRecord, context: RubricContext) -> Sequence[Fired]:
        w = context.weights
        fired = []
        if not context.answer:
            fired.append(Fired("empty_answer", w.empty_answer))
        if record.action_clipped:
            fired.append(Fired("action_clipped", w.action_clipped))
        if self.penalize_repetition and (repeat := repeated_sentence(context.answer)) is not None:
            fired.append(Fired("repeated_sentence", w.repeated_sentence, repeat))
        return fired


@dataclass(frozen=True)
class CodeRun:
    """How the action's code ran: clean (or silent, with ``require_output``), error, timeout, kernel death; a code
    role's first action without code. An error caused by an upstream missing file is not the agent's."""

    require_output: bool = False
    name: str = "code"

    def score(self, record: ActionRecord, context: RubricContext) -> Sequence[Fired]:
        from mappa_envs.coach.rules import explained

        w = context.weights
        if not record.tool_results:
            if context.role.runs_code and record.turn == 0:
                return [Fired("no_code", w.no_code)]
            return []
        if not any(t.error for t in record.tool_results):
            if self.require_output and record.ran_silently:
                return [Fired("code_silent", w.code_silent, "ran cleanly, printed nothing, wrote no file")]
            return [Fired("code_clean", w.code_clean)]
        own = [
            t
            for t in record.tool_results
            if t.error and not explained(t.error + "\n" + t.stderr, context.caused_upstream)
        ]
        if own:
            first = own[0]
            name, points = (
                ("code_timeout", w.code_timeout) if first.timed_out else ("code_error", w.code_error)
            )
            fired = [Fired(name, points, one_line(first.error))]
            if any(t.kernel_restarted for t in own):
                fired.append(Fired("kernel_died", w.kernel_died))
            return fired
        if context.caused_upstream:
            b = context.caused_upstream[0]
            return [Fired("error_caused_upstream", 0.0, f"{b.file} {b.kind}, owed by {b.producer}")]
        return []


@dataclass(frozen=True)
class Progress:
    """v2: a code turn that does not end the part and moves nothing on scores 0 (see the module docstring)."""

    name: str = "progress"

    def score(self, record: ActionRecord, context: RubricContext) -> Sequence[Fired]:
        if context.legacy or not record.tool_results or record.ends_turn or context.victim:
            return []  # a part broken upstream is excused: it could not move on
        earlier = part_of(record, context.episode)
        required = context.role.required_artifacts
        if required:
            made = [
                a
                for a in required
                if present(a, record.files_after, legacy=False)
                and not present(a, record.files_before, legacy=False)
            ]
            if made:
                return []
            detail = "no required file of its own appeared"
        else:
            seen = {t.stdout.strip() for x in earlier for t in x.tool_results}
            new = [
                t.stdout.strip()
                for t in record.tool_results
                if t.stdout.strip() and t.stdout.strip() not in seen
            ]
            if new:
                return []
            detail = "printed nothing new"
        return [Fired("no_progress", 0.0, detail, cap=0.0)]


@dataclass(frozen=True)
class Artifacts:
    """On the action that ends the part: every required file present (+), each missing one (-), unless an
    upstream failure broke the part. Since v2 an empty file is missing."""

    name: str = "artifacts"

    def score(self, record: ActionRecord, context: RubricContext) -> Sequence[Fired]:
        required = context.role.required_artifacts
        if not (record.ends_turn and required):
            return []
        w = context.weights
        missing = [a for a in required if not present(a, record.files_after, legacy=context.legacy)]
        unreadable = {b.file for b in context.blames if b.kind == "unreadable" and b.producer == record.role}
        broken = [a for a in required if a not in missing and base_name(a) in unreadable]
        if broken:  # hindsight, v2: a later role could not read it
            return [Fired("artifact_unreadable", w.artifact_missing, a) for a in broken] + [
                Fired("artifact_missing", w.artifact_missing, a) for a in missing
            ]
        if not missing:
            return [Fired("artifacts_saved", w.artifacts_saved, ", ".join(required))]
        if context.victim:
            return [Fired("artifact_missing_upstream", 0.0, a) for a in missing]
        return [Fired("artifact_missing", w.artifact_missing, a) for a in missing]


@dataclass(frozen=True)
class ArtifactRemoval:
    """v2: removing or emptying a file another role was required to leave (``removed_artifact``)."""

    name: str = "removal"

    def score(self, record: ActionRecord, context: RubricContext) -> Sequence[Fired]:
        if context.legacy:
            return []
        theirs = {
            base_name(a)
            for name, role in context.roles.items()
            if name != record.role
            for a in role.required_artifacts
        }
        after = {base_name(f.name): f.size for f in record.files_after}
        removed = sorted(
            base_name(f.name)
            for f in record.files_before
            if base_name(f.name) in theirs and f.size > 0 and after.get(base_name(f.name), 0) == 0
        )
        return [Fired("removed_artifact", context.weights.removed_artifact, n) for n in removed]


@dataclass(frozen=True)
class StatedAnswer:
    """On the action that ends the part of a role that must state an answer (``Role.answer``): stated the way
    the grader reads it (+) or not (-); rule names from the format (``answer_boxed`` / ``no_boxed_answer``)."""

    only: frozenset[str] | None = None  # restrict to these roles (RuleCoach's ``answer_roles``)
    name: str = "answer"

    def score(self, record: ActionRecord, context: RubricContext) -> Sequence[Fired]:
        fmt = context.role.answer
        if not record.ends_turn or fmt is None or (self.only is not None and record.role not in self.only):
            return []
        w = context.weights
        if fmt.extract(context.answer):
            return [Fired(fmt.present_rule, w.answer_boxed)]
        return [Fired(fmt.absent_rule, w.no_boxed_answer)]


@dataclass(frozen=True)
class AnswerCheck:
    """Hindsight, opt-in: a non-graded role's stated answer checked against the outcome's ``expected`` answer
    with the role's own format; no stated answer, no rule."""

    name: str = "answer_check"

    def score(self, record: ActionRecord, context: RubricContext) -> Sequence[Fired]:
        fmt = context.role.answer
        expected = (record.outcome or {}).get("expected")
        if fmt is None or not record.ends_turn or expected in (None, "") or record.outcome is None:
            return []
        if record.role in context.final_roles:
            return []
        correct = fmt.check(context.answer, str(expected))
        if correct is None:
            return []
        stated = fmt.extract(context.answer) or ""
        detail = f"{one_line(stated, 40)}, expected {one_line(str(expected), 40)}"
        if correct:
            return [Fired("answer_correct", context.weights.answer_correct, detail)]
        return [Fired("answer_wrong", context.weights.answer_wrong, detail)]


@dataclass(frozen=True)
class Outcome:
    """The graded outcome: on the graded role's last action, success (+) or failure (-, softened by a partial
    reward; excused when an upstream failure broke the part, in hindsight); in hindsight every other role gets
    team success or failure, or ``caused_downstream_failure`` when a failure is its fault."""

    name: str = "outcome"

    def score(self, record: ActionRecord, context: RubricContext) -> Sequence[Fired]:
        if record.outcome is None:
            return []
        w = context.weights
        outcome = record.outcome
        success = bool(outcome.get("success"))
        reward = _float(outcome.get("reward"))
        detail = f"reward {reward:g}" if reward is not None else ""
        if record.role in context.final_roles:
            last_of_role = max(x.step for x in context.episode if x.role == record.role) == record.step
            if not last_of_role:
                return []
            if success:
                return [Fired("outcome_success", w.outcome_success, detail)]
            if context.hindsight and context.victim:
                return [Fired("outcome_failure_upstream", 0.0, detail)]
            return [
                Fired(
                    "outcome_failure", w.outcome_failure * (1.0 - min(1.0, max(0.0, reward or 0.0))), detail
                )
            ]
        if not context.hindsight:
            return []
        if success:
            return [Fired("team_success", w.team_success, detail)]
        mine = [b for b in context.blames if b.producer == record.role]
        if mine:
            b = mine[0]
            what = f"{b.victim_role} at step {b.victim_step} failed: {b.file} {b.kind}"
            return [Fired("caused_downstream_failure", w.caused_downstream_failure, what)]
        return [Fired("team_failure", w.team_failure, detail)]


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_REPEATS = 3


def repeated_sentence(text: str) -> str | None:
    """The first sentence (or line) said at least three times in ``text``, with its count; None if there is none.

    Code blocks are left out (a loop body or a column list repeats by design); very short fragments (a bare
    number, a list bullet) are not sentences.
    """
    prose = re.sub(r"```.*?(?:```|$)", "\n", text, flags=re.DOTALL)
    counts: dict[str, int] = {}
    for piece in _SENTENCE_END.split(prose):
        sentence = " ".join(piece.split()).lower()
        if len(sentence) >= 8:
            counts[sentence] = counts.get(sentence, 0) + 1
    for sentence, n in counts.items():
        if n >= _REPEATS:
            return f"{one_line(sentence, 60)!r} x{n}"
    return None


def _float(x: object) -> float | None:
    try:
        return float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
