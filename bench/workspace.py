"""Workspace benchmark: every number measured in ONE run, each against a baseline measured in the same run.

    .venv/bin/python bench/workspace.py            # ~1-3 min on 2 cores
    .venv/bin/python bench/workspace.py --quick    # fewer repetitions, < 1 min
    .venv/bin/python bench/workspace.py --only env_step kernel

Sections (each a function returning a :class:`Table`; add one by writing a function and listing it in
``SECTIONS``):

* ``datasci`` — a 5-cell data-science sequence (imports → read CSV → fit → predict → write submission.csv) in our
  :class:`~mappa_envs.workspace.Workspace` with a warm, pre-imported pooled kernel, against the reference design:
  one fresh ``python -c`` process per block, passing data only through files. Targets: each cell after the first
  ≥ 100× faster, the whole sequence ≥ 20× faster.
* ``env_step`` — ``env.step(reply)`` of ``math-chat`` with a reply that runs no code, against a minimal text
  AECEnv behind the same ``OrderEnforcingWrapper``. Target: < 1 ms median.
* ``kernel`` — cold ``Kernel.start()`` and ``print(1+1)`` latency against a fresh process (informational).

Ratios read "N× faster" (baseline time / our time) or "N× slower". Every kernel is shut down at the end and the
script checks that no child process is left.
"""

from __future__ import annotations

import argparse
import csv
import gc
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mappa_envs
from mappa_envs.workspace import CellLimits, Kernel, Workspace
from mappa_envs.workspace.kernel import kernel_env
from mappa_envs.workspace.pool import shutdown_all
from mappa_envs.workspace.procs import descendants

PY = sys.executable

# -- reporting --------------------------------------------------------------------------------------------------


@dataclass
class Row:
    metric: str
    ours_s: float
    base_s: float
    target: str = "info"
    passed: bool | None = None  # None: informational
    unit: str = "s"  # "s" or "ms" (how the times are shown)


@dataclass
class Table:
    title: str
    ours: str  # column header for our measurement
    base: str  # column header for the baseline
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        head = ["metric", self.ours, self.base, "ratio", "target", "result"]
        body = [
            [
                r.metric,
                fmt_time(r.ours_s, r.unit),
                fmt_time(r.base_s, r.unit),
                fmt_ratio(r.base_s, r.ours_s),
                r.target,
                "-" if r.passed is None else ("PASS" if r.passed else "MISS"),
            ]
            for r in self.rows
        ]
        widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
        line = "  ".join("-" * w for w in widths)
        out = [f"== {self.title}", fmt_cols(head, widths), line]
        out += [fmt_cols(b, widths) for b in body]
        out += [f"   {n}" for n in self.notes]
        return "\n".join(out)

    @property
    def misses(self) -> list[Row]:
        return [r for r in self.rows if r.passed is False]


def fmt_cols(cells: list[str], widths: list[int]) -> str:
    # the metric column is left-aligned, numbers right-aligned
    return "  ".join(
        c.ljust(w) if i in (0, 4, 5) else c.rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


def fmt_time(seconds: float, unit: str) -> str:
    if unit == "ms":
        return f"{seconds * 1e3:.3f} ms"
    if seconds < 0.1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.3f} s"


def fmt_ratio(base: float, ours: float) -> str:
    if ours <= 0 or base <= 0:
        return "n/a"
    r = base / ours
    return f"{r:,.0f}× faster" if r >= 10 else f"{r:.1f}× faster" if r >= 1 else f"{1 / r:.1f}× slower"


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def p90(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]


def machine() -> str:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    avail = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"machine: {os.cpu_count()} cores ({avail} usable), CPU {cpu}\n"
        f"python {platform.python_version()} ({PY}), {platform.platform()}\n"
        f"load average at start (1, 5, 15 min): {load}"
    )


# -- 1. data-science sequence -----------------------------------------------------------------------------------

