"""A deterministic, offline coach that scores actions from their receipts alone.

Tests, CPU demos and ablations need a coach with no server, no cost and no randomness; it is also the yardstick an
LLM coach is compared with. Each action starts at ``base`` (5) and rubric objects (:mod:`mappa_envs.coach.rubrics`)
add or subtract points; the score is clamped to [0, 10] (and to the lowest ``cap`` that fired) and the rationale
lists every rule that fired, so a reward can always be explained. A pipeline adds a rule by putting a rubric on a
role (``Role(rubrics=(MyRubric(),))``); ``RuleCoach(rubrics=...)`` replaces the built-in set.

Rules (points in :class:`RuleWeights`):

- code: clean run (+2), error (-3), timeout (-3), kernel died (-1 more); a code role's first action with no code
  (-2); an empty answer (-3); an answer cut at the length limit (-1). With ``require_output=True`` a clean run
  pays only if it showed something (printed or displayed output, or a file written); a silent one gets
  ``code_silent`` (-1) instead: code that does nothing visible runs cleanly by construction. With
  ``penalize_repetition=True`` a reply that says the same sentence three or more times gets -1.
- progress (v2): a code turn that does not end the role's part and moves nothing on scores 0 (``no_progress``).
- artifacts, on the action that ends the role's part: all required files present and, since v2, non-empty (+2),
  each missing one (-2). Since v2, removing or emptying another role's required file costs -3
  (``removed_artifact``).
- answer format, on the action that ends the part of a role that declares ``Role.answer``: stated the way the
  pipeline's grader reads it (+1, ``answer_boxed`` / ``answer_stated``) or not (-2, ``no_boxed_answer`` /
  ``no_answer_stated``). The format comes from the pipeline (``answer_format`` is set once, on the env).
- outcome, when the record has one: the graded role's (``Role.graded``) last action gets success (+3) or failure
  (-2, softened by a partial reward); in hindsight every other role gets team success (+1) or failure (-1).
- intermediate answers (opt-in, ``check_answers=True``, hindsight only): the stated answer of a non-graded role
  is checked with its role's format against the outcome's ``expected`` answer: right (+2), wrong (-1).
- hindsight blame: when an action's code fails because a file is missing that another, earlier role was required
  to produce, that error (and the artifacts and outcome it cost) is not held against the acting agent, and every
  action of the answerable role gets ``caused_downstream_failure`` (-3) instead. Since v2 the answerable role is
  the one that left the file missing: the producer if it never saved it (or saved it empty), the role that removed
  it otherwise — and no one is excused for a file it removed itself. Since v2 a file left unreadable (a later
  role's code fails unpickling or parsing it, unchanged since) is blamed like a missing one.

Records of ``-v0`` / ``-v1`` envs (``record.env_id``) are scored with the rules those versions had (``legacy``: no
progress or removal rules, empty files count, the producer is blamed whoever removed the file), so published
configs reproduce; ``rules="v2"`` / ``rules="legacy"`` fixes the choice.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from mappa_envs.coach.base import episodes, role_of
from mappa_envs.coach.rubrics import (
    AnswerCheck,
    ArtifactRemoval,
    Artifacts,
    Blame,
    CodeRun,
    Fired,
    Outcome,
    Progress,
    ReplyHygiene,
    Rubric,
    RubricContext,
    StatedAnswer,
    base_name,
    one_line,
    present,
)
from mappa_envs.pipeline import Role
from mappa_envs.records import ActionRecord, Judgement
from mappa_envs.text import strip_ansi, strip_think

_MISSING_FILE = (
    re.compile(r"No such file or directory:\s*['\"]([^'\"\n]+)['\"]"),
    re.compile(r"FileNotFoundError:\s*(?:\[Errno 2\][^'\"\n]*)?['\"]?([\w./\\-]+\.\w+)['\"]?"),
    re.compile(r"[Ff]ile ['\"]?([\w./\\-]+\.\w+)['\"]? does not exist"),
)
_UNREADABLE = re.compile(
    r"UnpicklingError|pickle data was truncated|EOFError: Ran out of input|EmptyDataError|No columns to parse|"
    r"BadZipFile|invalid load key"
)
_VERSION = re.compile(r"-v(\d+)$")
LEGACY_BEFORE = 2
"""Env versions below this are scored with the legacy rules (see the module docstring)."""


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
    removed_artifact: float = -3.0


DEFAULT_WEIGHTS = RuleWeights()


class RuleCoach:
    """Score actions by rubric objects over the receipts (see the module docstring).

    ``hindsight`` enables blame across the episode (pass all records of a finished episode in one call).
    ``final_roles``: roles whose last action the episode outcome grades; default, the roles declared
    ``graded``, else the role of the episode's last record. ``answer_roles``: only these roles' stated answers
    are checked (default: every role that declares ``Role.answer``). ``require_output``: no clean-run bonus for
    code that printed nothing and wrote no file (``code_silent``). ``penalize_repetition``:
    ``repeated_sentence`` for a reply that says one sentence three times or more. ``rubrics``: replace the
    built-in rubric set (a role's own ``Role.rubrics`` are always added). ``rules``: ``"auto"`` (by each
    record's env version), ``"v2"`` or ``"legacy"``. ``corrections``: each judgement carries the role's
    ``Role.corrector`` reply (what it should have said, for an action that fell short), a training target for
    the trainer's supervised term; the score is unchanged.
    """

    name = "rules"

    def __init__(
        self,
        hindsight: bool = False,
        *,
        final_roles: Collection[str] | None = None,
        answer_roles: Collection[str] | None = None,
        base: float = 5.0,
        weights: RuleWeights = DEFAULT_WEIGHTS,
        check_answers: bool = False,
        require_output: bool = False,
        penalize_repetition: bool = False,
        rubrics: Sequence[Rubric] | None = None,
        rules: str = "auto",
        corrections: bool = False,
        answer_format: str | None = None,
        boxed_roles: Collection[str] | None = None,
    ) -> None:
        if answer_format is not None or boxed_roles is not None:
            given = "answer_format" if answer_format is not None else "boxed_roles"
            raise ValueError(
                f"RuleCoach({given}=...) is gone: the pipeline declares how each role states its answer "
                "(Role.answer), set once on the env. Pass answer_format to the env (make(..., "
                "answer_format=...) or env_kwargs.answer_format in a config) and drop it from coach_kwargs; "
                "use answer_roles= to restrict which roles' answers are checked"
            )
        if check_answers and not hindsight:
            raise ValueError(
                "check_answers needs hindsight=True: upstream answers are checked against the expected answer, "
                "which the coach sees only once the episode has ended"
            )
        if rules not in ("auto", "v2", "legacy"):
            raise ValueError(f"rules must be 'auto', 'v2' or 'legacy', got {rules!r}")
        self.check_answers = check_answers
        self.require_output = require_output
        self.penalize_repetition = penalize_repetition
        self.hindsight = hindsight
        self.final_roles = frozenset(final_roles) if final_roles is not None else None
        self.answer_roles = frozenset(answer_roles) if answer_roles is not None else None
        self.base = base
        self.weights = weights
        self.rules = rules
        self.corrections = corrections
        self.rubrics: tuple[Rubric, ...] = tuple(rubrics) if rubrics is not None else self.default_rubrics()
        for rubric in self.rubrics:
            if not callable(getattr(rubric, "score", None)):
                raise TypeError(f"every rubric needs a score(record, context) method; got {rubric!r}")
        if hindsight:
            self.name = "rules-hindsight"
        self.last_fired: list[list[Fired]] = []

    def default_rubrics(self) -> tuple[Rubric, ...]:
        """The built-in rubric set for this coach's options, in the order their rules are listed."""
        rubrics: list[Rubric] = [
            ReplyHygiene(self.penalize_repetition),
            CodeRun(self.require_output),
            Progress(),
            Artifacts(),
            ArtifactRemoval(),
            StatedAnswer(self.answer_roles),
        ]
        if self.check_answers:
            rubrics.append(AnswerCheck())
        rubrics.append(Outcome())
        return tuple(rubrics)

    def judge(
        self, records: Sequence[ActionRecord], roles: Mapping[str, Role], context: str = ""
    ) -> list[Judgement]:
        fired = self.explain(records, roles)
        self.last_fired = fired
        corrections = self._corrections(records, roles) if self.corrections else [None] * len(records)
        out = []
        for rules, correction in zip(fired, corrections, strict=True):
            score = min(10.0, max(0.0, self.base + sum(f.points for f in rules)))
            caps = [f.cap for f in rules if f.cap is not None]
            if caps:
                score = max(0.0, min(score, *caps))
            listed = "; ".join(str(f) for f in rules) or "no rule fired"
            out.append(
                Judgement(
                    score=score,
                    rationale=f"rules: base {self.base:g}; {listed} => {score:g}",
                    source="rules",
                    correction=correction,
                )
            )
        return out

    def _corrections(self, records: Sequence[ActionRecord], roles: Mapping[str, Role]) -> list[str | None]:
        """Each record's correction from its role's pipeline-declared corrector (None where it has none)."""
        groups = episodes(records)
        out: list[str | None] = []
        for r in records:
            role = role_of(r, roles)
            out.append(role.corrector(r, role, groups[r.episode_id]) if role.corrector is not None else None)
        return out

    async def ajudge(
        self, records: Sequence[ActionRecord], roles: Mapping[str, Role], context: str = ""
    ) -> list[Judgement]:
        return self.judge(records, roles, context)

    def explain(self, records: Sequence[ActionRecord], roles: Mapping[str, Role]) -> list[list[Fired]]:
        """The rules that fire for each record, in order (``judge`` sums them)."""
        groups = episodes(records)
        roles = dict(roles)
        blames = {
            eid: self._blames(ep, roles, self._legacy(ep[0])) if self.hindsight else []
            for eid, ep in groups.items()
        }
        return [self._fire(r, roles, groups[r.episode_id], blames[r.episode_id]) for r in records]

    def _legacy(self, record: ActionRecord) -> bool:
        if self.rules != "auto":
            return self.rules == "legacy"
        m = _VERSION.search(record.env_id or "")
        return m is not None and int(m.group(1)) < LEGACY_BEFORE

    def _fire(
        self, r: ActionRecord, roles: dict[str, Role], episode: list[ActionRecord], blames: list[Blame]
    ) -> list[Fired]:
        role = role_of(r, roles)
        # a role whose work was broken by a missing upstream artifact stays excused for the rest of its part
        # (its follow-up "I cannot proceed" reply and the missing submission are the same upstream failure)
        ctx = RubricContext(
            role=role,
            roles=roles,
            episode=episode,
            answer=strip_think(r.visible_action or r.action),
            weights=self.weights,
            hindsight=self.hindsight,
            final_roles=self._final_roles(episode, roles),
            legacy=self._legacy(r),
            blames=blames,
            caused_upstream=[b for b in blames if b.victim_step == r.step],
            victim=any(b.victim_role == r.role and b.victim_step <= r.step for b in blames),
        )
        fired: list[Fired] = []
        for rubric in (*self.rubrics, *role.rubrics):
            fired.extend(rubric.score(r, ctx) or ())
        return fired

    def _final_roles(self, episode: list[ActionRecord], roles: Mapping[str, Role]) -> Collection[str]:
        """The roles whose last action the outcome grades: as given, else those declared ``graded``, else the
        role of the episode's last record."""
        if self.final_roles is not None:
            return self.final_roles
        graded = {name for name, role in roles.items() if role.graded}
        return graded or {episode[-1].role}

    # ------------------------------------------------------------------------------------------------ blame

    def _blames(self, episode: list[ActionRecord], roles: Mapping[str, Role], legacy: bool) -> list[Blame]:
        """Failures in the episode caused by a file another role was answerable for and did not leave."""
        found: list[Blame] = []
        for r in episode:
            here = {base_name(f.name) for f in r.files_before if legacy or f.size > 0}
            for t in r.tool_results:
                if not t.error:
                    continue
                for name in _missing_files(t.error + "\n" + t.stderr):
                    base = base_name(name)
                    if base in here:
                        continue  # the file was there: the agent used a wrong path, its own mistake
                    producers = [
                        x.role
                        for x in episode
                        if x.step < r.step
                        and x.role != r.role
                        and any(base_name(a) == base for a in role_of(x, roles).required_artifacts)
                    ]
                    if not producers:
                        continue
                    answerable = producers[-1] if legacy else _answerable(base, producers[-1], r, episode)
                    if answerable is not None and answerable != r.role:
                        found.append(Blame(base, answerable, r.step, r.role, one_line(t.error)))
                if not legacy and _UNREADABLE.search(t.error + "\n" + t.stderr):
                    found.extend(_unreadable(r, t.code, one_line(t.error), episode, roles))
        return found


def _unreadable(
    victim: ActionRecord, code: str, error: str, episode: list[ActionRecord], roles: Mapping[str, Role]
) -> list[Blame]:
    """v2: the victim's code failed reading a file another role left, unchanged since: that role saved it
    unreadable (a truncated pickle, an empty CSV), so it is answerable, as for a missing file."""
    out = []
    for x in reversed([x for x in episode if x.step < victim.step and x.role != victim.role]):
        for a in role_of(x, roles).required_artifacts:
            base = base_name(a)
            if base not in code or any(b.file == base for b in out):
                continue
            left = {base_name(f.name): f.size for f in x.files_after}
            now = {base_name(f.name): f.size for f in victim.files_before}
            if left.get(base) and left.get(base) == now.get(base):
                out.append(Blame(base, x.role, victim.step, victim.role, error, kind="unreadable"))
    return out[:1] if len(out) == 1 else []  # several candidates: no way to tell whose file it was


def _answerable(file: str, producer: str, victim: ActionRecord, episode: list[ActionRecord]) -> str | None:
    """Who left ``file`` missing for ``victim``: ``producer`` if its part ended without the file (or with it
    empty), else the role of the last action before ``victim`` that removed or emptied it."""
    part = [x for x in episode if x.role == producer and x.step < victim.step]
    if not part or not present(file, part[-1].files_after, legacy=False):
        return producer
    remover = None
    for x in episode:
        if part[-1].step < x.step <= victim.step:
            if present(file, x.files_before, legacy=False) and not present(file, x.files_after, legacy=False):
                remover = x.role
    return remover


def _missing_files(text: str) -> list[str]:
    text = strip_ansi(text)  # kernel tracebacks are coloured
    names: list[str] = []
    for pattern in _MISSING_FILE:
        for m in pattern.finditer(text):
            if m.group(1) not in names:
                names.append(m.group(1))
    return names


def explained(text: str, blames: Sequence[Blame]) -> bool:
    """Does ``text`` (an error) name a missing file, or is it the unreadable-file error, that one of ``blames``
    puts on another role?"""
    if any(b.kind == "unreadable" and b.error and b.error in text for b in blames):
        return True
    return any(base_name(n) == b.file for n in _missing_files(text) for b in blames if b.kind == "missing")
