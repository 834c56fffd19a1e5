r"""DSBench 3-agent: Data Engineer → Modeler → Analyst on a Kaggle-style tabular task.

| | |
|---|---|
| Creation | ``mappa_envs.make("dsbench-3agent-v2", tasks="embedded:train")`` |
| Agents | ``data_engineer``, ``modeler``, ``analyst`` |
| Turns | each ≤ 4 actions, in order; an agent keeps the turn while its reply has code that ran |
| Must leave | data engineer: ``X_train.pkl``, ``y_train.pkl``, ``X_test.pkl`` · modeler: ``model.pkl`` · analyst: ``submission.csv`` |
| Action space | ``AgentText(max_length=32768)`` |
| Observation space | ``Dict({"messages": ChatMessages()})`` |
| Parallel API | no |
| Code | every agent's fenced ```` ```python ```` blocks run in the episode workspace (pandas, numpy, scikit-learn) |

### Workspace
Each episode gets a fresh folder with the task's ``train.csv``, ``test.csv``, ``sample_submission.csv`` and
``description.md``. The hidden answers never enter it. Each role gets a fresh kernel (``kernel_per_role``), so work
passes between agents only through files — the contract the coach checks and blames.

### Observation Space
``system``: the role's duties and the files it must leave. ``user``: the task description, the current workspace
file listing, and every earlier agent's visible reply with the output of its code. On a continuing turn the agent
also gets its own earlier replies (``assistant``) and their output (``tool``).

### Rewards
The bare env pays every agent the **relative score** of ``submission.csv`` at the end:
``max(0, (score − baseline) / (best − baseline))`` with the task's own metric (direction-aware; baseline = the
sample submission, best = the answers), rows matched by the id column, every target column scored. A missing or
invalid submission scores 0 with a one-line ``reason``. ``outcome`` (``valid``, ``metric``, ``score``,
``relative``, ``reason``, ``success``, ``reward``) is in every agent's final info. ``make()`` pays per-action
coach scores / 10 instead by default (``reward="coach"``, hindsight rule coach: the agent whose missing file
crashed a later one is blamed); ``reward="outcome"`` keeps the relative score for everyone (see ``docs/COACH.md``).

### Tasks
``tasks=`` takes ``"embedded:train"`` / ``"embedded:eval"`` (generated from data that scikit-learn and friends
ship, see ``mappa_envs.taskgen.dsbench_gen``), a folder of DSBench-layout task folders, or one task folder. To use a
real DSBench checkout, lay each task out as ``description.md``, ``train.csv``, ``test.csv``,
``sample_submission.csv``, ``answers/test_answer.csv`` and ``metric.json`` and pass the parent folder.

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

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mappa_envs.engine import PipelineEnv
from mappa_envs.pipeline import LATEST_VERSION, PipelineSpec, Role, sequential, versioned
from mappa_envs.records import ActionRecord
from mappa_envs.scripted import data_science_correction
from mappa_envs.tabular import invalid_outcome, load_dsbench_tasks, score_submission
from mappa_envs.tasks import Task

TEAM = "a team of three agents (Data Engineer → Modeler → Analyst) solving a tabular prediction task"
CODE_RULES = (
    "Write Python in ```python blocks; each block runs in the shared workspace folder (pandas, numpy and "
    "scikit-learn are installed) and you see its output. Keep replying with code until your files are saved, "
    "then reply without code to summarise what you did and hand over. Variables do not carry over to the next "
    "agent: only files in the workspace do."
)

DATA_ENGINEER = Role(
    name="data_engineer",
    title="Data Engineer",
    system_prompt=(
        f"You are the Data Engineer in {TEAM}. Load train.csv and test.csv, clean the data (missing values, "
        "categorical encoding, feature engineering), fit every transformation on the training data only and apply "
        "it to the test data, and save exactly these files with pandas.to_pickle: X_train.pkl (training features), "
        "y_train.pkl (training target column(s)), X_test.pkl (test features, same columns and row order as "
        f"test.csv). {CODE_RULES}"
    ),
    max_turns=4,
    runs_code=True,
    required_artifacts=("X_train.pkl", "y_train.pkl", "X_test.pkl"),
    corrector=data_science_correction,
    rubric=(
        "A good Data Engineer action inspects the data, handles missing values and categories without leaking "
        "test information, and saves X_train.pkl, y_train.pkl and X_test.pkl with matching columns. Forgetting a "
        "file breaks the agents downstream."
    ),
)
MODELER = Role(
    name="modeler",
    title="Modeler",
    system_prompt=(
        f"You are the Modeler in {TEAM}. Load X_train.pkl and y_train.pkl (check they exist first), choose a "
        "model suited to the task and its metric, validate it (e.g. cross-validation), fit it on all the training "
        f"data and save it as model.pkl with pickle or joblib. {CODE_RULES}"
    ),
    max_turns=4,
    runs_code=True,
    required_artifacts=("model.pkl",),
    corrector=data_science_correction,
    rubric=(
        "A good Modeler action loads the prepared data, picks a model that fits the task type and metric, reports "
        "a validation score, and saves model.pkl."
    ),
)
ANALYST = Role(
    name="analyst",
    title="Analyst",
    system_prompt=(
        f"You are the Analyst, the last agent in {TEAM}. Load model.pkl and X_test.pkl (if they are missing, say "
        "so: you cannot proceed), predict the test rows, and write submission.csv exactly in the format of "
        "sample_submission.csv: the same header, one row per test row, ids from test.csv. Check the row count and "
        f"columns before you finish. {CODE_RULES}"
    ),
    max_turns=4,
    runs_code=True,
    required_artifacts=("submission.csv",),
    corrector=data_science_correction,
    rubric=(
        "A good Analyst action produces a valid submission.csv in the required format (ids, header, row count, "
        "labels or probabilities as the metric needs) from the upstream model; only this file is graded."
    ),
    graded=True,
)


# Imports, plus one tiny read/fit/predict/write so first-use costs (scikit-learn's lazy imports, ~30 ms on the first
# fit) are paid in the warm pool while agents generate, not in the agents' first cells (bench/workspace.py).
PRELOAD = """import io as _io
import numpy, pandas, sklearn, sklearn.ensemble, sklearn.linear_model, sklearn.model_selection
def _warm_up():
    df = pandas.read_csv(_io.StringIO("a,b,y\\n1,2,0\\n3,4,1\\n5,6,0\\n7,8,1\\n"))
    model = sklearn.linear_model.LogisticRegression().fit(df[["a", "b"]], df["y"])
    pandas.DataFrame({"y": model.predict(df[["a", "b"]])}).to_csv(_io.StringIO(), index=False)
