r"""Math Debate: k debaters argue for r rounds, then a judge gives the final answer.

| | |
|---|---|
| Creation | ``mappa_envs.make("math-debate-v2", debaters=3, rounds=2)`` |
| Agents | ``debater_0`` … ``debater_{k-1}``, ``judge`` |
| Turns | each debater once per round (round 1: all debaters, round 2: all debaters, …), then the judge once |
| Action space | ``AgentText(max_length=32768)`` |
| Observation space | ``Dict({"messages": ChatMessages()})`` |
| Parallel API | no |
| Code | none (no agent runs code, so no kernel is started) |

### Observation Space
A debater sees the problem and, from round 2 on, the *other* debaters' replies of the previous round (not those
of the current round, so nobody answers after seeing the others' current answers). The judge sees every debater's
reply of every round.

### Action Space
The reply as text; ``<think>`` blocks are removed before anyone sees it.

### Rewards
The bare env pays 1 to every agent at the end when the last ``\boxed{}`` of the judge's reply equals the answer
(``math_verify``), else 0; ``outcome`` in every agent's final info, receipts in ``infos[agent]["record"]``.
``make()`` pays per-action coach scores / 10 instead by default (``reward="coach"``, hindsight rule coach);
``reward="outcome"`` keeps the outcome reward (see ``docs/COACH.md``).

### Version History
* v0: initial release.
* v1: another agent's reply that ends inside a code block (cut at the token limit) is shown closed and marked
  (``close_fences=True``); v0 showed the open fence, and the next agent tended to close it and copy the prompt.
* v2: ``make(reward="outcome")`` (and the outcome part of a mixture) pays the graded outcome to every action of
  every agent, as the MAPPA paper's baseline does; v0 and v1 booked it on each agent's last action only, so an
  agent's earlier turns (a coder's code-running turn) were trained on 0. The rules coach pays for progress: a
  code turn that does not end a role's part and moves nothing on scores 0 (``no_progress``), an empty file is not a
  saved artifact, removing another role's file costs ``removed_artifact`` and its blame (docs/COACH.md).
"""

from __future__ import annotations

from typing import Any

from mappa_envs.engine import PipelineEnv
from mappa_envs.math_tasks import load_math_tasks
from mappa_envs.pipeline import LATEST_VERSION, PipelineSpec, Role, debate, versioned
from mappa_envs.pipelines.math_common import MathAnswer, correct_math, grade_last_role, render_problem


def make_spec(debaters: int = 3, rounds: int = 2, answer_format: str = "boxed") -> PipelineSpec:
    """The debate pipeline for ``debaters`` agents and ``rounds`` rounds."""
    if debaters < 2:
        raise ValueError(f"a debate needs at least 2 debaters, got {debaters}")
    team = f"a debate of {debaters} agents over {rounds} round(s), decided by a Judge"
    answer = MathAnswer(answer_format)
    debater_roles = tuple(
        Role(
            name=f"debater_{i}",
            title=f"Debater {i + 1}",
            system_prompt=(
                f"You are Debater {i + 1} in {team}. Solve the problem and end with \\boxed{{answer}}. From the "
                "second round on you see the other debaters' previous answers: point out their errors, and change "
                "your answer only if their argument convinces you."
            ),
            visibility="previous_round",
            rubric=(
                "A good debater action gives a correct, checkable argument, engages with the other debaters' "
                "previous answers, and ends with one answer in \\boxed{}."
            ),
            answer=answer,
            corrector=correct_math,
        )
        for i in range(debaters)
    )
    judge = Role(
        name="judge",
        title="Judge",
        system_prompt=(
            f"You are the Judge of {team}. Read every debater's arguments, decide which answer is correct, and end "
            "your reply with \\boxed{answer}. Only your \\boxed{} answer counts."
        ),
        visibility="all_rounds",
        rubric="A good Judge action weighs the arguments on their merits and ends with one final answer in \\boxed{}.",
        answer=answer,
        corrector=correct_math,
        graded=True,
    )
    return PipelineSpec(
        name="math-debate",
        description=f"{debaters} debaters × {rounds} rounds, then a judge; graded on the judge's final \\boxed{{}}.",
        roles=(*debater_roles, judge),
        schedule=debate(debater_roles, judge, rounds),
        grade=grade_last_role("judge", answer_format),
        load_tasks=load_math_tasks,
        render_task=render_problem,
        coach_context="A maths debate: several debaters argue over rounds, then a judge's answer is graded.",
    )


def raw_env(
    version: int = LATEST_VERSION,
    debaters: int = 3,
    rounds: int = 2,
    answer_format: str = "boxed",
    **kwargs: Any,
) -> PipelineEnv:
    """The bare env: outcome reward for every agent at the end (see the module docstring)."""
    versioned("math-debate", version, kwargs)
    return PipelineEnv(make_spec(debaters, rounds, answer_format), **kwargs)
