"""RuleCoach on hand-built receipts, including the hindsight credit-assignment story (missing X_test.pkl)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

try:
    from tests.coach_fixtures import (
        DS_ROLES,
        FAILED,
        MATH_ROLES,
        SUCCEEDED,
        TRAIN,
        missing_x_test_episode,
        record,
    )
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from coach_fixtures import DS_ROLES, FAILED, MATH_ROLES, SUCCEEDED, TRAIN, missing_x_test_episode, record  # type: ignore

from mappa_envs.coach import Coach, RuleCoach
from mappa_envs.pipelines.math_common import MathAnswer
from mappa_envs.records import FileInfo, ToolResult

ALL_DE = [*TRAIN, FileInfo("X_train.pkl", 1), FileInfo("y_train.pkl", 1), FileInfo("X_test.pkl", 1)]


def rules_of(coach: RuleCoach, i: int = 0) -> set[str]:
    return {f.rule for f in coach.last_fired[i]}


def test_is_a_coach() -> None:
    assert isinstance(RuleCoach(), Coach)


def test_clean_run_with_all_artifacts_scores_high() -> None:
    coach = RuleCoach()
    r = record(
        "data_engineer", 0, "```python\n...\n```", tool_results=[ToolResult("...", "ok")], after=ALL_DE
    )
    [j] = coach.judge([r], DS_ROLES)
    assert j.score == 9.0 and j.source == "rules"
    assert rules_of(coach) == {"code_clean", "artifacts_saved"}
    assert "code_clean +2" in j.rationale and "=> 9" in j.rationale


def test_code_error_and_missing_artifact_score_low() -> None:
    coach = RuleCoach()
    r = record(
        "modeler", 1, "x", tool_results=[ToolResult("1/0", error="ZeroDivisionError: division by zero")]
    )
    [j] = coach.judge([r], DS_ROLES)
    assert j.score == 0.0  # 5 - 3 (error) - 2 (model.pkl missing)
    assert "code_error (ZeroDivisionError: division by zero) -3" in j.rationale
    assert "artifact_missing (model.pkl) -2" in j.rationale


def test_timeout_and_dead_kernel() -> None:
    coach = RuleCoach()
    timeout = ToolResult("while True: pass", error="Timeout: cell exceeded 30 s", timed_out=True)
    died = ToolResult("x = bytearray(10**12)", error="KernelDied: restarted", kernel_restarted=True)
    coach.judge(
        [record("modeler", 0, "a", tool_results=[timeout]), record("modeler", 1, "b", tool_results=[died])],
        DS_ROLES,
    )
    assert "code_timeout" in rules_of(coach, 0)
    assert {"code_error", "kernel_died"} <= rules_of(coach, 1)


def test_code_role_without_code_and_empty_or_clipped_answers() -> None:
    coach = RuleCoach()
    no_code = record("modeler", 0, "I would train a random forest.")
    empty = record("solver", 0, "<think>hmm</think>", env_id="math-chat-v0")
    clipped = record("solver", 1, "long...", env_id="math-chat-v0")
    clipped.action_clipped = True
    coach.judge([no_code, empty, clipped], {**DS_ROLES, **MATH_ROLES})
    assert "no_code" in rules_of(coach, 0)
    assert "empty_answer" in rules_of(coach, 1)
    assert "action_clipped" in rules_of(coach, 2)


def test_later_turns_of_a_code_role_may_end_without_code() -> None:
    coach = RuleCoach()
    coach.judge([record("data_engineer", 2, "All files saved.", turn=2, after=ALL_DE)], DS_ROLES)
    assert rules_of(coach) == {"artifacts_saved"}


def test_artifacts_are_checked_only_when_the_role_ends_its_part() -> None:
    coach = RuleCoach()
    mid = record("data_engineer", 0, "x", tool_results=[ToolResult("...", "ok")], ends_turn=False)
    [j] = coach.judge([mid], DS_ROLES)
    assert rules_of(coach) == {"code_clean"} and j.score == 7.0


def test_artifact_in_a_subfolder_counts() -> None:
    coach = RuleCoach()
    after = [*TRAIN, FileInfo("out/model.pkl", 10)]
    coach.judge([record("modeler", 0, "x", tool_results=[ToolResult("...")], after=after)], DS_ROLES)
    assert "artifacts_saved" in rules_of(coach)


@pytest.mark.parametrize(
    ("answer", "rule"),
    [
        ("So the result is \\boxed{42}.", "answer_boxed"),
        ("The final answer is 42.", "no_boxed_answer"),
        ("\\boxed{}", "no_boxed_answer"),
        ("<think>\\boxed{41}</think>The answer is 42.", "no_boxed_answer"),
    ],
)
def test_boxed_answer_format_for_roles_told_to_box(answer: str, rule: str) -> None:
    coach = RuleCoach()
    coach.judge([record("verifier", 2, answer, env_id="math-chat-v0")], MATH_ROLES)
    assert rule in rules_of(coach)
    coach.judge([record("solver", 0, "The final answer is 42.", env_id="math-chat-v0")], MATH_ROLES)
    assert not rules_of(coach) & {"answer_boxed", "no_boxed_answer"}  # the solver was never told to box


def test_a_stated_answer_counts_when_the_format_accepts_statements() -> None:
    """With the env's ``answer_format="boxed_or_statement"`` the coach pays the format the grader accepts."""
    stated = record("verifier", 2, "The answer is 45.", env_id="math-chat-v0")
    lenient_roles = {
        **MATH_ROLES,
        "verifier": replace(MATH_ROLES["verifier"], answer=MathAnswer("boxed_or_statement")),
    }
    strict, lenient = RuleCoach(), RuleCoach()
    [a], [b] = strict.judge([stated], MATH_ROLES), lenient.judge([stated], lenient_roles)
    assert "no_boxed_answer" in rules_of(strict) and "answer_stated" in rules_of(lenient)
    assert b.score - a.score == 3.0
    lenient.judge([record("verifier", 2, "It is 45, I think.", env_id="math-chat-v0")], lenient_roles)
    assert "no_answer_stated" in rules_of(lenient)  # same -2, named for what the coach looked for


