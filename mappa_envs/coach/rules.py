"""A deterministic, offline coach that scores actions from their receipts alone.

Tests, CPU demos and ablations need a coach with no server, no cost and no randomness; it is also the yardstick an
LLM coach is compared with. Each action starts at ``base`` (5) and named rules add or subtract points; the score is
clamped to [0, 10] and the rationale lists every rule that fired, so a reward can always be explained.

Rules (points in :class:`RuleWeights`):

- code: clean run (+2), error (-3), timeout (-3), kernel died (-1 more); a code role's first action with no code
  (-2); an empty answer (-3); an answer cut at the length limit (-1). With ``require_output=True`` a clean run
  pays only if it showed something (printed or displayed output, or a file written); a silent one gets
  ``code_silent`` (-1) instead: code that does nothing visible runs cleanly by construction, and a policy trained
  on the clean-run bonus alone learns to write it (docs/RESULTS.md, round 2, seed 1). With
  ``penalize_repetition=True`` a reply that says the same sentence three or more times gets -1: a small model
  trained to state its answer learns to state it until the token limit, and the grader, which reads the last
  statement, never minds.
- artifacts, on the action that ends the role's part: all required files present (+2), each missing one (-2).
- answer format, on the action that ends the part of a role told to use ``\\boxed{}``: present (+1), absent (-2).
  With ``answer_format="boxed_or_statement"`` (match the env's own ``answer_format``) a final "the answer is N"
  counts as present (``answer_stated``), as it does for the grader, and its absence is named ``no_answer_stated``.
- outcome, when the record has one: the final role's last action gets success (+3) or failure (-2, softened by a
  partial reward); in hindsight every other role gets team success (+1) or team failure (-1).
- intermediate answers (opt-in, ``check_answers=True``, hindsight only): the action that ends the part of a
  non-final role told to use ``\\boxed{}`` is checked against the outcome's ``expected`` answer: right (+2),
  wrong (-1); no stated answer, no rule. An LLM coach judges each agent's answer, not just the team's; this is the
  offline stand-in for that, so a right solver is not punished for a wrong verifier (and the reverse).
- hindsight blame: when an action's code fails because a file is missing that another, earlier role was required
  to produce, that error (and the artifacts and outcome it cost) is not held against the acting agent, and every
  action of the producing role gets ``caused_downstream_failure`` (-3) instead.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from mappa_envs.coach.base import episodes, role_of
from mappa_envs.grading.math import ANSWER_FORMATS, extract_statement, grade_math
from mappa_envs.pipeline import Role
from mappa_envs.records import ActionRecord, FileInfo, Judgement
from mappa_envs.text import strip_ansi, strip_think

_MISSING_FILE = (
    re.compile(r"No such file or directory:\s*['\"]([^'\"\n]+)['\"]"),
    re.compile(r"FileNotFoundError:\s*(?:\[Errno 2\][^'\"\n]*)?['\"]?([\w./\\-]+\.\w+)['\"]?"),
    re.compile(r"[Ff]ile ['\"]?([\w./\\-]+\.\w+)['\"]? does not exist"),
)
_BOXED = re.compile(r"\\boxed\s*\{\s*[^}\s]")


@dataclass(frozen=True)
class RuleWeights:
    """Points per rule (the base score is :attr:`RuleCoach.base`)."""

    code_clean: float = 2.0
    code_silent: float = -1.0
    code_error: float = -3.0
    code_timeout: float = -3.0
    kernel_died: float = -1.0
    no_code: float = -2.0
    empty_answer: float = -3.0
    action_clipped: float = -1.0
    repeated_sentence: float = -1.0
    artifacts_saved: float = 2.0
    artifact_missing: float = -2.0
    answer_boxed: float = 1.0
    no_boxed_answer: float = -2.0
    outcome_success: float = 3.0
    outcome_failure: float = -2.0
    team_success: float = 1.0
    team_failure: float = -1.0
    answer_correct: float = 2.0
    answer_wrong: float = -1.0
    caused_downstream_failure: float = -3.0


DEFAULT_WEIGHTS = RuleWeights()


@dataclass(frozen=True)
class Fired:
    """One rule that fired for an action: its name, the points it gave and what it saw."""

    rule: str
    points: float
    detail: str = ""

    def __str__(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.rule}{detail} {self.points:+g}"


@dataclass(frozen=True)
class _Blame:
    """An action's code failed for want of ``file``, which ``producer`` (an earlier role) had to leave behind."""

    file: str
    producer: str
    victim_step: int
    victim_role: str
    error: str