_warm_up()
del _warm_up, _io"""


def render_task(task: Task) -> str:
    return f"# Task: {task.id}\n\n{task.prompt.strip()}"


def grade(task: Task, records: Sequence[ActionRecord], workspace: Path | None) -> dict[str, Any]:
    """Score ``submission.csv`` from the workspace against the task's hidden answers."""
    meta = dict(task.meta)
    submission = workspace / "submission.csv" if workspace is not None else None
    if submission is None:
        return invalid_outcome(meta, "no workspace: nothing was submitted")
    return score_submission(meta, Path(meta["answers_csv"]), submission)


SPEC = PipelineSpec(
    name="dsbench-3agent",
    description="Data Engineer → Modeler → Analyst on tabular tasks; graded on submission.csv with the task's metric.",
    roles=(DATA_ENGINEER, MODELER, ANALYST),
    schedule=sequential((DATA_ENGINEER, MODELER, ANALYST)),
    grade=grade,
    load_tasks=load_dsbench_tasks,
    render_task=render_task,
    preload=PRELOAD,
    kernel_per_role=True,
    coach_context=(
        "A tabular prediction task solved by three agents that pass files through a shared workspace: "
        "X_train.pkl, y_train.pkl, X_test.pkl → model.pkl → submission.csv; only submission.csv is graded."
    ),
)


def raw_env(version: int = LATEST_VERSION, **kwargs: Any) -> PipelineEnv:
    """The bare env: relative score for every agent at the end (see the module docstring).

    Each role gets a fresh kernel, so three warm kernels (``kernel_pool=3``) are kept ready by default.
    """
    kwargs.setdefault("kernel_pool", len(SPEC.roles))
    versioned("dsbench-3agent", version, kwargs)
    return PipelineEnv(SPEC, **kwargs)