def test_answer_roles_restrict_the_format_rule_and_the_old_kwargs_say_where_the_setting_went() -> None:
    roles = {**MATH_ROLES, "solver": replace(MATH_ROLES["solver"], answer=MathAnswer("boxed"))}
    coach = RuleCoach()
    coach.judge([record("solver", 0, "42", env_id="math-chat-v0")], roles)
    assert "no_boxed_answer" in rules_of(coach)
    only_verifier = RuleCoach(answer_roles={"verifier"})
    only_verifier.judge([record("solver", 0, "42", env_id="math-chat-v0")], roles)
    assert "no_boxed_answer" not in rules_of(only_verifier)
    for old in ({"answer_format": "boxed_or_statement"}, {"boxed_roles": {"solver"}}):
        with pytest.raises(ValueError, match="env_kwargs.answer_format"):
            RuleCoach(**old)


def test_outcome_goes_to_the_final_role_online() -> None:
    coach = RuleCoach()
    won = {"success": True, "reward": 1.0, "correct": True}
    [j] = coach.judge([record("verifier", 2, "\\boxed{4}", env_id="math-chat-v0", outcome=won)], MATH_ROLES)
    assert {"answer_boxed", "outcome_success"} <= rules_of(coach) and j.score == 9.0
    lost = {"success": False, "reward": 0.0, "correct": False}
    [j] = coach.judge([record("verifier", 2, "\\boxed{5}", env_id="math-chat-v0", outcome=lost)], MATH_ROLES)
    assert "outcome_failure" in rules_of(coach) and j.score == 4.0


def test_partial_reward_softens_a_failure() -> None:
    coach = RuleCoach(final_roles={"analyst"})
    after = [*TRAIN, FileInfo("submission.csv", 10)]
    partial = {"success": False, "reward": 0.5}
    coach.judge(
        [record("analyst", 0, "x", tool_results=[ToolResult("...")], after=after, outcome=partial)], DS_ROLES
    )
    [fired] = [f for f in coach.last_fired[0] if f.rule == "outcome_failure"]
    assert fired.points == -1.0


def test_online_the_crashing_analyst_takes_the_blame() -> None:
    """Online (the reference's way), the analyst who crashed on the missing file scores lowest."""
    coach = RuleCoach(hindsight=False)
    de, mo, an = coach.judge(missing_x_test_episode(), DS_ROLES)
    assert an.score < de.score and an.score == 0.0
    assert "code_error" in rules_of(coach, 2) and "outcome_failure" in rules_of(coach, 2)
    assert "caused_downstream_failure" not in rules_of(coach, 0)