N_TRAIN, N_TEST, N_FEATURES = 2000, 500, 10
PRELOAD = "import numpy, pandas, sklearn, sklearn.linear_model"
# The same imports, plus one tiny pass through the first-use paths (CSV parser, scikit-learn's input validation
# and solver, CSV writer): lazy imports and caches that otherwise land on the agent's first real cells.
PRELOAD_WARM = (
    PRELOAD
    + """
def _warm_up():
    import io
    df = pandas.read_csv(io.StringIO("a,b,y\\n1,2,0\\n3,4,1\\n5,6,0\\n7,8,1\\n"))
    model = sklearn.linear_model.LogisticRegression().fit(df[["a", "b"]], df["y"])
    pandas.DataFrame({"y": model.predict(df[["a", "b"]])}).to_csv(io.StringIO(), index=False)
_warm_up()
del _warm_up"""
)

# The same work in both designs. In the kernel, state persists between cells.
KERNEL_CELLS = [
    "import numpy as np\nimport pandas as pd\nfrom sklearn.linear_model import LogisticRegression",
    'train = pd.read_csv("train.csv")\ntest = pd.read_csv("test.csv")\nprint(train.shape, test.shape)',
    'features = [c for c in train.columns if c.startswith("f")]\n'
    'model = LogisticRegression(max_iter=1000).fit(train[features], train["target"])\n'
    'print("train accuracy", round(model.score(train[features], train["target"]), 4))',
    'pred = model.predict(test[features])\nprint("predicted", len(pred), "rows; mean", pred.mean())',
    'pd.DataFrame({"id": test["id"], "target": pred}).to_csv("submission.csv", index=False)\n'
    'print("wrote submission.csv")',
]
# The reference design: one fresh process per block, nothing persists but files, so every block re-imports
# what it uses and reloads what earlier blocks produced (the fit block pickles the model, predict loads it, ...).
PROCESS_CELLS = [
    "import numpy as np\nimport pandas as pd\nfrom sklearn.linear_model import LogisticRegression\n"
    'print("imported")',
    'import pandas as pd\ntrain = pd.read_csv("train.csv")\ntest = pd.read_csv("test.csv")\n'
    "print(train.shape, test.shape)",
    'import pickle\nimport pandas as pd\nfrom sklearn.linear_model import LogisticRegression\ntrain = pd.read_csv("train.csv")\n'
    'features = [c for c in train.columns if c.startswith("f")]\n'
    'model = LogisticRegression(max_iter=1000).fit(train[features], train["target"])\n'
    'print("train accuracy", round(model.score(train[features], train["target"]), 4))\n'
    'with open("model.pkl", "wb") as f:\n    pickle.dump((model, features), f)',
    'import pickle\nimport pandas as pd\ntest = pd.read_csv("test.csv")\nwith open("model.pkl", "rb") as f:\n'
    "    model, features = pickle.load(f)\npred = model.predict(test[features])\n"
    'pd.DataFrame({"id": test["id"], "pred": pred}).to_pickle("pred.pkl")\n'
    'print("predicted", len(pred), "rows; mean", pred.mean())',
    'import pandas as pd\npred = pd.read_pickle("pred.pkl")\n'
    'pd.DataFrame({"id": pred["id"], "target": pred["pred"]}).to_csv("submission.csv", index=False)\n'
    'print("wrote submission.csv")',
]


def write_data(folder: Path) -> dict[str, Path]:
    """``train.csv`` (2000 rows: id, f0..f9, target) and ``test.csv`` (500 rows, no target)."""
    rng = random.Random(0)
    weights = [rng.uniform(-1, 1) for _ in range(N_FEATURES)]
    header = ["id", *(f"f{i}" for i in range(N_FEATURES))]
    paths = {"train.csv": folder / "train.csv", "test.csv": folder / "test.csv"}
    for name, n, offset in (("train.csv", N_TRAIN, 0), ("test.csv", N_TEST, N_TRAIN)):
        with paths[name].open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header + (["target"] if name == "train.csv" else []))
            for i in range(n):
                x = [round(rng.gauss(0, 1), 5) for _ in range(N_FEATURES)]
                row: list[Any] = [offset + i, *x]
                if name == "train.csv":
                    score = sum(a * b for a, b in zip(weights, x, strict=True)) + rng.gauss(0, 0.5)
                    row.append(int(score > 0))
                w.writerow(row)
    return paths


