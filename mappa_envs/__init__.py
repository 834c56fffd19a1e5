"""mappa_envs: PettingZoo AEC environments for teams of LLM agents, with per-action receipts for a coach.

import mappa_envs
env = mappa_envs.make("math-chat")          # latest version, offline defaults
print(mappa_envs.registry)                  # every env id with a one-line description
"""

from mappa_envs.engine import PipelineEnv, run_episode, team_from_replies
from mappa_envs.records import ActionRecord, FileInfo, Judgement, ToolResult
from mappa_envs.registry import make, raw_env, register, registry
from mappa_envs.tasks import Task, TaskError, TaskSet

__version__ = "0.1.0"

register(
    "math-chat-v0",
    "mappa_envs.pipelines.math_chat:raw_env",
    "Problem Solver → Code Executor (runs Python) → Verifier on maths problems; graded on the final \\boxed{}.",
)
register(
    "math-debate-v0",
    "mappa_envs.pipelines.math_debate:raw_env",
    "k debaters × r rounds, then a judge, on maths problems; graded on the judge's final \\boxed{}.",
)

register(
    "dsbench-3agent-v0",
    "mappa_envs.pipelines.dsbench:raw_env",
    "Data Engineer → Modeler → Analyst on tabular tasks; graded on submission.csv with the task's own metric.",
)

# v1: an upstream reply cut inside a code block is shown with the block closed (``close_fences``); same data.
_V1_NOTE = " v1: an upstream reply cut inside a code block is shown closed."
for _name, _entry in (
    ("math-chat", "math_chat"),
    ("math-debate", "math_debate"),
    ("dsbench-3agent", "dsbench"),
):
    register(
        f"{_name}-v1",
        f"mappa_envs.pipelines.{_entry}:raw_env",
        registry[f"{_name}-v0"].description + _V1_NOTE,
        env_id=f"{_name}-v1",
        close_fences=True,
    )
del _name, _entry

__all__ = [
    "ActionRecord",
    "FileInfo",
    "Judgement",
    "PipelineEnv",
    "Task",
    "TaskError",
    "TaskSet",
    "ToolResult",
    "make",
    "raw_env",
    "register",
    "registry",
    "run_episode",
    "team_from_replies",
]
