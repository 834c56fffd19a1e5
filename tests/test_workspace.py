"""The workspace kernel under hostile or broken agent code: the env keeps its contract, nothing is left behind."""

from __future__ import annotations

import time
import uuid

import pytest
from conftest import ADD_TASKS, processes_with

import mappa_envs
from mappa_envs import run_episode, team_from_replies
from mappa_envs.workspace import CellLimits, Kernel, Workspace
from mappa_envs.workspace.procs import descendants


@pytest.fixture(scope="module")
def kernel():
    k = Kernel(CellLimits(timeout_s=2, memory_bytes=1024**3, output_bytes=4096, interrupt_grace_s=2)).start()
    yield k
    k.shutdown()


def test_state_persists_and_errors_are_plain_text(kernel):
    assert kernel.execute("x = 40").ok
    assert kernel.execute("print(x + 2)").stdout == "42\n"
    r = kernel.execute("1 / 0")
    assert r.error == "ZeroDivisionError: division by zero"
    assert "\x1b[" not in r.stderr and "ZeroDivisionError" in r.stderr


def test_infinite_loop_is_interrupted_and_state_survives(kernel):
    kernel.execute("y = 1")
    r = kernel.execute("while True:\n    pass")
    assert r.timed_out and not r.kernel_restarted and r.error.startswith("Timeout")
    assert kernel.execute("print(y)").stdout == "1\n"


def test_code_that_swallows_interrupts_gets_a_fresh_kernel(kernel):
    code = "import time\nwhile True:\n    try:\n        time.sleep(0.05)\n    except KeyboardInterrupt:\n        pass"
    r = kernel.execute(code)
    assert r.timed_out and r.kernel_restarted and "restarted" in r.error
    assert kernel.execute("print('alive')").stdout == "alive\n"


def test_allocating_past_the_memory_limit_fails_cleanly(kernel):
    r = kernel.execute("b = bytearray(3 * 1024**3)")
    assert r.error is not None and ("MemoryError" in r.error or "KernelDied" in r.error)
    assert kernel.execute("print('ok')").stdout == "ok\n"


def test_megabytes_of_output_are_capped_with_a_marker(kernel):
    r = kernel.execute("for i in range(100000):\n    print('line', i)")
    assert r.output_truncated and "output truncated" in r.stdout
    assert len(r.stdout) < 4096 + 200


def test_killing_its_own_process_restarts_the_kernel(kernel):
    r = kernel.execute("import os\nos.kill(os.getpid(), 9)")
    assert r.kernel_restarted and r.error.startswith("KernelDied")
    assert kernel.execute("print(1)").stdout == "1\n"


def test_detached_children_do_not_survive_shutdown():
    marker = f"mappa-test-{uuid.uuid4().hex[:8]}"
    k = Kernel(CellLimits(timeout_s=5)).start()
    code = (
        "import os, subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(1000)', '{marker}'], start_new_session=True)\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(999)', '{marker}'])\n"
        "    os._exit(0)\n"
        "print('spawned')"
    )
    assert k.execute(code).stdout == "spawned\n"
    deadline = time.time() + 5
    while len(processes_with(marker)) < 2 and time.time() < deadline:
        time.sleep(0.05)
    assert len(processes_with(marker)) == 2
    pid = k.pid
    k.shutdown()
    time.sleep(0.2)
    assert processes_with(marker) == []
    assert descendants(pid) == []


def test_workspace_copies_inputs_lists_files_and_cleans_up(tmp_path):
    src = tmp_path / "train.csv"
    src.write_text("a,b\n1,2\n")
    ws = Workspace(root=tmp_path / "ws", limits=CellLimits(timeout_s=5), pool_size=0)
    path = ws.open("episode", {"train.csv": src})
    assert (path / "train.csv").read_text() == "a,b\n1,2\n"
    assert not ws.kernel_started  # lazy: no kernel until code runs
    assert ws.run("open('out.txt', 'w').write('hi')").ok
    names = {f.name: f.size for f in ws.files()}
    assert names == {"train.csv": 8, "out.txt": 2}
    ws.close()
    assert not path.exists()


def test_reset_gives_a_clean_workspace_and_kernel():
    env = mappa_envs.make("math-chat", tasks=ADD_TASKS, cell_timeout_s=5, kernel_pool=0)
    writer = team_from_replies(
        {
            "solver": ["\\boxed{1}"],
            "coder": ["```python\nsecret = 1\nopen('left.txt','w').write('x')\n```", "done"],
            "verifier": ["\\boxed{1}"],
        }
    )
    records, _ = run_episode(env, writer, seed=0)
    first_dir = records[0].episode_id
    assert any(f.name == "left.txt" for f in records[1].files_after)
    reader = team_from_replies(
        {
            "solver": ["\\boxed{1}"],
            "coder": ["```python\nimport os\nprint(sorted(os.listdir('.')))\nprint(secret)\n```"],
            "verifier": ["\\boxed{1}"],
        }
    )
    records, _ = run_episode(env, reader, seed=1)
    result = records[1].tool_results[0]
    assert result.stdout == "[]\n" and result.error.startswith("NameError")
    assert records[0].episode_id != first_dir
    env.close()


def test_close_leaves_no_kernel_or_folder_behind():
    marker = f"mappa-test-{uuid.uuid4().hex[:8]}"
    env = mappa_envs.make("math-chat", tasks=ADD_TASKS, cell_timeout_s=5, kernel_pool=0)
    team = team_from_replies(
        {
            "solver": ["\\boxed{1}"],
            "coder": [
                f"```python\nimport subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(1000)', '{marker}'], start_new_session=True)\n```",
                "ok",
            ],
            "verifier": ["\\boxed{1}"],
        }
    )
    env.reset(seed=0)
    for agent in env.agent_iter():
        obs, _, term, trunc, _ = env.last()
        if term or trunc:
            env.step(None)
            continue
        env.step(team(agent, obs["messages"]))
        if agent == "coder":
            break
    deadline = time.time() + 10
    while not processes_with(marker) and time.time() < deadline:
        time.sleep(0.05)
    assert processes_with(marker)
    folder = env.unwrapped.workspace.path
    env.close()
    time.sleep(0.2)
    assert processes_with(marker) == [] and not folder.exists()


def test_secrets_of_the_host_do_not_reach_agent_code(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    k = Kernel(CellLimits(timeout_s=5)).start()
    try:
        out = k.execute("import os\nprint(os.environ.get('OPENAI_API_KEY'))").stdout
    finally:
        k.shutdown()
    assert out == "None\n"
