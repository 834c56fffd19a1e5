"""mappa_envs: PettingZoo AEC environments for teams of LLM agents, with per-action receipts for a coach.

import mappa_envs
env = mappa_envs.make("math-chat")          # latest version, offline defaults
print(mappa_envs.registry)                  # every env id with a one-line description
"""

from mappa_envs.engine import PipelineEnv, run_episode, team_from_replies
from mappa_envs.records import ActionRecord, FileInfo, Judgement, ToolResult
from mappa_envs.registry import make, raw_env, register, registry
from mappa_envs.tasks import Task, TaskError, TaskSet
from mappa_envs.views import SingleAgentEnv, register_gymnasium

__version__ = "0.2.0"

_PIPELINES = (
    (
        "math-chat",
        "math_chat",
        "Problem Solver → Code Executor (runs Python) → Verifier on maths problems; graded on the final \\boxed{}.",
    ),
    (
        "math-debate",
        "math_debate",
        "k debaters × r rounds, then a judge, on maths problems; graded on the judge's final \\boxed{}.",
    ),
    (
        "dsbench-3agent",
        "dsbench",
        "Data Engineer → Modeler → Analyst on tabular tasks; graded on submission.csv with the task's own metric.",
    ),
)
# What each version changed (each pipeline module's "Version History" says it in full).
_VERSIONS = {
    0: "",
    1: " v1: an upstream reply cut inside a code block is shown closed.",
    2: " v2: the outcome is paid to every action, not each agent's last.",
}
for _name, _module, _description in _PIPELINES:
    for _version, _note in _VERSIONS.items():
        register(
            f"{_name}-v{_version}",
            f"mappa_envs.pipelines.{_module}:raw_env",
            _description + _note,
            reward_kwargs={"outcome_to": "last_action"} if _version < 2 else None,
            version=_version,
        )
del _name, _module, _description, _version, _note

# Every env id above also as a single-agent Gymnasium env, ``gymnasium.make("mappa/math-chat-v2", role="coder")``
# (mappa_envs.views); registering is a dict entry, no env is built or imported until make.
register_gymnasium(list(registry))

__all__ = [
    "ActionRecord",
    "FileInfo",
    "Judgement",
    "PipelineEnv",
    "SingleAgentEnv",
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
