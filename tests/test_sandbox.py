"""Hostile agent code against the OS sandbox: every attack fails inside it with a clear tool error, the env carries
on, the next episode is clean and nothing is left behind (processes, mounts, cgroups, folders).

The attacks run for real in bubblewrap; they skip (saying why) where bubblewrap cannot run. The fallback tests
run everywhere: they fake a machine without bubblewrap.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import uuid
import warnings
from pathlib import Path

import pytest
from conftest import ADD_TASKS, processes_with

import mappa_envs
from mappa_envs import run_episode, team_from_replies
from mappa_envs.records import ToolResult
from mappa_envs.workspace import CellLimits, Kernel, Workspace, cgroups, quota
from mappa_envs.workspace import sandbox as sandbox_mod
from mappa_envs.workspace.procs import alive, descendants
from mappa_envs.workspace.sandbox import (
    BwrapProbe,
    BwrapSandbox,
    SandboxPolicy,
    SandboxUnavailable,
    SandboxWarning,
    make_wrapper,
    probe_bwrap,
)

BWRAP = probe_bwrap()
needs_bwrap = pytest.mark.skipif(
    not BWRAP.ok, reason=f"bubblewrap cannot run here ({BWRAP.error}); `make test` installs it where it may"
)
MiB = 1024**2
POLICY = SandboxPolicy(
    memory_bytes=2 * 1024**3, disk_bytes=64 * MiB, tmp_bytes=32 * MiB, runtime_bytes=16 * MiB, max_pids=64
)


# ------------------------------------------------------------------------------------------------- helpers
def attack_env(tmp_path: Path, timeout_s: float = 30):
    return mappa_envs.make(
        "math-chat",
        tasks=ADD_TASKS,
        cell_timeout_s=timeout_s,
        kernel_pool=0,
        workspace_dir=tmp_path / "ws",
        sandbox="strict",
        sandbox_policy=POLICY,
    )


def play(env, code: str) -> ToolResult:
    """One episode whose coder runs ``code``; asserts the env carried on to a graded end."""
    team = team_from_replies(
        {
            "solver": ["\\boxed{12}"],
            "coder": [f"```python\n{code}\n```", "\\boxed{12}"],
            "verifier": ["\\boxed{12}"],
        }
    )
    records, outcome = run_episode(env, team, options={"task_index": 0})
    assert outcome is not None and outcome["correct"], "the env did not carry on to a graded end"
    assert [r.role for r in records] == ["solver", "coder", "coder", "verifier"]
    return records[1].tool_results[0]


def assert_next_episode_clean(env) -> None:
    result = play(env, "import os\nprint(sorted(os.listdir('.')), 1 + 1)")
    assert result.ok and result.stdout == "[] 2\n", result


def our_empty_cgroups() -> list[Path]:
    """Cgroups this process made for sandboxes that hold no process any more (i.e. leaked)."""
    out = []
    for h in cgroups.probe().values():
        budget_group = h.parent / cgroups.BUDGET_GROUP.format(pid=os.getpid())  # persistent by design
        for d in [*h.parent.glob(f"mappa-{os.getpid()}-*"), *budget_group.glob(f"mappa-{os.getpid()}-*")]:
            if d == budget_group:
                continue
            try:
                if not (d / "cgroup.procs").read_text().split():
                    out.append(d)
            except OSError:
                pass
    return out


def assert_nothing_left(tmp_path: Path, marker: str | None = None, timeout_s: float = 10) -> None:
    """No process mentions the test's folders or ``marker``; no mount under them; no empty cgroup of ours."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        procs = processes_with(str(tmp_path)) + (processes_with(marker) if marker else [])
        if not procs:
            break
        time.sleep(0.1)
    assert procs == [], f"processes left behind: {procs}"
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(tmp_path) in line]
    assert mounts == [], f"mounts left behind: {mounts}"
    assert our_empty_cgroups() == []