def test_hindsight_blames_the_data_engineer_who_forgot_x_test() -> None:
    """The credit-assignment story: the DE forgot X_test.pkl, so the DE scores lowest and the analyst is excused."""
    coach = RuleCoach(hindsight=True)
    de, mo, an = coach.judge(missing_x_test_episode(), DS_ROLES)
    assert de.score < an.score and de.score < mo.score
    assert de.score == 2.0 and an.score == 5.0 and mo.score == 8.0
    assert "caused_downstream_failure" in rules_of(coach, 0) and "artifact_missing" in rules_of(coach, 0)
    assert "analyst at step 2 failed: X_test.pkl missing" in de.rationale
    assert rules_of(coach, 2) == {
        "error_caused_upstream",
        "artifact_missing_upstream",
        "outcome_failure_upstream",
    }
    assert "X_test.pkl missing, owed by data_engineer" in an.rationale
    assert rules_of(coach, 1) == {"code_clean", "artifacts_saved", "team_failure"}


def test_hindsight_does_not_excuse_a_wrong_path_to_an_existing_file() -> None:
    ep = missing_x_test_episode()
    for r in ep[1:]:  # the file was there after all: the analyst's own mistake
        r.files_before = [*r.files_before, FileInfo("X_test.pkl", 100)]
    coach = RuleCoach(hindsight=True)
    coach.judge(ep, DS_ROLES)
    assert "code_error" in rules_of(coach, 2) and "caused_downstream_failure" not in rules_of(coach, 0)


def test_hindsight_does_not_excuse_a_missing_task_input() -> None:
    ep = missing_x_test_episode()
    err = "FileNotFoundError: [Errno 2] No such file or directory: 'extra.csv'"
    ep[2].tool_results = [ToolResult("pd.read_csv('extra.csv')", stderr=err, error=err)]
    coach = RuleCoach(hindsight=True)
    coach.judge(ep, DS_ROLES)
    assert "code_error" in rules_of(coach, 2) and "team_failure" in rules_of(coach, 0)


def test_hindsight_team_success_credits_every_role() -> None:
    ep = missing_x_test_episode(outcome=SUCCEEDED)
    ep[2].tool_results = [ToolResult("...", "written")]
    ep[2].files_after = [*ep[2].files_after, FileInfo("submission.csv", 100)]
    coach = RuleCoach(hindsight=True)
    coach.judge(ep, DS_ROLES)
    assert "team_success" in rules_of(coach, 1) and "outcome_success" in rules_of(coach, 2)


def test_scores_are_clamped_and_deterministic() -> None:
    coach = RuleCoach(hindsight=True)
    ep = missing_x_test_episode(outcome=FAILED)
    first = coach.judge(ep, DS_ROLES)
    assert first == coach.judge(ep, DS_ROLES) == asyncio.run(coach.ajudge(ep, DS_ROLES))
    assert all(0.0 <= j.score <= 10.0 for j in first)


def test_unknown_role_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="roles given"):
        RuleCoach().judge([record("nobody", 0)], DS_ROLES)


def test_hindsight_reads_coloured_kernel_tracebacks() -> None:
    ep = missing_x_test_episode()
    coloured = (
        "\x1b[0;31mFileNotFoundError\x1b[0m: [Errno 2] No such file or directory: \x1b[1m'X_test.pkl'\x1b[0m"
    )
    ep[2].tool_results = [
        ToolResult("pd.read_pickle('X_test.pkl')", stderr=coloured, error="\x1b[0;31mFileNotFoundError")
    ]
    coach = RuleCoach(hindsight=True)
    coach.judge(ep, DS_ROLES)
    assert "caused_downstream_failure" in rules_of(coach, 0) and "error_caused_upstream" in rules_of(coach, 2)


def _math_episode(solver: str, coder: str, verifier: str, expected: str, success: bool) -> list:
    outcome = {"success": success, "reward": float(success), "correct": success, "expected": expected}
    kw = {"env_id": "math-chat-v0", "outcome": outcome}
    return [
        record("solver", 0, solver, **kw),
        record("coder", 1, coder, **kw),
        record("verifier", 2, verifier, **kw),
    ]


