"""Red team, host side: what agent code leaves in the workspace attacks the env's own readers (issue 21).

Each test performs the attack for real — agent code in a real bubblewrap sandbox, through a real env episode —
and asserts the score, a time bound, and that the run carries on (the same episode continues, the next one works).
"""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

import mappa_envs
from mappa_envs import run_episode, team_from_replies
from mappa_envs.grading import isolated
from mappa_envs.workspace import budget, cgroups
from mappa_envs.workspace.sandbox import probe_bwrap

BWRAP = probe_bwrap()
pytestmark = pytest.mark.skipif(
    not BWRAP.ok and not os.environ.get("MAPPA_REQUIRE_SANDBOX"),
    reason=f"bubblewrap unavailable: {BWRAP.error}",
)

SECRET = "sk-redteam-0123456789abcdef"
BASELINE = "import shutil\nshutil.copyfile('sample_submission.csv', 'submission.csv')"
MANY_FILES = int(os.environ.get("MAPPA_REDTEAM_FILES", "200000"))


def _code(*blocks: str) -> list[str]:
    return [f"```python\n{b}\n```" for b in blocks] + ["Done, handing over."]


def _team(data_engineer=(), modeler=(), analyst=()):
    return team_from_replies(
        {"data_engineer": _code(*data_engineer), "modeler": _code(*modeler), "analyst": _code(*analyst)}
    )


@pytest.fixture(scope="module")
def env():
    os.environ["MAPPA_REDTEAM_SECRET"] = SECRET  # a host secret the attacks try to steal
    e = mappa_envs.make(
        "dsbench-3agent", reward="outcome", tasks="embedded:train", sandbox="strict", cell_timeout_s=60
    )
    yield e
    e.close()
    os.environ.pop("MAPPA_REDTEAM_SECRET", None)


def _iris(env) -> dict:
    return {"task_index": [t.id for t in env.unwrapped.tasks].index("iris-species")}


def _episode(env, team, bound_s: float):
    start = time.monotonic()
    records, outcome = run_episode(env, team, seed=0, options=_iris(env))
    took = time.monotonic() - start
    assert took < bound_s, f"episode took {took:.1f}s (bound {bound_s}s)"
    return records, outcome


def _carries_on(env) -> None:
    """The next episode on the same env grades an honest baseline submission as valid."""
    _, outcome = _episode(env, _team(analyst=[BASELINE]), 60)
    assert outcome["valid"], outcome["reason"]
    assert outcome["relative"] == pytest.approx(0.0, abs=1e-9)


# ------------------------------------------------------------------------------------ the submission itself
def test_submission_linked_to_the_hidden_answers_is_not_scored(env):
    answers = env.unwrapped.tasks[_iris(env)["task_index"]].meta["answers_csv"]
    link = f"import os\nos.symlink({str(answers)!r}, 'submission.csv')"
    records, outcome = _episode(env, _team(analyst=[link]), 60)
    assert outcome["valid"] is False and outcome["reward"] == 0.0 and outcome["relative"] == 0.0
    assert "symbolic link" in outcome["reason"] and str(answers) not in outcome["reason"]
    _carries_on(env)


def test_submission_linked_to_proc_environ_leaks_no_secret(env):
    link = "import os\nos.symlink('/proc/self/environ', 'submission.csv')"
    records, outcome = _episode(env, _team(analyst=[link]), 60)
    assert outcome["valid"] is False and outcome["reward"] == 0.0
    dumped = json.dumps([r.to_dict() for r in records], default=str) + json.dumps(outcome, default=str)
    assert SECRET not in dumped and "MAPPA_REDTEAM_SECRET" not in dumped
    _carries_on(env)


@pytest.mark.parametrize(
    "attack, words",
    [
        ("import os\nos.mkfifo('submission.csv')", "FIFO"),  # a read that would block for ever
        (
            "import socket\ns = socket.socket(socket.AF_UNIX)\ns.bind('submission.csv')",
            "socket",
        ),
        ("import os\nos.link('sample_submission.csv', 'submission.csv')", "hard link"),
        ("with open('submission.csv', 'wb') as f:\n    f.truncate(2 * 1024**3 - 1)", "limit"),  # sparse
        (
            "with open('submission.csv', 'w') as f:\n    f.write('id,species\\n' + '1,x\\n' * 25_000_000)",
            "limit",
        ),
    ],
    ids=["fifo", "socket", "hardlink", "sparse-2GiB", "100MB"],
)
def test_special_or_huge_submissions_are_refused_quickly(env, attack, words):
    _, outcome = _episode(env, _team(analyst=[attack]), 90)
    assert outcome["valid"] is False and outcome["reward"] == 0.0
    assert words in outcome["reason"], outcome["reason"]
    assert "\n" not in outcome["reason"]
    _carries_on(env)