def error_of(result: ToolResult) -> str:
    assert result.error, f"the attack did not fail: {result}"
    return result.error


# ------------------------------------------------------------------------------------------------- attacks
@needs_bwrap
def test_killing_the_env_process_fails_and_the_env_carries_on(tmp_path):
    env = attack_env(tmp_path)
    code = (
        "import os, signal\n"
        "print('parent inside:', os.getppid())\n"
        "os.kill(os.getppid(), signal.SIGKILL)\n"  # the sandbox's init: immune to signals from inside
        "os.kill(-1, signal.SIGKILL)\n"  # every process it may signal: only its own sandbox
        f"os.kill({os.getpid()}, signal.SIGKILL)"  # the env's real pid: does not exist in the sandbox
    )
    result = play(env, code)
    assert error_of(result).startswith("ProcessLookupError")
    assert "parent inside: 1" in result.stdout
    assert_next_episode_clean(env)
    env.close()
    assert_nothing_left(tmp_path)


@needs_bwrap
def test_writing_outside_the_workspace_fails(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    targets = [
        outside / "pwned.txt",
        Path(mappa_envs.__file__).parents[1] / "pwned.txt",
        Path(sys.prefix) / "pwned.txt",
        Path("/etc/mappa-pwned"),
        Path("/usr/mappa-pwned"),
        Path("/root/mappa-pwned"),
        Path("/mappa-pwned"),
    ]
    env = attack_env(tmp_path)
    code = (
        f"targets = {[str(t) for t in targets]!r}\n"
        "for t in targets[1:]:\n"
        "    try:\n"
        "        open(t, 'w').write('x')\n"
        "        print('WROTE', t)\n"
        "    except OSError as e:\n"
        "        print('refused', t, type(e).__name__)\n"
        "open(targets[0], 'w').write('x')"
    )
    result = play(env, code)
    for t in targets[1:]:
        # under /tmp a write may land in the sandbox's own private tmpfs (a clone living in /tmp): it must not
        # reach the host, which the last assertion checks; everywhere else it must be refused outright
        if not str(t).startswith("/tmp/"):
            assert f"WROTE {t}\n" not in result.stdout
    assert error_of(result).startswith(("FileNotFoundError", "OSError", "PermissionError"))
    assert not any(t.exists() for t in targets)
    assert_next_episode_clean(env)
    env.close()
    assert_nothing_left(tmp_path)


@needs_bwrap
def test_opening_a_socket_to_a_local_port_fails(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    port = server.getsockname()[1]
    env = attack_env(tmp_path)
    code = (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('1.1.1.1', 53), timeout=2)\n"
        "except OSError as e:\n"
        "    print('outside:', type(e).__name__)\n"
        f"socket.create_connection(('127.0.0.1', {port}), timeout=2)"
    )
    result = play(env, code)
    assert error_of(result).startswith("ConnectionRefusedError")
    assert "outside: OSError" in result.stdout  # "Network is unreachable"
    with pytest.raises(TimeoutError):
        server.accept()  # nothing ever reached the host's port
    server.close()
    assert_next_episode_clean(env)
    env.close()
    assert_nothing_left(tmp_path)


SEARCH = """
import os, time
deadline = time.time() + 90
found, files, complete = [], 0, True
for root, dirs, names in os.walk('/'):
    if root in ('/proc', '/sys', '/dev'):
        dirs[:] = []
        continue
    files += len(names)
    found += [os.path.join(root, n) for n in names if n in WANTED]
    if time.time() > deadline:
        complete = False
        break
print('searched', files, 'files, complete:', complete)
print('found:', found)
"""


@needs_bwrap
def test_searching_the_disk_finds_no_answers(tmp_path):
    task = tmp_path / "task"
    (task / "answers").mkdir(parents=True)
    (task / "train.csv").write_text("id,x,y\n1,2,3\n")
    (task / "answers" / "test_answer.csv").write_text("id,y\n9,42\n")
    sandbox = BwrapSandbox(POLICY, level="strict")
    ws = Workspace(root=tmp_path / "ws", limits=CellLimits(timeout_s=120), pool_size=0, wrapper=sandbox)
    ws.open("episode", {"train.csv": task / "train.csv"})
    repo = Path(mappa_envs.__file__).resolve().parents[1]
    wanted = {"test_answer.csv", "eval.jsonl", "train.jsonl", "metric.json", "sample_submission.csv"}
    try:
        result = ws.run(f"WANTED = {wanted!r}\n" + SEARCH)
        assert result.ok, result
        assert "complete: True" in result.stdout  # a search that finished, so "found nothing" means something
        assert "found: []" in result.stdout, result.stdout
        probe = ws.run(
            "import os\n"
            f"print(os.path.exists({str(repo / 'tasks')!r}), os.path.exists({str(task)!r}))\n"
            "print(sorted(os.listdir('.')))\n"
            f"open({str(task / 'answers' / 'test_answer.csv')!r})"
        )
        assert probe.stdout == "False False\n['train.csv']\n"
        assert error_of(probe).startswith("FileNotFoundError")
        # /work and the repository: only the Python installation may show through
        allowed = tuple(sandbox_mod._python_dirs(sys.executable))
        listing = ws.run(
            f"import os\nallowed = {allowed!r}\nout, n = [], 0\n"
            "for top in ('/work', '/root', '/home', '/srv', '/opt', '/mnt'):\n"
            "    for root, dirs, names in os.walk(top):\n"
            "        n += len(names)\n"
            "        out += [os.path.join(root, x) for x in names if not root.startswith(allowed)]\n"
            "print(n, out[:5])"
        )
        assert listing.ok and listing.stdout.endswith(" []\n"), listing.stdout
        imports = ws.run("import mappa_tasks")
        assert error_of(imports).startswith("ModuleNotFoundError")
        data = ws.run("from sklearn.datasets import load_iris\nload_iris()")  # a DSBench task source: masked
        assert error_of(data).startswith("FileNotFoundError")
    finally:
        ws.close()
    assert_nothing_left(tmp_path)


@needs_bwrap
def test_environment_secrets_do_not_reach_agent_code(tmp_path, monkeypatch):
    secret = f"sk-mappa-{uuid.uuid4().hex}"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("MAPPA_COACH_API_KEY", secret)
    env = attack_env(tmp_path)
    code = (
        "import os\n"
        "print(dict(os.environ))\n"
        "for pid in os.listdir('/proc'):\n"
        "    if pid.isdigit():\n"
        "        print(pid, open(f'/proc/{pid}/environ', 'rb').read())\n"
        f"open('/proc/{os.getpid()}/environ', 'rb').read()"
    )
    result = play(env, code)
    assert error_of(result).startswith("FileNotFoundError")
    assert secret not in result.stdout + result.stderr
    assert "OPENAI_API_KEY" not in result.stdout
    assert_next_episode_clean(env)
    env.close()
    assert_nothing_left(tmp_path)


@needs_bwrap
def test_a_fork_bomb_is_capped_and_cleaned_up(tmp_path):
    sandbox = BwrapSandbox(POLICY, level="strict")
    if "pids" not in cgroups.probe() and os.geteuid() == 0:
        pytest.skip(
            "no writable pids cgroup, and RLIMIT_NPROC does not bind root: fork bombs are not capped here"
        )
    marker = f"mappa-bomb-{uuid.uuid4().hex[:8]}"
    ws = Workspace(root=tmp_path / "ws", limits=CellLimits(timeout_s=60), pool_size=0, wrapper=sandbox)
    ws.open("episode")
    # every copy forks forever; at the cap they back off a little, so a 2-core test machine stays usable
    bomb = "import os, time\\nwhile True:\\n    try:\\n        os.fork()\\n    except OSError:\\n        time.sleep(0.01)"
    code = (
        "import os, subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', '{bomb}', '{marker}'])\n"
        "time.sleep(3)\n"
        "os.fork()"
    )
    try:
        result = ws.run(code)
        assert error_of(result).startswith(("BlockingIOError", "OSError")), result
        running = processes_with(marker)
        assert 0 < len(running) <= POLICY.max_pids
        kernel_pid = ws.kernel.pid
    finally:
        ws.close()
    assert not alive(kernel_pid)
    assert_nothing_left(tmp_path, marker)


@needs_bwrap
def test_filling_the_disk_stops_at_the_quota(tmp_path):
    env = attack_env(tmp_path)
    big = 2 * POLICY.disk_bytes
    # one huge file: refused by RLIMIT_FSIZE or the workspace tmpfs, wherever the host allows neither mount nor cgroup
    result = play(env, f"open('big.bin', 'wb').write(b'0' * {big})")
    assert error_of(result).startswith("OSError"), result  # "File too large" / "No space left on device"
    # /tmp inside the sandbox is a small tmpfs
    result = play(env, f"open('/tmp/big.bin', 'wb').write(b'0' * {2 * POLICY.tmp_bytes})")
    assert "No space left on device" in error_of(result)
    if quota.can_mount():  # many files, each under the per-file cap: only the workspace tmpfs stops them
        result = play(
            env,
            "i = 0\nwhile True:\n    open(f'fill-{i}.bin', 'wb').write(b'0' * (4 * 1024 * 1024))\n    i += 1",
        )
        assert "No space left on device" in error_of(result)
        folder = env.unwrapped.workspace.path
        used = sum(f.stat().st_size for f in folder.iterdir())
        assert used <= POLICY.disk_bytes
    assert_next_episode_clean(env)
    env.close()
    assert_nothing_left(tmp_path)
    assert not list((tmp_path / "ws").iterdir())


# ------------------------------------------------------------------------------------------ kernel contract
@needs_bwrap
def test_interrupts_memory_limits_and_restarts_work_inside_the_sandbox(tmp_path):
    sandbox = BwrapSandbox(POLICY, level="strict")
    folder = sandbox.make_workdir(tmp_path / "ws")
    limits = CellLimits(timeout_s=2, memory_bytes=1024**3, interrupt_grace_s=2)
    k = Kernel(limits, wrapper=sandbox).start(cwd=folder)
    try:
        assert k.execute("y = 1").ok
        r = k.execute("while True:\n    pass")
        assert r.timed_out and not r.kernel_restarted, r  # SIGINT reached the kernel through the sandbox
        assert k.execute("print(y)").stdout == "1\n"
        r = k.execute(
            "import time\nwhile True:\n    try:\n        time.sleep(0.05)\n    except KeyboardInterrupt:\n        pass"
        )
        assert r.kernel_restarted
        r = k.execute("b = bytearray(3 * 1024**3)")
        assert "MemoryError" in error_of(r) or "KernelDied" in error_of(r)
        r = k.execute("import os\nos.kill(os.getpid(), 9)")
        assert r.kernel_restarted and error_of(r).startswith("KernelDied")
        assert k.execute("open('still-here.txt', 'w').write('1'); print(1)").stdout == "1\n"
        pid = k.pid
        tree = descendants(pid)
    finally:
        k.shutdown()
    time.sleep(0.2)
    assert not alive(pid) and not any(alive(p) for p in tree)
    assert (folder / "still-here.txt").exists()
    sandbox.remove_workdir(folder)
    assert not folder.exists()
    assert_nothing_left(tmp_path)


@needs_bwrap
def test_pooled_sandboxed_kernels_get_the_episode_files_and_clean_up(tmp_path):
    src = tmp_path / "train.csv"
    src.write_text("a,b\n1,2\n")
    sandbox = BwrapSandbox(POLICY, level="strict")
    ws = Workspace(root=tmp_path / "ws", limits=CellLimits(timeout_s=20), pool_size=1, wrapper=sandbox)
    ws.open("episode", {"train.csv": src})
    assert not ws.kernel_started
    try:
        assert ws.run("import pandas as pd\npd.read_csv('train.csv').to_csv('out.csv')").ok
        assert {f.name for f in ws.files()} == {"train.csv", "out.csv"}
        ws.release_kernel()  # a fresh (pooled) kernel for the next role: files move along
        r = ws.run("import os\nprint(sorted(os.listdir('.')))")
        assert r.stdout == "['out.csv', 'train.csv']\n", r
        assert quota.is_mount(ws.path) == quota.can_mount()
    finally:
        ws.close()
        ws._pool().shutdown()
    assert list((tmp_path / "ws").iterdir()) == []
    assert_nothing_left(tmp_path)


def test_bubblewrap_runs_where_required():
    """CI sets ``MAPPA_REQUIRE_SANDBOX=1`` so that a broken install fails instead of skipping every attack."""
    if not os.environ.get("MAPPA_REQUIRE_SANDBOX"):
        pytest.skip("set MAPPA_REQUIRE_SANDBOX=1 to require bubblewrap")
    assert BWRAP.ok, BWRAP.error


@needs_bwrap
def test_kept_workspaces_stay_on_disk_after_close(tmp_path):
    sandbox = BwrapSandbox(POLICY, level="strict")
    ws = Workspace(
        root=tmp_path / "ws", limits=CellLimits(timeout_s=20), pool_size=0, wrapper=sandbox, keep=True
    )
    folder = ws.open("episode")
    assert ws.run("open('result.txt', 'w').write('42')").ok
    ws.close()
    assert (folder / "result.txt").read_text() == "42" and not quota.is_mount(folder)
    assert_nothing_left(tmp_path)


# ------------------------------------------------------------------------------------ fallback (always run)
@pytest.fixture
def no_bwrap(monkeypatch):
    """Pretend bubblewrap cannot run here."""
    fake = BwrapProbe(None, False, error="bubblewrap (`bwrap`) is not installed")
    monkeypatch.setattr(sandbox_mod, "probe_bwrap", lambda path=None: fake)
    monkeypatch.setattr(sandbox_mod, "_WARNED", set())


def test_without_bubblewrap_auto_warns_once_naming_what_is_not_protected(no_bwrap):
    with pytest.warns(SandboxWarning) as caught:
        choice = make_wrapper("auto")
    text = str(caught[0].message)
    assert "NOT protected: filesystem" in text and "answers" in text and "apt-get install" in text
    assert choice.wrapper is not None and "NOT protected" in str(choice.protection)
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        make_wrapper("auto")
    assert [w for w in again if issubclass(w.category, SandboxWarning)] == []


def test_without_bubblewrap_strict_refuses_to_run(no_bwrap):
    with pytest.raises(SandboxUnavailable, match="apt-get install -y bubblewrap"):
        make_wrapper("strict")
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        mappa_envs.make("math-chat", tasks=ADD_TASKS, sandbox="strict")


def test_without_bubblewrap_auto_still_runs_episodes(no_bwrap, tmp_path):
    with pytest.warns(SandboxWarning):
        env = mappa_envs.make(
            "math-chat", tasks=ADD_TASKS, cell_timeout_s=20, kernel_pool=0, workspace_dir=tmp_path / "ws"
        )
    assert "NOT protected" in str(env.unwrapped.sandbox)
    result = play(env, "print(1 + 1)")
    assert result.ok and result.stdout == "2\n"
    env.close()
    assert_nothing_left(tmp_path)


def test_sandbox_levels_are_checked_and_none_is_explicit():
    with pytest.raises(ValueError, match="auto"):
        make_wrapper("loose")  # type: ignore[arg-type]
    choice = make_wrapper("none")
    assert choice.wrapper is None and "NOT protected: everything else" in str(choice.protection)
