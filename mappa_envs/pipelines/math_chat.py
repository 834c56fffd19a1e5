r"""Math Chat: Problem Solver → Code Executor → Verifier on a maths problem.

| | |
|---|---|
| Creation | ``mappa_envs.make("math-chat-v2", tasks="embedded:train")`` |
| Agents | ``solver``, ``coder``, ``verifier`` (``possible_agents`` in that order) |
| Turns | solver 1 → coder ≤ 2 (keeps the turn while its reply has code that ran) → verifier 1 |
| Action space | ``AgentText(max_length=32768)``: the agent's reply, any ``str`` |
| Observation space | ``Dict({"messages": ChatMessages()})``: system prompt, task, the earlier agents' work |
| Parallel API | no (strict turn-taking) |
| Code | the coder's fenced ```` ```python ```` blocks run in the episode's Jupyter kernel (not inside ``<think>``) |

### Observation Space
``{"messages": [...]}`` — chat messages. ``system``: the role's prompt. ``user``: the problem, then every earlier
agent's visible reply and the output of its code. A coder on its second turn also gets its first reply
(``assistant``) and what its code printed (``tool``).

### Action Space
The reply as text. Only the visible part counts (``<think>`` blocks are removed before anything else happens).
Replies longer than ``max_action_chars`` are clipped with a marker and flagged in the receipt.

### Rewards
The bare env pays the graded outcome at the end: 1 to every agent when the last ``\boxed{}`` of the verifier's
reply equals the task's answer (checked with ``math_verify``), else 0. Every step's receipt is in
``infos[agent]["record"]``; when the episode ends each agent's info gets ``outcome``
(``correct``, ``answer``, ``expected``, ``success``, ``reward``). ``make()`` wraps the bare env in a reward
wrapper: by default the hindsight rule coach (``reward="coach"``: each action earns its coach score / 10, paid when
the episode ends, replacing the outcome); ``reward="outcome"`` keeps the outcome reward (see ``docs/COACH.md``).

``answer_format="boxed_or_statement"`` (a ``make()`` argument) also accepts a final "the answer is N" when the
verifier wrote no ``\boxed{}``.

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

import dataclasses
from typing import Any

from mappa_envs.engine import PipelineEnv
from mappa_envs.math_tasks import load_math_tasks
from mappa_envs.pipeline import LATEST_VERSION, PipelineSpec, Role, sequential, versioned
from mappa_envs.pipelines.math_common import MathAnswer, correct_math, grade_last_role, render_problem

TEAM = "a team of three agents (Problem Solver → Code Executor → Verifier)"

SOLVER = Role(
    name="solver",
    title="Problem Solver",
    system_prompt=(
        f"You are the Problem Solver in {TEAM}. Solve the problem step by step and state your answer as "
        "\\boxed{answer}. The team succeeds only if the Verifier's final answer is correct."
    ),
    max_turns=1,
    rubric=(
        "A good Problem Solver action sets up the problem correctly, reasons step by step without arithmetic "
        "slips, and states one clear answer in \\boxed{}."
    ),
    answer=MathAnswer("boxed"),
    corrector=correct_math,
)
CODER = Role(
    name="coder",
    title="Code Executor",
    system_prompt=(
        f"You are the Code Executor in {TEAM}. Check or compute the answer with Python: write code in a "
        "```python block and it will be run; you will see what it prints. Print the result. When you are done, "
        "reply without code and state the answer as \\boxed{answer}."
    ),
    max_turns=2,
    runs_code=True,
    rubric=(
        "A good Code Executor action writes correct Python that computes or checks the answer, prints the "
        "result, fixes its own errors, and reports the computed answer clearly."
    ),
    answer=MathAnswer("boxed"),
    corrector=correct_math,
)
VERIFIER = Role(
    name="verifier",
    title="Verifier",
    system_prompt=(
        f"You are the Verifier, the last agent in {TEAM}. Check the work of the Problem Solver and the Code "
        "Executor, decide the correct answer, and end your reply with \\boxed{answer}. Only your \\boxed{} "
        "answer counts."
    ),
    max_turns=1,
    rubric=(
        "A good Verifier action weighs the earlier work, catches errors, and ends with exactly one final answer "
        "in \\boxed{}; the team is judged on that answer alone."
    ),
    answer=MathAnswer("boxed"),
    corrector=correct_math,
    graded=True,
)

SPEC = PipelineSpec(
    name="math-chat",
    description="Problem Solver → Code Executor (runs Python) → Verifier on maths problems; graded on the final \\boxed{}.",
    roles=(SOLVER, CODER, VERIFIER),
    schedule=sequential((SOLVER, CODER, VERIFIER)),
    grade=grade_last_role("verifier"),
    load_tasks=load_math_tasks,
    render_task=render_problem,
    coach_context="A maths problem solved by three agents in sequence; only the Verifier's final answer is graded.",
)


def raw_env(version: int = LATEST_VERSION, answer_format: str = "boxed", **kwargs: Any) -> PipelineEnv:
    """The bare env: outcome reward for every agent at the end (see the module docstring).

    ``answer_format="boxed_or_statement"`` also grades a final "the answer is N" when the verifier wrote no
    ``\\boxed{}`` (for small untrained models; the default is the strict ``\\boxed{}`` format).
    """
    spec = (
        SPEC
        if answer_format == "boxed"
        else dataclasses.replace(
            SPEC.with_answer_format(MathAnswer(answer_format)),
            grade=grade_last_role("verifier", answer_format),
        )
    )
    versioned("math-chat", version, kwargs)
    return PipelineEnv(spec, **kwargs)