def wait_for_warm_pool(ws: Workspace, timeout_s: float = 120.0) -> None:
    """Block until the workspace's shared pool holds a started, pre-imported kernel (as while agents generate)."""
    pool = ws._pool()  # the shared pool this workspace takes its kernel from
    deadline = time.monotonic() + timeout_s
    while True:
        with pool._lock:
            ready, starting = len(pool._ready), pool._starting
        if ready >= 1 and starting == 0:  # a refill still starting would compete for the 2 cores
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the kernel pool did not warm up in time")
        if ready == 0 and starting == 0:
            pool.fill()
        time.sleep(0.05)


def run_workspace_sequence(ws: Workspace, files: dict[str, Path], paced: bool) -> tuple[list[float], Path]:
    """Run the 5 cells; ``paced`` waits before each cell until the pool is idle again (the refill that taking a
    kernel triggers finishes while the agent generates its next cell), else the cells run back to back."""
    path = ws.open("bench-ds", files)
    times = []
    for i, code in enumerate(KERNEL_CELLS):
        if paced or i == 0:
            wait_for_warm_pool(ws)
        t0 = time.perf_counter()
        res = ws.run(code)
        times.append(time.perf_counter() - t0)
        if not res.ok:
            raise RuntimeError(f"workspace cell failed: {res.error}\n{res.stderr}")
    return times, path


