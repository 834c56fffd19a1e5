"""What the OS sandbox costs: kernel start, cell latency, a data-science cell sequence and whole DSBench episodes,
each measured with ``sandbox="none"`` and with bubblewrap in the same run, alternating, on the same inputs.

    .venv/bin/python bench/workspace_sandbox.py           # ~2-4 min on 2 cores
    .venv/bin/python bench/workspace_sandbox.py --quick   # fewer repetitions

Target (issue 7): the sandbox costs ≤ 20% on a DSBench episode. Kernel start and single-cell numbers are for
information: they show where the cost sits (bubblewrap's namespace and mount setup at start; nothing per cell,
since cells travel over the same IPC sockets). ``sandbox_table()`` returns the rows, for folding into
``bench/workspace.py`` as a section.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import mappa_envs
from mappa_envs import run_episode
from mappa_envs.scripted import data_science_team
from mappa_envs.workspace import CellLimits, Kernel, Workspace
from mappa_envs.workspace.pool import shutdown_all
from mappa_envs.workspace.procs import descendants
from mappa_envs.workspace.sandbox import SandboxPolicy, make_wrapper, probe_bwrap

PRELOAD = "import numpy, pandas, sklearn, sklearn.ensemble, sklearn.linear_model, sklearn.model_selection"
CELLS = [
    "import numpy as np\nimport pandas as pd\nfrom sklearn.ensemble import RandomForestRegressor",
    "rng = np.random.default_rng(0)\nX = pd.DataFrame(rng.normal(size=(3000, 12)), columns=[f'f{i}' for i in range(12)])\n"
    "y = X.f0 * 2 + X.f1 ** 2 + rng.normal(size=3000)\nX.assign(y=y).to_csv('train.csv', index=False)",
    "df = pd.read_csv('train.csv')\nX, y = df.drop(columns='y'), df.y\nprint(df.shape)",
    "model = RandomForestRegressor(n_estimators=50, random_state=0).fit(X, y)\nprint(round(model.score(X, y), 3))",
    "pd.DataFrame({'pred': model.predict(X)}).to_csv('submission.csv', index=False)\nimport pickle\n"
    "pickle.dump(model, open('model.pkl', 'wb'))",
]
Row = tuple[str, float, float, str]  # metric, none (s), sandbox (s), target
ROOT = Path(tempfile.mkdtemp(prefix="mappa-bench-sandbox-"))  # every folder of the run; removed at the end


def fresh_root() -> Path:
    return Path(tempfile.mkdtemp(dir=ROOT))


def wrapper_for(level: str):
    return make_wrapper(level, SandboxPolicy()).wrapper  # type: ignore[arg-type]


def alternate(fn: Callable[[str], float], reps: int) -> tuple[list[float], list[float]]:
    """Run ``fn("none")`` and ``fn("strict")`` alternately (drift in machine load hits both alike)."""
    none, boxed = [], []
    for i in range(reps):
        for level in ("none", "strict") if i % 2 == 0 else ("strict", "none"):
            (none if level == "none" else boxed).append(fn(level))
    return none, boxed


def kernel_start(level: str) -> float:
    root = fresh_root()
    wrapper = wrapper_for(level)
    folder = wrapper.make_workdir(root) if wrapper is not None and wrapper.binds_workdir else root
    t = time.perf_counter()
    k = Kernel(CellLimits(), wrapper=wrapper).start(cwd=folder)
    k.execute("pass")
    elapsed = time.perf_counter() - t
    k.shutdown()
    if wrapper is not None:
        wrapper.remove_workdir(folder)
    return elapsed


def cell_latency(reps: int) -> tuple[float, float]:
    out = []
    for level in ("none", "strict"):
        ws = Workspace(root=fresh_root(), pool_size=0, wrapper=wrapper_for(level))
        ws.open("bench")
        ws.run("pass")
        times = []
        for _ in range(reps):
            times.append(ws.run("print(1 + 1)").duration_s)
        ws.close()
        out.append(statistics.median(times))
    return out[0], out[1]


def datasci(level: str) -> float:
    """A cold kernel with the DSBench preload, then five data-science cells (fresh workspace each time)."""
    ws = Workspace(
        root=fresh_root(),
        limits=CellLimits(timeout_s=120),
        preload=PRELOAD,
        pool_size=0,
        wrapper=wrapper_for(level),
    )
    ws.open("bench")
    t = time.perf_counter()
    for cell in CELLS:
        r = ws.run(cell)
        assert r.ok, r
    elapsed = time.perf_counter() - t
    ws.close()
    return elapsed


def episode(level: str, pool: int) -> float:
    """One dsbench-3agent episode (scripted competent team, 3 kernels: one per role) from reset to outcome."""
    env = mappa_envs.make(
        "dsbench-3agent", tasks="embedded:eval", kernel_pool=pool, sandbox=level, workspace_dir=fresh_root()
    )
    if pool:  # a warm pool, as while agents are generating: wait until it is full, then time the episode
        ws = env.unwrapped.workspace
        ws.open("warm")
        deadline = time.time() + 120
        while len(ws._pool()._ready) < pool and time.time() < deadline:
            time.sleep(0.05)
    t = time.perf_counter()
    _, outcome = run_episode(env, data_science_team(), options={"task_index": 0})
    elapsed = time.perf_counter() - t
    assert outcome and outcome["valid"], outcome
    env.close()
    shutdown_all()
    return elapsed


def sandbox_table(quick: bool = False) -> list[Row]:
    reps = 3 if quick else 6
    rows: list[Row] = []
    n, s = alternate(kernel_start, reps)
    rows.append(("kernel start + first cell (median)", statistics.median(n), statistics.median(s), "info"))
    n1, s1 = cell_latency(30 if quick else 100)
    rows.append(("cell latency print(1+1) (median)", n1, s1, "info"))
    n, s = alternate(datasci, max(2, reps // 2))
    rows.append(
        ("5 data-science cells, cold kernel + preload", statistics.median(n), statistics.median(s), "info")
    )
    n, s = alternate(lambda level: episode(level, pool=0), max(2, reps // 2))
    rows.append(
        (
            "DSBench episode, kernel_pool=0 (3 cold kernels)",
            statistics.median(n),
            statistics.median(s),
            "≤ 1.20",
        )
    )
    n, s = alternate(lambda level: episode(level, pool=3), max(2, reps // 2))
    rows.append(
        (
            "DSBench episode, kernel_pool=3 (warm kernels)",
            statistics.median(n),
            statistics.median(s),
            "≤ 1.20",
        )
    )
    return rows


def render(rows: list[Row]) -> str:
    head = ("metric", "no sandbox", "bubblewrap", "ratio", "target", "result")
    body = []
    for metric, none, boxed, target in rows:
        ratio = boxed / none if none > 0 else float("nan")
        result = "-" if target == "info" else ("PASS" if ratio <= float(target.split()[-1]) else "MISS")
        body.append((metric, _t(none), _t(boxed), f"{ratio:.2f}×", target, result))
    widths = [max(len(r[i]) for r in (head, *body)) for i in range(len(head))]
    lines = [
        "  ".join(
            c.ljust(w) if i in (0, 4, 5) else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in (head, *body)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _t(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 0.1 else f"{seconds:.3f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    probe = probe_bwrap()
    if not probe.ok:
        print(f"bubblewrap cannot run here ({probe.error}); nothing to compare", file=sys.stderr)
        return 2
    print(f"{os.cpu_count()} cores, python {sys.version.split()[0]}, {probe.path}")
    print(make_wrapper("strict").protection, "\n")
    rows = sandbox_table(args.quick)
    print("== OS sandbox cost (ratio = bubblewrap / no sandbox)")
    print(render(rows))
    shutdown_all()
    shutil.rmtree(ROOT, ignore_errors=True)
    left = descendants(os.getpid())
    print(f"\nchild processes left: {len(left)}")
    misses = [r for r in rows if r[3] != "info" and r[2] / r[1] > float(r[3].split()[-1])]
    return 1 if misses or left else 0


if __name__ == "__main__":
    raise SystemExit(main())