# ------------------------------------------------------------------------------ what is left for the others
LEFTOVERS = {
    "fifo": "import os\nos.mkfifo('pipe')\nos.mkfifo('X_train.pkl')",
    "socket": "import socket\ns = socket.socket(socket.AF_UNIX)\ns.bind('sock')\ns.listen()",
    "deep-tree": "import os\nfd = os.open('.', os.O_RDONLY)\nfor i in range(1200):\n"
    "    os.mkdir('d', dir_fd=fd); nfd = os.open('d', os.O_RDONLY, dir_fd=fd); os.close(fd); fd = nfd\n"
    "open(f'/proc/self/fd/{fd}/leaf.txt', 'w').write('x')",
    "sparse": "with open('big.bin', 'wb') as f:\n    f.truncate(2 * 1024**3 - 1)",
    "many-files": "import os\nos.mkdir('m')\n"
    f"for i in range({MANY_FILES}):\n    open(f'm/{{i}}', 'w').close()",
    "links": "import os\nos.symlink('/proc/self/environ', 'env.txt')\nos.symlink('/', 'root')\n"
    "os.link('train.csv', 'train2.csv')",
}


@pytest.mark.parametrize("name", list(LEFTOVERS))
def test_leftovers_do_not_break_hand_off_listing_or_grading(env, name):
    """The data engineer leaves a trap; the modeler's and analyst's turns, the listings and the grade still run."""
    records, outcome = _episode(env, _team(data_engineer=[LEFTOVERS[name]], analyst=[BASELINE]), 150)
    assert records[0].tool_results[0].ok, records[0].tool_results[0]
    assert outcome["valid"], outcome["reason"]  # the honest (baseline) submission still counts
    analyst = [r for r in records if r.role == "analyst"]
    assert analyst and analyst[0].tool_results[0].ok  # the hand-off reached the analyst's kernel
    listed = {f.name for r in records for f in r.files_after}
    assert "submission.csv" in listed
    assert not {"pipe", "sock", "env.txt", "root", "train2.csv"} & listed  # only regular files are listed
    assert max(len(r.files_after) for r in records) <= 200
    _carries_on(env)


def test_kept_workspace_with_traps_closes_quickly(tmp_path):
    e = mappa_envs.make(
        "dsbench-3agent",
        reward="outcome",
        tasks="embedded:train",
        sandbox="strict",
        keep_workspace=True,
        workspace_dir=tmp_path,
    )
    try:
        trap = LEFTOVERS["fifo"] + "\n" + LEFTOVERS["socket"] + "\n" + LEFTOVERS["links"]
        _, outcome = _episode(e, _team(data_engineer=[trap], analyst=[BASELINE]), 120)
        assert outcome["valid"]
        folder = e.unwrapped.workspace.path
        start = time.monotonic()
        e.close()
        assert time.monotonic() - start < 30
        assert (folder / "submission.csv").is_file() and not (folder / "env.txt").exists()
    finally:
        e.close()


def test_deep_tree_in_an_unsandboxed_workspace_is_removed_on_close(tmp_path):
    """Without a tmpfs cap (no sandbox, or no mount permission) the folder is removed entry by entry."""
    from mappa_envs.workspace import CellLimits, Workspace

    ws = Workspace(root=tmp_path, limits=CellLimits(timeout_s=30), pool_size=0)
    folder = ws.open("deep")
    try:
        assert ws.run(LEFTOVERS["deep-tree"]).ok
        assert len(ws.files()) <= 200
    finally:
        start = time.monotonic()
        ws.close()
    assert time.monotonic() - start < 20 and not folder.exists()


