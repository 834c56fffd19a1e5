"""dsbench-3agent: file passing through the workspace, grading on submission.csv, hidden answers stay hidden."""

from __future__ import annotations

import pytest

import mappa_envs
from mappa_envs import run_episode, team_from_replies
from mappa_envs.scripted import data_science_team


def _index(env, task_id: str) -> int:
    return [t.id for t in env.unwrapped.tasks].index(task_id)


@pytest.fixture(scope="module")
def train_env():
    env = mappa_envs.make("dsbench-3agent", reward="outcome", tasks="embedded:train", cell_timeout_s=60)
    yield env
    env.close()


@pytest.mark.parametrize("task_id", ["iris-species", "energy-demand"])
def test_scripted_team_solves_embedded_classification_and_regression(train_env, task_id):
    records, outcome = run_episode(
        train_env, data_science_team(), seed=0, options={"task_index": _index(train_env, task_id)}
    )
    assert outcome["valid"], outcome["reason"]
    assert outcome["relative"] >= 0.5
    assert {r.role for r in records} == {"data_engineer", "modeler", "analyst"}
    written = {f.name: r.role for r in records for f in r.files_written()}
    assert written["X_train.pkl"] == written["y_train.pkl"] == written["X_test.pkl"] == "data_engineer"
    assert written["model.pkl"] == "modeler" and written["submission.csv"] == "analyst"


def test_scripted_team_on_shared_titanic(shared_data):
    env = mappa_envs.make("dsbench-3agent", reward="outcome", tasks=shared_data / "dsbench" / "titanic")
    try:
        _, outcome = run_episode(env, data_science_team(), seed=0)
    finally:
        env.close()
    assert outcome["valid"] and outcome["metric"] == "accuracy"
    assert outcome["relative"] >= 0.5


def test_forgotten_x_test_fails_at_the_analyst_and_receipts_show_who_wrote_what(train_env):
    team = data_science_team(forget=("X_test.pkl",))
    records, outcome = run_episode(
        train_env, team, seed=0, options={"task_index": _index(train_env, "iris-species")}
    )
    de = [r for r in records if r.role == "data_engineer"]
    analyst = [r for r in records if r.role == "analyst"]
    de_files = {f.name for r in de for f in r.files_written()}
    assert {"X_train.pkl", "y_train.pkl"} <= de_files and "X_test.pkl" not in de_files
    failing = analyst[0].tool_results[-1]
    assert failing.error.startswith("FileNotFoundError") and "X_test.pkl" in failing.error
    assert not any(r.had_error for r in records if r.role != "analyst")  # upstream code ran cleanly
    assert outcome["valid"] is False and outcome["reward"] == 0.0
    assert "submission.csv" in outcome["reason"]


def test_roles_do_not_share_kernel_variables(train_env):
    team = team_from_replies(
        {
            "data_engineer": ["```python\nsecret = 41\n```", "done"],
            "modeler": ["```python\nprint(secret)\n```", "done"],
            "analyst": ["nothing to do"],
        }
    )
    records, outcome = run_episode(train_env, team, seed=0, options={"task_index": 0})
    assert records[0].ran_code and records[0].tool_results[0].ok
    assert records[2].tool_results[0].error.startswith("NameError")
    assert outcome["valid"] is False and outcome["reason"]


def test_each_agent_sees_description_file_listing_and_upstream_work(train_env):
    records, _ = run_episode(
        train_env, data_science_team(), seed=0, options={"task_index": _index(train_env, "iris-species")}
    )
    analyst_view = next(r for r in records if r.role == "analyst").observation[1]["content"]
    assert "# Task: iris-species" in analyst_view and "## Evaluation" in analyst_view
    assert "## Files in the workspace" in analyst_view and "- model.pkl (" in analyst_view
    assert "Data Engineer (turn 1)" in analyst_view and "Modeler (turn 1)" in analyst_view
    assert "targets: ['species']" in analyst_view  # upstream tool output is passed on


def test_answers_never_reach_a_workspace_or_an_observation(train_env):
    task_index = _index(train_env, "iris-species")
    task = train_env.unwrapped.tasks[task_index]
    answers = (task.meta["task_dir"] / "answers" / "test_answer.csv").read_text()
    public = (task.meta["task_dir"] / "sample_submission.csv").read_text() + task.prompt
    answer_lines = [line for line in answers.strip().splitlines()[1:] if line not in public][:5]
    assert answer_lines
    probe = team_from_replies(
        {
            "data_engineer": [
                "```python\nimport os\nfor root, dirs, files in os.walk('.'):\n    print(root, sorted(files))\n```",
                "ok",
            ],
            "modeler": ["ok"],
            "analyst": ["ok"],
        }
    )
    train_env.reset(seed=0, options={"task_index": task_index})
    workspace = train_env.unwrapped.workspace.path
    contents = "".join(p.read_text(errors="replace") for p in workspace.rglob("*") if p.is_file())
    assert not (workspace / "answers").exists() and "test_answer" not in contents
    records, _ = run_episode(train_env, probe, seed=0, options={"task_index": task_index})
    listing = records[0].tool_results[0].stdout
    assert "test_answer.csv" not in listing and "answers" not in listing
    for r in records:
        seen = "".join(m["content"] for m in r.observation)
        assert not any(line in seen for line in answer_lines)
        assert "test_answer" not in seen
    assert {f.name for f in records[0].files_before} == {
        "train.csv",
        "test.csv",
        "sample_submission.csv",
        "description.md",
    }


def test_a_broken_task_folder_names_the_problem(tmp_path):
    bad = tmp_path / "broken-task"
    bad.mkdir()
    (bad / "metric.json").write_text("{not json")
    with pytest.raises(mappa_envs.TaskError, match="broken-task"):
        mappa_envs.make("dsbench-3agent", tasks=bad)