def test_check_answers_credits_a_right_solver_behind_a_wrong_verifier() -> None:
    """The per-agent credit an LLM coach gives: the right upstream answer is rewarded even when the team fails."""
    from mappa_envs.pipelines.math_chat import CODER, SOLVER, SPEC, VERIFIER

    roles = {r.name: r for r in (SOLVER, CODER, VERIFIER)}
    ep = _math_episode(
        "5 + 2 = 7, so \\boxed{7}", "It printed 8. The answer is 8.", "\\boxed{8}", "7", success=False
    )
    ep[1].tool_results = [ToolResult("print(5 + 3)", "8")]
    plain = RuleCoach(hindsight=True).judge(ep, roles)
    lenient = SPEC.with_answer_format(MathAnswer("boxed_or_statement"))
    lenient_roles = {r.name: r for r in lenient.roles}
    checking = RuleCoach(hindsight=True, check_answers=True)
    solver, coder, verifier = checking.judge(ep, lenient_roles)
    assert "answer_correct" in rules_of(checking, 0) and "answer_wrong" in rules_of(checking, 1)
    assert solver.score == plain[0].score + 2
    assert (
        coder.score == plain[1].score - 1 + 3
    )  # wrong (-1), but stated, so no longer "no_answer_stated" (-2 -> +1)
    assert verifier.score == plain[2].score  # the final role is graded by the outcome, not twice
    assert "8, expected 7" in coder.rationale

    boxed_only = RuleCoach(hindsight=True, check_answers=True)  # the pipeline's default format, "boxed"
    boxed_only.judge(ep, roles)
    assert "answer_correct" in rules_of(boxed_only, 0)
    assert not rules_of(boxed_only, 1) & {"answer_correct", "answer_wrong"}  # "the answer is 8" is not boxed

    ep = _math_episode("I am not sure.", "```python\nprint(5+2)\n```", "\\boxed{7}", "7", success=True)
    checking.judge(ep, lenient_roles)
    assert not rules_of(checking, 0) & {
        "answer_correct",
        "answer_wrong",
    }  # no answer stated: nothing to check
    default = RuleCoach(hindsight=True)
    default.judge(_math_episode("\\boxed{7}", "\\boxed{8}", "\\boxed{7}", "7", success=True), roles)
    fired = {f.rule for rules in default.last_fired for f in rules}
    assert "answer_boxed" in fired and not fired & {"answer_correct", "answer_wrong"}  # off by default


def test_check_answers_needs_hindsight_and_a_known_format() -> None:
    with pytest.raises(ValueError, match="needs hindsight=True"):
        RuleCoach(check_answers=True)
    with pytest.raises(ValueError, match="answer_format"):
        MathAnswer("latex")


def test_require_output_pays_no_clean_run_bonus_for_silent_code() -> None:
    """Seed 1's hack (docs/RESULTS.md): code that prints nothing runs cleanly by construction."""
    from mappa_envs.pipelines.math_chat import CODER, SOLVER, VERIFIER

    roles = {r.name: r for r in (SOLVER, CODER, VERIFIER)}
    ep = _math_episode("\\boxed{7}", "```python\nx = 5 + 2\n```", "\\boxed{7}", "7", success=True)
    ep[1].tool_results = [ToolResult("x = 5 + 2", "")]
    lenient = RuleCoach(hindsight=True)
    strict = RuleCoach(hindsight=True, require_output=True)
    lenient_coder = lenient.judge(ep, roles)[1]
    strict_coder = strict.judge(ep, roles)[1]
    # off by default: the lenient coach still pays the clean run
    assert "code_clean" in rules_of(lenient, 1) and "code_silent" not in rules_of(lenient, 1)
    assert "code_silent" in rules_of(strict, 1) and "code_clean" not in rules_of(strict, 1)
    assert strict_coder.score == lenient_coder.score - 2 - 1
    assert "printed nothing" in strict_coder.rationale

    # any cell's output counts
    ep[1].tool_results = [ToolResult("x = 5 + 2", ""), ToolResult("print(x)", "7\n")]
    strict.judge(ep, roles)
    assert "code_clean" in rules_of(strict, 1)

    # a file written is evidence of work
    ep[1].tool_results = [ToolResult("open('a.txt','w').write('7')", "")]
    ep[1].files_after = [*ep[1].files_before, FileInfo("a.txt", 1)]
    strict.judge(ep, roles)
    assert "code_clean" in rules_of(strict, 1)

    ep[1].tool_results = [ToolResult("1/0", "", error="ZeroDivisionError: division by zero")]
    strict.judge(ep, roles)
    assert "code_error" in rules_of(strict, 1) and "code_silent" not in rules_of(strict, 1)