class RuleCoach:
    """Score actions by rules over the receipts (see the module docstring).

    ``hindsight`` enables blame across the episode (pass all records of a finished episode in one call).
    ``final_roles``: roles whose last action the episode outcome grades; default, the role of the episode's last
    record. ``boxed_roles``: roles whose final answer must contain ``\\boxed{}``; default, roles whose system
    prompt or rubric mentions ``\\boxed``. ``require_output``: no clean-run bonus for code that printed nothing
    and wrote no file (``code_silent``). ``penalize_repetition``: ``repeated_sentence`` for a reply that says one
    sentence three times or more.
    """

    name = "rules"

    def __init__(
        self,
        hindsight: bool = False,
        *,
        final_roles: Collection[str] | None = None,
        boxed_roles: Collection[str] | None = None,
        base: float = 5.0,
        weights: RuleWeights = DEFAULT_WEIGHTS,
        check_answers: bool = False,
        answer_format: str = "boxed",
        require_output: bool = False,
        penalize_repetition: bool = False,
    ) -> None:
        if check_answers and not hindsight:
            raise ValueError(
                "check_answers needs hindsight=True: upstream answers are checked against the expected answer, "
                "which the coach sees only once the episode has ended"
            )
        if answer_format not in ANSWER_FORMATS:
            raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")
        self.check_answers = check_answers
        self.require_output = require_output
        self.penalize_repetition = penalize_repetition
        self.answer_format = answer_format
        self.hindsight = hindsight
        self.final_roles = frozenset(final_roles) if final_roles is not None else None
        self.boxed_roles = frozenset(boxed_roles) if boxed_roles is not None else None
        self.base = base
        self.weights = weights
        if hindsight:
            self.name = "rules-hindsight"
        self.last_fired: list[list[Fired]] = []

    def judge(
        self, records: Sequence[ActionRecord], roles: Mapping[str, Role], context: str = ""
    ) -> list[Judgement]:
        fired = self.explain(records, roles)
        self.last_fired = fired
        out = []
        for rules in fired:
            score = min(10.0, max(0.0, self.base + sum(f.points for f in rules)))
            listed = "; ".join(str(f) for f in rules) or "no rule fired"
            out.append(
                Judgement(
                    score=score, rationale=f"rules: base {self.base:g}; {listed} => {score:g}", source="rules"
                )
            )
        return out

    async def ajudge(
        self, records: Sequence[ActionRecord], roles: Mapping[str, Role], context: str = ""
    ) -> list[Judgement]:
        return self.judge(records, roles, context)

    def explain(self, records: Sequence[ActionRecord], roles: Mapping[str, Role]) -> list[list[Fired]]:
        """The rules that fire for each record, in order (``judge`` sums them)."""
        groups = episodes(records)
        blames = {eid: self._blames(ep, roles) if self.hindsight else [] for eid, ep in groups.items()}
        return [self._fire(r, role_of(r, roles), groups[r.episode_id], blames[r.episode_id]) for r in records]

    # ------------------------------------------------------------------------------------------------ rules

    def _fire(
        self, r: ActionRecord, role: Role, episode: list[ActionRecord], blames: list[_Blame]
    ) -> list[Fired]:
        w = self.weights
        fired: list[Fired] = []
        caused_upstream = [b for b in blames if b.victim_step == r.step]
        # a role whose work was broken by a missing upstream artifact stays excused for the rest of its part
        # (its follow-up "I cannot proceed" reply and the missing submission are the same upstream failure)
        victim = any(b.victim_role == r.role and b.victim_step <= r.step for b in blames)
        answer = strip_think(r.visible_action or r.action)

        if not answer:
            fired.append(Fired("empty_answer", w.empty_answer))
        if r.action_clipped:
            fired.append(Fired("action_clipped", w.action_clipped))
        if self.penalize_repetition and (repeat := _repeated_sentence(answer)) is not None:
            fired.append(Fired("repeated_sentence", w.repeated_sentence, repeat))

        if r.tool_results:
            own = [
                t
                for t in r.tool_results
                if t.error and not _explained(t.error + "\n" + t.stderr, caused_upstream)
            ]
            if not any(t.error for t in r.tool_results):
                if self.require_output and r.ran_silently:
                    fired.append(
                        Fired("code_silent", w.code_silent, "ran cleanly, printed nothing, wrote no file")
                    )
                else:
                    fired.append(Fired("code_clean", w.code_clean))
            elif own:
                first = own[0]
                if first.timed_out:
                    fired.append(Fired("code_timeout", w.code_timeout, _one_line(first.error)))
                else:
                    fired.append(Fired("code_error", w.code_error, _one_line(first.error)))
                if any(t.kernel_restarted for t in own):
                    fired.append(Fired("kernel_died", w.kernel_died))
            elif caused_upstream:
                b = caused_upstream[0]
                fired.append(Fired("error_caused_upstream", 0.0, f"{b.file} missing, owed by {b.producer}"))
        elif role.runs_code and r.turn == 0:
            fired.append(Fired("no_code", w.no_code))

        if r.ends_turn and role.required_artifacts:
            missing = [a for a in role.required_artifacts if not _present(a, r.files_after)]
            if not missing:
                fired.append(Fired("artifacts_saved", w.artifacts_saved, ", ".join(role.required_artifacts)))
            for a in missing:
                if victim:
                    fired.append(Fired("artifact_missing_upstream", 0.0, a))
                else:
                    fired.append(Fired("artifact_missing", w.artifact_missing, a))

        if r.ends_turn and self._boxed(role):
            if _BOXED.search(answer):
                fired.append(Fired("answer_boxed", w.answer_boxed))
            elif self.answer_format == "boxed_or_statement":
                if extract_statement(answer) is not None:
                    fired.append(Fired("answer_stated", w.answer_boxed))
                else:  # same points as no_boxed_answer; the name says what was looked for
                    fired.append(Fired("no_answer_stated", w.no_boxed_answer))
            else:
                fired.append(Fired("no_boxed_answer", w.no_boxed_answer))

        if r.outcome is not None:
            fired.extend(self._answer_rules(r, role, answer, episode))
            fired.extend(self._outcome_rules(r, episode, blames, victim))
        return fired

    def _answer_rules(
        self, r: ActionRecord, role: Role, answer: str, episode: list[ActionRecord]
    ) -> list[Fired]:
        """Is a non-final role's stated answer right? (``check_answers``; the final role is the outcome's.)"""
        expected = (r.outcome or {}).get("expected")
        if not (self.check_answers and r.ends_turn and self._boxed(role)) or expected in (None, ""):
            return []
        if r.role in self._final_roles(episode):
            return []
        graded = grade_math(answer, expected, self.answer_format)
        if graded["answer"] is None:
            return []
        detail = f"{_one_line(graded['answer'], 40)}, expected {_one_line(str(expected), 40)}"
        if graded["correct"]:
            return [Fired("answer_correct", self.weights.answer_correct, detail)]
        return [Fired("answer_wrong", self.weights.answer_wrong, detail)]

    def _outcome_rules(
        self, r: ActionRecord, episode: list[ActionRecord], blames: list[_Blame], victim: bool
    ) -> list[Fired]:
        w = self.weights
        outcome = r.outcome or {}
        success = bool(outcome.get("success"))
        reward = _float(outcome.get("reward"))
        final_roles = self._final_roles(episode)
        last_of_role = max(x.step for x in episode if x.role == r.role) == r.step
        detail = f"reward {reward:g}" if reward is not None else ""
        if r.role in final_roles:
            if not last_of_role:
                return []
            if success:
                return [Fired("outcome_success", w.outcome_success, detail)]
            if self.hindsight and victim:
                return [Fired("outcome_failure_upstream", 0.0, detail)]
            points = w.outcome_failure * (1.0 - min(1.0, max(0.0, reward or 0.0)))
            return [Fired("outcome_failure", points, detail)]
        if not self.hindsight:
            return []
        if success:
            return [Fired("team_success", w.team_success, detail)]
        mine = [b for b in blames if b.producer == r.role]
        if mine:
            b = mine[0]
            return [
                Fired(
                    "caused_downstream_failure",
                    w.caused_downstream_failure,
                    f"{b.victim_role} at step {b.victim_step} failed: {b.file} missing",
                )
            ]
        return [Fired("team_failure", w.team_failure, detail)]

    def _final_roles(self, episode: list[ActionRecord]) -> Collection[str]:
        """The roles whose last action the outcome grades: as given, else the role of the episode's last record."""
        return self.final_roles if self.final_roles is not None else {episode[-1].role}

    def _boxed(self, role: Role) -> bool:
        if self.boxed_roles is not None:
            return role.name in self.boxed_roles
        return "\\boxed" in role.system_prompt or "\\boxed" in role.rubric

    # ------------------------------------------------------------------------------------------------ blame

    def _blames(self, episode: list[ActionRecord], roles: Mapping[str, Role]) -> list[_Blame]:
        """Failures in the episode caused by an artifact an earlier role was required to produce and did not."""
        found: list[_Blame] = []
        for r in episode:
            present = {_base(f.name) for f in r.files_before}
            for t in r.tool_results:
                if not t.error:
                    continue
                for name in _missing_files(t.error + "\n" + t.stderr):
                    base = _base(name)
                    if base in present:
                        continue  # the file was there: the agent used a wrong path, its own mistake
                    producers = [
                        x.role
                        for x in episode
                        if x.step < r.step
                        and x.role != r.role
                        and any(_base(a) == base for a in role_of(x, roles).required_artifacts)
                    ]
                    if producers:
                        found.append(_Blame(base, producers[-1], r.step, r.role, _one_line(t.error)))
        return found


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_REPEATS = 3


def _repeated_sentence(text: str) -> str | None:
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
            return f"{_one_line(sentence, 60)!r} x{n}"
    return None


def _missing_files(text: str) -> list[str]:
    text = strip_ansi(text)  # kernel tracebacks are coloured
    names: list[str] = []
    for pattern in _MISSING_FILE:
        for m in pattern.finditer(text):
            if m.group(1) not in names:
                names.append(m.group(1))
    return names


def _explained(text: str, blames: list[_Blame]) -> bool:
    return any(_base(n) == b.file for n in _missing_files(text) for b in blames)


def _present(artifact: str, files: Sequence[FileInfo]) -> bool:
    return any(f.name == artifact or _base(f.name) == _base(artifact) for f in files)


def _base(name: str) -> str:
    return posixpath.basename(name.replace("\\", "/"))


def _one_line(text: str | None, limit: int = 160) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _float(x: object) -> float | None:
    try:
        return float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