# ---------------------------------------------------------------------------------------------- the kernel
def _rss_mib() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_background_printer_between_turns_does_not_grow_the_env(env):
    printer = (
        "import threading, time\ndef _spam():\n    s = 'x' * 10000\n    while True:\n"
        "        print(s); time.sleep(0.0005)\nthreading.Thread(target=_spam, daemon=True).start()"
    )
    grown: list[float] = []
    replies = iter([f"```python\n{printer}\n```", "```python\nprint('still here')\n```", "Done."])

    def data_engineer(messages):
        reply = next(replies)
        if "still here" in reply:  # the agent "thinks" for 4 s while its thread prints
            before = _rss_mib()
            time.sleep(4)
            grown.append(_rss_mib() - before)
        return reply

    team = {"data_engineer": data_engineer, "modeler": lambda m: "Done.", "analyst": lambda m: "Done."}
    records, outcome = _episode(env, team, 90)
    assert grown and grown[0] < 40, f"env process grew {grown[0]:.0f} MiB in 4 s"
    second = records[1].tool_results[0]
    assert second.ok and len(second.stdout) <= 2 * 64 * 1024 + 200
    assert outcome["valid"] is False  # nothing was submitted; the episode ended normally
    _carries_on(env)


# ---------------------------------------------------------------------------------------------- the grader
def test_power_tower_in_maths_does_not_hang_off_the_main_thread():
    from conftest import ADD_TASKS

    e = mappa_envs.make("math-chat", reward="outcome", tasks=ADD_TASKS)
    tower = "The answer is \\boxed{9^{9^{9^{9}}}}"
    team = team_from_replies({"solver": ["12"], "coder": ["12"], "verifier": [tower]})
    result: dict = {}

    def play():
        result["outcome"] = run_episode(e, team, seed=0, options={"task_index": 0})[1]

    start = time.monotonic()
    t = threading.Thread(target=play, daemon=True)  # the trainer steps envs off the main thread
    t.start()
    t.join(timeout=30)
    assert not t.is_alive(), "grading hung"
    assert time.monotonic() - start < 30
    assert result["outcome"]["correct"] is False and result["outcome"]["reward"] == 0.0
    good = team_from_replies({"solver": ["12"], "coder": ["12"], "verifier": ["\\boxed{12}"]})
    assert run_episode(e, good, seed=0, options={"task_index": 0})[1]["reward"] == 1.0  # carries on
    e.close()


def test_a_grade_past_its_wall_time_is_killed_and_labelled():
    start = time.monotonic()
    with pytest.raises(isolated.GraderTimeout, match=r"grader timed out after 1s"):
        isolated.run("time:sleep", 60, timeout_s=1)
    assert time.monotonic() - start < 5
    assert isolated.run("math:sqrt", 16.0, timeout_s=30) == 4.0  # a fresh worker answers the next call


@pytest.mark.skipif(isolated.WORKERS < 2, reason="one grader worker configured")
def test_a_slow_grade_does_not_hold_up_the_next_one():
    slow = threading.Thread(target=lambda: isolated.run("time:sleep", 12, timeout_s=30), daemon=True)
    slow.start()
    time.sleep(0.5)
    start = time.monotonic()
    assert isolated.run("math:sqrt", 4.0, timeout_s=30) == 2.0  # served by another worker
    assert time.monotonic() - start < 10
    slow.join(timeout=30)


def test_a_grade_past_its_memory_limit_fails_cleanly():
    with pytest.raises(isolated.RemoteError) as e:
        isolated.run("builtins:bytearray", 64 * 1024**3, timeout_s=30)
    assert e.value.kind == "MemoryError"
    assert isolated.run("math:sqrt", 9.0, timeout_s=30) == 3.0


# ---------------------------------------------------------------------------------------------- the budget
def test_a_config_asking_for_more_memory_than_the_host_has_is_refused():
    with pytest.raises(budget.MemoryBudgetError, match="cell_memory_gb"):
        mappa_envs.make("dsbench-3agent", tasks="embedded:train", sandbox="strict", cell_memory_gb=100_000)


@pytest.mark.skipif("memory" not in cgroups.probe(), reason="no writable memory cgroup")
def test_all_sandboxes_of_a_process_share_one_memory_budget(env):
    _episode(env, _team(data_engineer=["print(1)"]), 60)
    h = cgroups.probe()["memory"]
    group = cgroups.budget_parent(h)
    knob = group / ("memory.max" if h.v2 else "memory.limit_in_bytes")
    assert abs(int(knob.read_text()) - budget.total_bytes()) < 1 << 20
    assert budget.total_bytes() <= budget.host_bytes()