def test_penalize_repetition_marks_a_reply_that_says_one_sentence_over_and_over() -> None:
    """Round 2's coached replies: "Your answer is 9." until the token limit, which the grader never minds."""
    looping = "4 + 5 = 9. Your answer is 9. Your answer is 9.\nYour  answer is 9. Your answer"
    plain, strict = RuleCoach(), RuleCoach(penalize_repetition=True)
    [a] = plain.judge([record("solver", 0, looping, env_id="math-chat-v0")], MATH_ROLES)
    [b] = strict.judge([record("solver", 0, looping, env_id="math-chat-v0")], MATH_ROLES)
    assert "repeated_sentence" not in rules_of(plain)  # off by default
    assert "repeated_sentence" in rules_of(strict) and b.score == a.score - 1
    assert "'your answer is 9.' x3" in b.rationale
    for fine in (
        "4 + 5 = 9. Your answer is 9.",  # said once
        "Yes. Yes. Yes. The answer is 9.",  # too short to be a sentence
        "```python\nfor i in range(3):\n    print(i)\n    print(i)\n    print(i)\n```\nIt printed 0 1 2.",
    ):
        strict.judge([record("solver", 0, fine, env_id="math-chat-v0")], MATH_ROLES)
        assert "repeated_sentence" not in rules_of(strict), fine


# ------------------------------------------------------------------------------ what pipelines declare


def test_no_coach_module_imports_a_grader() -> None:
    """Domain knowledge comes from the pipeline's roles (Role.answer), never from a grader import or \\boxed sniffing."""
    import ast
    from pathlib import Path

    import mappa_envs.coach

    for path in Path(mappa_envs.coach.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = [
            n.module if isinstance(n, ast.ImportFrom) else a.name
            for n in ast.walk(tree)
            if isinstance(n, ast.Import | ast.ImportFrom)
            for a in (n.names if isinstance(n, ast.Import) else [n])
        ]
        assert not [m for m in imported if m and ("grading" in m or "pipelines" in m)], path.name
        assert "system_prompt" not in path.read_text(), path.name  # no sniffing of prompts


def test_a_pipeline_adds_a_rubric_on_a_role() -> None:
    from mappa_envs.coach.rubrics import Fired

    class NoPlots:
        name = "no_plots"

        def score(self, record, context):
            png = [f.name for f in record.files_written() if f.name.endswith(".png")]
            return [Fired("plot_written", -1.0, ", ".join(png))] if png else []

    roles = {**DS_ROLES, "modeler": replace(DS_ROLES["modeler"], rubrics=(NoPlots(),))}
    after = [*TRAIN, FileInfo("model.pkl", 10), FileInfo("fig.png", 5)]
    r = record(
        "modeler", 1, "x", tool_results=[ToolResult("...", "ok")], after=after, env_id="dsbench-3agent-v2"
    )
    [plain], [with_rubric] = RuleCoach().judge([r], DS_ROLES), RuleCoach().judge([r], roles)
    assert with_rubric.score == plain.score - 1 and "plot_written (fig.png) -1" in with_rubric.rationale
    with pytest.raises(TypeError, match="score"):
        replace(DS_ROLES["modeler"], rubrics=(object(),))


def test_the_maths_pipelines_declare_answer_format_graded_role_and_the_env_sets_it_once() -> None:
    from pathlib import Path

    import yaml

    from mappa_envs.pipelines import math_chat, math_debate

    spec = math_chat.raw_env(answer_format="boxed_or_statement", kernel_pool=0).spec
    assert {r.name: r.answer.name for r in spec.roles} == dict.fromkeys(
        ("solver", "coder", "verifier"), "boxed_or_statement"
    )
    assert [r.name for r in spec.roles if r.graded] == ["verifier"]
    debate = math_debate.make_spec(2, 1, "boxed")
    assert [r.name for r in debate.roles if r.graded] == ["judge"] and all(r.answer for r in debate.roles)
    for path in sorted(Path(__file__).resolve().parents[1].glob("configs/*.yaml")):
        coach_kwargs = (yaml.safe_load(path.read_text()).get("env_kwargs") or {}).get("coach_kwargs") or {}
        assert "answer_format" not in coach_kwargs, path.name  # once, on the env