def run_process_sequence(folder: Path, files: dict[str, Path]) -> list[float]:
    for name, src in files.items():
        shutil.copyfile(src, folder / name)
    env = kernel_env({"HOME": str(folder)})  # same minimal environment (and thread caps) as the kernel
    times = []
    for code in PROCESS_CELLS:
        t0 = time.perf_counter()
        proc = subprocess.run([PY, "-c", code], cwd=folder, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise RuntimeError(f"reference block failed:\n{proc.stderr}")
    return times


def bench_datasci(quick: bool) -> Table:
    reps = 2 if quick else 5
    tmp = Path(tempfile.mkdtemp(prefix="mappa-bench-"))
    ws = Workspace(root=tmp / "ws", preload=PRELOAD, pool_size=1)
    ws_warm = Workspace(root=tmp / "ws", preload=PRELOAD_WARM, pool_size=1)  # a pool of its own
    paced: list[list[float]] = []  # the measurement the targets apply to
    rushed: list[list[float]] = []
    warmed: list[list[float]] = []
    ref: list[list[float]] = []
    same_output = True
    try:
        files = write_data(tmp)
        for rep in range(reps):  # interleaved, so drift on a shared machine hits every variant alike
            times, ws_path = run_workspace_sequence(ws, files, paced=True)
            paced.append(times)
            submission = (ws_path / "submission.csv").read_bytes()
            ws.close()
            rushed.append(run_workspace_sequence(ws, files, paced=False)[0])
            ws.close()
            warmed.append(run_workspace_sequence(ws_warm, files, paced=True)[0])
            ws_warm.close()
            ref_dir = tmp / f"ref-{rep}"
            ref_dir.mkdir()
            ref.append(run_process_sequence(ref_dir, files))
            same_output &= submission == (ref_dir / "submission.csv").read_bytes()
    finally:
        ws.close()
        ws_warm.close()
        shutil.rmtree(tmp, ignore_errors=True)

    table = Table(
        f"1. data-science sequence, 5 cells (median of {reps} runs)",
        "Workspace (warm pool)",
        "python -c per block",
    )
    names = [
        "import pandas+sklearn",
        "read train/test CSV",
        "fit LogisticRegression",
        "predict",
        "write submission",
    ]

    def cell(runs: list[list[float]], i: int) -> float:
        return median([t[i] for t in runs])

    def cells(runs: list[list[float]], first: int) -> float:
        return median([sum(t[first:]) for t in runs])

    for i, name in enumerate(names):
        o, b = cell(paced, i), cell(ref, i)
        if i == 0:
            table.rows.append(Row(f"cell 1: {name}", o, b))
        else:
            table.rows.append(Row(f"cell {i + 1}: {name}", o, b, "≥100× faster", b / o >= 100))
    o, b = cells(paced, 1), cells(ref, 1)
    table.rows.append(Row("cells 2-5 together", o, b, "≥100× faster", b / o >= 100))
    o, b = cells(paced, 0), cells(ref, 0)
    table.rows.append(Row("whole sequence (cells 1-5)", o, b, "≥20× faster", b / o >= 20))
    for i in range(1, len(names)):
        table.rows.append(Row(f"† cell {i + 1}, warm-up preload", cell(warmed, i), cell(ref, i)))
    table.rows.append(Row("† cells 2-5, warm-up preload", cells(warmed, 1), cells(ref, 1)))
    table.rows.append(Row("* cells 2-5, back to back", cells(rushed, 1), cells(ref, 1)))
    table.rows.append(Row("* whole sequence, back to back", cells(rushed, 0), cells(ref, 0)))
    table.notes += [
        f"data: train.csv {N_TRAIN}×{N_FEATURES + 2}, test.csv {N_TEST}×{N_FEATURES + 1}; preload: {PRELOAD!r}",
        "cell 1 includes taking the warm kernel from the pool and moving it into the episode folder (one round trip)",
        "before each cell the pool is let finish refilling (taking a kernel starts its replacement), as while an "
        "agent generates its next cell",
        "† informational: preload also runs one tiny read_csv / LogisticRegression.fit / predict / to_csv "
        "(PRELOAD_WARM), so first-use costs are paid in the pool",
        "* informational: cells sent without pause, so cells 2-5 share the 2 cores with the kernel being started "
        "to refill the pool",
        f"both designs wrote identical submission.csv: {'yes' if same_output else 'NO'}",
    ]
    return table


# -- 2. env step overhead ---------------------------------------------------------------------------------------

REPLY = "The answer is \\boxed{2}."  # a reply without code (the verifier's is graded: integer fast path)
TASKS = [{"problem": "What is 1+1?", "answer": "2"}]


def minimal_env():
    """The baseline: a 3-agent text AECEnv doing only PettingZoo bookkeeping, behind the same wrapper as make()."""
    from gymnasium import spaces
    from pettingzoo import AECEnv
    from pettingzoo.utils.wrappers import OrderEnforcingWrapper

    class TextTurns(AECEnv):
        metadata = {"name": "text_turns_v0", "is_parallelizable": False}

        def __init__(self) -> None:
            super().__init__()
            self.possible_agents = ["solver", "coder", "verifier"]
            self._space = spaces.Text(32768)

        def observation_space(self, agent):
            return self._space

        def action_space(self, agent):
            return self._space

        def reset(self, seed=None, options=None):
            self.agents = list(self.possible_agents)
            self.rewards = {a: 0.0 for a in self.agents}
            self._cumulative_rewards = {a: 0.0 for a in self.agents}
            self.terminations = {a: False for a in self.agents}
            self.truncations = {a: False for a in self.agents}
            self.infos = {a: {} for a in self.agents}
            self.history: list[tuple[str, str]] = []
            self._i = 0
            self.agent_selection = self.agents[0]

        def observe(self, agent):
            return {"messages": [{"role": "user", "content": text} for _, text in self.history]}

        def step(self, action):
            agent = self.agent_selection
            if self.terminations[agent] or self.truncations[agent]:
                self._was_dead_step(action)
                return
            self._cumulative_rewards[agent] = 0.0
            self.history.append((agent, action))
            self._clear_rewards()
            self.infos[agent] = {"record": (agent, action)}
            self._i += 1
            if self._i >= len(self.possible_agents):
                for a in self.agents:
                    self.rewards[a] = 1.0
                    self.terminations[a] = True
            else:
                self.agent_selection = self.possible_agents[self._i]
            self._accumulate_rewards()

    return OrderEnforcingWrapper(TextTurns())


def time_steps(env, episodes: int, warm_pool: bool) -> tuple[dict[str, list[float]], list[float]]:
    steps: dict[str, list[float]] = {}
    resets: list[float] = []
    env.reset(seed=0)
    if warm_pool:  # the env's own pool starts one kernel at the first reset; let it finish before timing
        wait_for_warm_pool(env.unwrapped.workspace)
    for ep in range(episodes):
        t0 = time.perf_counter()
        env.reset(seed=ep)
        resets.append(time.perf_counter() - t0)
        for agent in env.agent_iter():
            _, _, term, trunc, _ = env.last()
            if term or trunc:
                env.step(None)
                continue
            t0 = time.perf_counter()
            env.step(REPLY)
            steps.setdefault(agent, []).append(time.perf_counter() - t0)
    return steps, resets


def bench_env_step(quick: bool) -> Table:
    episodes = 150 if quick else 400
    env = mappa_envs.make("math-chat", tasks=TASKS)
    base_env = minimal_env()
    try:
        ours, our_resets = time_steps(env, episodes, warm_pool=True)
        base, base_resets = time_steps(base_env, episodes, warm_pool=False)
        grade = env.unwrapped.outcome
        protection = getattr(env.unwrapped, "sandbox", None)
    finally:
        env.close()
        base_env.close()
    n_sv = len(ours["solver"]) + len(ours["verifier"])
    table = Table(
        f"2. env.step overhead, reply without code ({episodes} episodes of math-chat; {n_sv} solver+verifier steps)",
        "math-chat",
        "minimal AECEnv",
    )
    sv = ours["solver"] + ours["verifier"]
    sv_base = base["solver"] + base["verifier"]
    table.rows.append(
        Row("solver+verifier step, median", median(sv), median(sv_base), "< 1 ms", median(sv) < 1e-3, "ms")
    )
    table.rows.append(Row("solver+verifier step, p90", p90(sv), p90(sv_base), unit="ms"))
    for agent, what in (
        ("solver", ""),
        ("coder", " (runs_code role, no code)"),
        ("verifier", " (incl. grading)"),
    ):
        table.rows.append(
            Row(f"{agent} step{what}, median", median(ours[agent]), median(base[agent]), unit="ms")
        )
    every, every_base = [t for v in ours.values() for t in v], [t for v in base.values() for t in v]
    table.rows.append(
        Row("any step, median", median(every), median(every_base), "< 1 ms", median(every) < 1e-3, "ms")
    )
    table.rows.append(Row("any step, p90", p90(every), p90(every_base), unit="ms"))
    table.rows.append(Row("env.reset, median", median(our_resets), median(base_resets), unit="ms"))
    table.notes.append(f"reply: {REPLY!r}; last episode's outcome: correct={grade and grade.get('correct')}")
    if protection is not None:  # what the env's (unused here) kernel would run under
        table.notes.append(f"env sandbox: {str(protection).splitlines()[0]}")
    table.notes.append(
        "timed: env.step() alone, through make()'s OrderEnforcingWrapper (not env.last()/observe)"
    )
    return table


# -- 3. kernel start and round trip -----------------------------------------------------------------------------


def bench_kernel(quick: bool) -> Table:
    reps = 1 if quick else 3
    calls = 50 if quick else 100
    env = kernel_env({"HOME": tempfile.gettempdir()})

    def process(code: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([PY, "-c", code], env=env, capture_output=True, check=True)
        return time.perf_counter() - t0

    starts, preload_starts, trips = [], [], []
    proc_starts, proc_imports, proc_prints = [], [], []
    for _ in range(reps):
        k = Kernel(CellLimits())
        try:
            t0 = time.perf_counter()
            k.start()
            starts.append(time.perf_counter() - t0)
            k.execute("print(1+1)")  # first call warms the client side
            for _ in range(calls):
                t0 = time.perf_counter()
                res = k.execute("print(1+1)")
                trips.append(time.perf_counter() - t0)
                assert res.stdout == "2\n", res
        finally:
            k.shutdown()
        k = Kernel(CellLimits(), preload=PRELOAD)
        try:
            t0 = time.perf_counter()
            k.start()
            preload_starts.append(time.perf_counter() - t0)
        finally:
            k.shutdown()
        proc_starts.append(process("pass"))
        proc_imports.append(process(PRELOAD))
        proc_prints.append(process("print(1+1)"))
    table = Table(
        f"3. kernel start and round trip (informational; {reps} starts, {reps * calls} round trips)",
        "Kernel",
        "fresh python -c",
    )
    table.rows.append(Row("cold Kernel.start() vs `python -c pass`", median(starts), median(proc_starts)))
    table.rows.append(
        Row("Kernel.start() + preload vs `python -c <preload>`", median(preload_starts), median(proc_imports))
    )
    table.rows.append(Row("print(1+1), median", median(trips), median(proc_prints), unit="ms"))
    table.rows.append(Row("print(1+1), p90", p90(trips), p90(proc_prints), unit="ms"))
    table.notes.append(f"preload: {PRELOAD!r}")
    return table


# -- 4. a DSBench episode ---------------------------------------------------------------------------------------


def run_reference_blocks(blocks: list[str], inputs: dict[str, Path], folder: Path) -> float:
    """The reference design: every block in a fresh process in a fresh folder, the task CSVs re-sent (base64, as
    SandboxFusion uploads them) with every block, and the artifacts written so far re-uploaded too."""
    import base64

    uploads = {name: base64.b64encode(path.read_bytes()).decode() for name, path in inputs.items()}
    artifacts: dict[str, str] = {}
    env = kernel_env({"HOME": str(folder)})
    t0 = time.perf_counter()
    for i, code in enumerate(blocks):
        box = folder / f"call-{i}"
        box.mkdir()
        for name, data in {**uploads, **artifacts}.items():
            (box / name).write_bytes(base64.b64decode(data))
        proc = subprocess.run([PY, "-c", code], cwd=box, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"reference block {i} failed:\n{proc.stderr[-2000:]}")
        for f in box.iterdir():
            if f.suffix in (".pkl", ".csv") and f.name not in uploads:
                artifacts[f.name] = base64.b64encode(f.read_bytes()).decode()
        shutil.rmtree(box)
    return time.perf_counter() - t0


def bench_dsbench_episode(quick: bool) -> Table:
    import mappa_envs
    from mappa_envs.scripted import data_science_team

    task_id = "house-prices"
    reps = 1 if quick else 3
    env = mappa_envs.make("dsbench-3agent", tasks="embedded:train", reward="outcome")
    index = [t.id for t in env.unwrapped.tasks].index(task_id)
    ours, base = [], []
    try:
        mappa_envs.run_episode(
            env, data_science_team(), seed=0, options={"task_index": index}
        )  # warm everything
        for _ in range(reps):
            env.reset(seed=0, options={"task_index": index})
            wait_for_warm_pool(env.unwrapped.workspace)
            t0 = time.perf_counter()
            records, outcome = mappa_envs.run_episode(
                env, data_science_team(), seed=0, options={"task_index": index}
            )
            ours.append(time.perf_counter() - t0)
            assert outcome["valid"], outcome
            blocks = [t.code for r in records for t in r.tool_results]
            with tempfile.TemporaryDirectory() as tmp:
                base.append(run_reference_blocks(blocks, env.unwrapped.task.files, Path(tmp)))
    finally:
        env.close()
    table = Table(
        f"4. one DSBench episode of scripted cells ({task_id}, median of {reps})",
        "env episode",
        "process per block",
    )
    table.rows.append(Row("whole episode (3 agents)", median(ours), median(base), target="info"))
    table.notes.append(
        f"{len(blocks)} code blocks; ours: make('dsbench-3agent') with a warm pool, a fresh kernel per role"
    )
    table.notes.append(
        "reference: python -c per block, CSVs and earlier artifacts re-sent (base64) with every block"
    )
    return table


# -- main -------------------------------------------------------------------------------------------------------

SECTIONS: dict[str, Callable[[bool], Table]] = {
    "datasci": bench_datasci,
    "env_step": bench_env_step,
    "kernel": bench_kernel,
    "dsbench": bench_dsbench_episode,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (< 1 min)")
    ap.add_argument("--only", nargs="+", choices=list(SECTIONS), help="run only these sections")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)

    print(machine())
    print(f"mode: {'quick' if args.quick else 'full'}; {time.strftime('%Y-%m-%d %H:%M:%S')}\n", flush=True)
    started = time.perf_counter()
    tables: list[Table] = []
    try:
        for name in args.only or list(SECTIONS):
            gc.collect()
            t0 = time.perf_counter()
            table = SECTIONS[name](args.quick)
            tables.append(table)
            print(table.render())
            print(f"   ({name}: {time.perf_counter() - t0:.1f} s)\n", flush=True)
    finally:
        shutdown_all()
        left = descendants(os.getpid())
    misses = [(t.title.split(" ")[0], r.metric) for t in tables for r in t.misses]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"total {time.perf_counter() - started:.1f} s; load average at end: {load}")
    print(f"child processes left after shutting every kernel down: {len(left)}")
    print("targets: " + ("all PASS" if not misses else "MISS " + "; ".join(f"{s} {m}" for s, m in misses)))
    return 1 if (left or (args.strict and misses)) else 0


if __name__ == "__main__":
    sys.exit(main())
