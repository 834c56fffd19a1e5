"""Shared test material for the coach tests: hand-built roles and receipts, and a fake-server fixture.

Imported by the coach test modules (``tests/conftest.py`` belongs to the env tests). The receipts mimic what the
engine produces: an observation of chat messages, the action, tool results, the workspace before and after, and
the graded outcome on every record once the episode has ended.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

try:
    from tests.fake_openai_server import FakeOpenAIServer
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from fake_openai_server import FakeOpenAIServer  # type: ignore[no-redef]

from mappa_envs.pipeline import Role
from mappa_envs.pipelines.math_common import MathAnswer
from mappa_envs.records import ActionRecord, FileInfo, ToolResult

DS_ROLES = {
    "data_engineer": Role(
        name="data_engineer",
        title="Data Engineer",
        system_prompt="Load train.csv and test.csv, clean them and save X_train.pkl, y_train.pkl, X_test.pkl.",
        max_turns=3,
        runs_code=True,
        required_artifacts=("X_train.pkl", "y_train.pkl", "X_test.pkl"),
        rubric="10: all three pickles saved with sensible features; 0-2: crashed or saved nothing.",
    ),
    "modeler": Role(
        name="modeler",
        title="Modeler",
        system_prompt="Train a model on X_train.pkl / y_train.pkl and save model.pkl.",
        max_turns=3,
        runs_code=True,
        required_artifacts=("model.pkl",),
        rubric="10: a sound model trained and saved; 0-2: no model.pkl.",
    ),
    "analyst": Role(
        name="analyst",
        title="Analyst",
        system_prompt="Load model.pkl and X_test.pkl, predict and write submission.csv.",
        max_turns=3,
        runs_code=True,
        required_artifacts=("submission.csv",),
        rubric="10: valid submission.csv with good predictions; 0-2: no submission.",
        graded=True,
    ),
}

MATH_ROLES = {
    "solver": Role("solver", "Problem Solver", "Solve the problem step by step."),
    "coder": Role("coder", "Code Executor", "Check the solution with Python code.", runs_code=True),
    "verifier": Role(
        "verifier",
        "Verifier",
        "Give the final answer as \\boxed{answer}.",
        answer=MathAnswer("boxed"),
        graded=True,
    ),
}

TRAIN = [FileInfo("train.csv", 5000), FileInfo("test.csv", 2000)]


def record(
    role: str,
    step: int,
    action: str = "Done.",
    *,
    tool_results: list[ToolResult] | None = None,
    before: list[FileInfo] | None = None,
    after: list[FileInfo] | None = None,
    outcome: dict[str, Any] | None = None,
    episode_id: str = "ep-1",
    env_id: str = "dsbench-3agent-v0",
    turn: int = 0,
    ends_turn: bool = True,
    observation: list[dict[str, str]] | None = None,
) -> ActionRecord:
    before = list(before if before is not None else TRAIN)
    return ActionRecord(
        env_id=env_id,
        task_id="task-1",
        task_tags=("classification",),
        episode_id=episode_id,
        step=step,
        role=role,
        turn=turn,
        round=0,
        observation=observation
        if observation is not None
        else [
            {"role": "system", "content": f"You are the {role}."},
            {"role": "user", "content": "Task: predict."},
        ],
        action=action,
        visible_action=action,
        tool_results=list(tool_results or []),
        files_before=before,
        files_after=list(after if after is not None else before),
        ends_turn=ends_turn,
        outcome=outcome,
    )


FAILED = {"success": False, "reward": 0.0, "valid": False, "reason": "submission.csv missing"}
SUCCEEDED = {"success": True, "reward": 0.8, "valid": True, "relative": 0.8}


def missing_x_test_episode(outcome: dict[str, Any] | None = FAILED) -> list[ActionRecord]:
    """The credit-assignment story: the data engineer forgets X_test.pkl, the analyst crashes on it."""
    de_after = [*TRAIN, FileInfo("X_train.pkl", 4000), FileInfo("y_train.pkl", 800)]
    mo_after = [*de_after, FileInfo("model.pkl", 12000)]
    return [
        record(
            "data_engineer",
            0,
            "```python\nX_train.to_pickle('X_train.pkl'); y_train.to_pickle('y_train.pkl')\n```",
            tool_results=[ToolResult(code="...", stdout="saved\n")],
            after=de_after,
            outcome=outcome,
        ),
        record(
            "modeler",
            1,
            "```python\nmodel.fit(X, y); joblib.dump(model, 'model.pkl')\n```",
            tool_results=[ToolResult(code="...", stdout="accuracy 0.83\n")],
            before=de_after,
            after=mo_after,
            outcome=outcome,
        ),
        record(
            "analyst",
            2,
            "```python\nX_test = pd.read_pickle('X_test.pkl')\n```",
            tool_results=[
                ToolResult(
                    code="X_test = pd.read_pickle('X_test.pkl')",
                    stderr="Traceback (most recent call last):\n  ...\n"
                    "FileNotFoundError: [Errno 2] No such file or directory: 'X_test.pkl'",
                    error="FileNotFoundError: [Errno 2] No such file or directory: 'X_test.pkl'",
                )
            ],
            before=mo_after,
            after=mo_after,
            outcome=outcome,
        ),
    ]


@pytest.fixture
def fake_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv
