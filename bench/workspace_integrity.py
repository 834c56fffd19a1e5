"""What reward integrity costs (issue 21): the isolated grader and the host-side checks, against the old code path
in the same run, alternating, on the same inputs.

    .venv/bin/python bench/workspace_integrity.py           # ~2-3 min on 2 cores
    .venv/bin/python bench/workspace_integrity.py --quick

Rows:
* **episode** — a scripted DSBench episode (iris, bubblewrap sandbox) and a maths episode (math-chat, a fraction
  answer so math_verify runs), each with graders in the worker process (new) and in-process (``MAPPA_GRADER=direct``,
  the old path); the hostio checks run in both (they replaced the old readers), so they are priced separately:
* **listing** — one workspace listing, :func:`hostio.files` against the old ``os.walk`` + ``lstat`` loop, times
  the listings an episode makes;
* **submission read** — :func:`hostio.read_bytes` + parse against ``pd.read_csv(path)``.

Target: the isolated grader and the checks together cost ≤ 10% of an episode.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

import mappa_envs
from mappa_envs import run_episode, team_from_replies
from mappa_envs.grading import isolated
from mappa_envs.scripted import data_science_team
from mappa_envs.workspace import hostio

MATH_TASKS = [
    {
        "id": "frac",
        "problem": "What is 1/2 + 1/4? Put your final answer in \\boxed{}.",
        "answer": "\\frac{3}{4}",
    }
]
MATH_TEAM = {
    "solver": ["We add 1/2 and 1/4."],
    "coder": [
        "```python\nfrom fractions import Fraction\nprint(Fraction(1, 2) + Fraction(1, 4))\n```",
        "3/4",
    ],
    "verifier": ["The sum is \\boxed{\\frac{3}{4}}"],
}


def _old_listing(path: Path) -> list[tuple[str, int]]:
    """The pre-hostio listing (os.walk + lstat), kept here only to price the new one."""
    out = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if d not in {"__pycache__", ".ipynb_checkpoints"})
        for f in sorted(filenames):
            p = Path(dirpath) / f
            out.append((str(p.relative_to(path)), p.lstat().st_size))
    return sorted(out)


def _best_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def _grade_ms(grade, n: int) -> tuple[float, float]:
    """Median ms of one grade in-process (old) and in the worker (new), alternating."""
    old, new = [], []
    for i in range(2 * n):
        isolated.set_direct(i % 2 == 1)
        t = time.perf_counter()
        grade()
        (old if i % 2 else new).append(1000 * (time.perf_counter() - t))
    isolated.set_direct(False)
    return statistics.median(old), statistics.median(new)


def _settle(env, timeout_s: float = 120.0) -> None:
    """Wait until the warm kernel pool is full again, so no arm of the comparison pays another's kernel starts."""
    pool = env.unwrapped.workspace._pool()
    deadline = time.monotonic() + timeout_s
    while len(pool._ready) < pool.size and time.monotonic() < deadline:
        time.sleep(0.05)


def _episodes(env, team_factory, options, reps: int) -> tuple[list[float], list[float], dict]:
    """Alternate isolated and direct grading; seconds per episode for each, and the last outcome."""
    new, old = [], []
    outcome: dict = {}
    run_episode(env, team_factory(), seed=0, options=options)  # warm: pool, worker, imports
    isolated.set_direct(True)
    run_episode(env, team_factory(), seed=0, options=options)
    for i in range(2 * reps):
        direct = (i % 4) in (1, 2)  # new old old new ...: neither arm always runs first
        isolated.set_direct(direct)
        _settle(env)
        t = time.perf_counter()
        _, outcome = run_episode(env, team_factory(), seed=0, options=options)
        (old if direct else new).append(time.perf_counter() - t)
    isolated.set_direct(False)
    if os.environ.get("BENCH_VERBOSE"):
        print("new", [round(x, 3) for x in new], "old", [round(x, 3) for x in old])
    return new, old, outcome


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sandbox", default="strict")
    args = ap.parse_args()
    reps = 2 if args.quick else 5

    rows = []
    ds = mappa_envs.make("dsbench-3agent", reward="outcome", tasks="embedded:train", sandbox=args.sandbox)
    opts = {"task_index": [t.id for t in ds.unwrapped.tasks].index("iris-species")}
    new, old, outcome = _episodes(ds, data_science_team, opts, reps)
    assert outcome["valid"], outcome
    ds_episode = statistics.median(old)
    rows.append(
        ("DSBench episode (isolated vs in-process grader)", 1000 * ds_episode, 1000 * statistics.median(new))
    )
    n_steps = len(ds.unwrapped.records)

    # price the checks on the finished episode's workspace (its folder stays until the next reset)
    path = ds.unwrapped.workspace.path
    listings = 3 * n_steps  # before, after, and in the next observation
    old_l = _best_ms(lambda: _old_listing(path), 50)
    new_l = _best_ms(lambda: list(hostio.files(path, 200)), 50)
    rows.append((f"workspace listing x{listings} per episode", old_l * listings, new_l * listings))
    sub = path / "submission.csv"
    old_r = _best_ms(lambda: pd.read_csv(sub, dtype=str, keep_default_na=False), 50)
    new_r = _best_ms(
        lambda: pd.read_csv(io.BytesIO(hostio.read_bytes(path, "submission.csv", 1 << 24)), dtype=str), 50
    )
    rows.append(("submission read + parse", old_r, new_r))
    raw = ds.unwrapped
    old_g, new_g = _grade_ms(lambda: raw.spec.grade(raw.task, raw.records, path), 20)
    rows.append(("DSBench grade (worker vs in-process)", old_g, new_g))
    ds.close()

    mc = mappa_envs.make("math-chat", reward="outcome", tasks=MATH_TASKS, sandbox=args.sandbox)
    new_m, old_m, m_outcome = _episodes(mc, lambda: team_from_replies(MATH_TEAM), {"task_index": 0}, reps)
    assert m_outcome["correct"], m_outcome
    raw = mc.unwrapped
    old_mg, new_mg = _grade_ms(lambda: raw.spec.grade(raw.task, raw.records, None), 20)
    rows.append(("maths grade (worker vs in-process)", old_mg, new_mg))
    rows.append(
        (
            "maths episode (isolated vs in-process grader)",
            1000 * statistics.median(old_m),
            1000 * statistics.median(new_m),
        )
    )
    mc.close()

    print(f"\nreward-integrity cost, median of {reps} alternating runs (python {sys.version.split()[0]})\n")
    print(f"| {'what':<48} | {'old ms':>9} | {'new ms':>9} | {'ratio':>6} |")
    print(f"|{'-' * 50}|{'-' * 11}|{'-' * 11}|{'-' * 8}|")
    for what, o, n in rows:
        print(f"| {what:<48} | {o:9.1f} | {n:9.1f} | {n / o:6.3f} |")
    ds_all = statistics.median(new + old)
    m_all = statistics.median(new_m + old_m)
    ds_cost = (new_l - old_l) * listings + (new_r - old_r) + (new_g - old_g)
    m_cost = new_mg - old_mg
    print(
        f"\nper episode, isolated grader + checks: DSBench {ds_cost:+.1f} ms = {100 * ds_cost / (1000 * ds_all):+.2f}% "
        f"of a {ds_all:.2f} s episode; maths {m_cost:+.1f} ms = {100 * m_cost / (1000 * m_all):+.2f}% of a "
        f"{m_all:.2f} s episode (target ≤ 10%). Whole-episode rows are for context: their spread on a shared "
        "2-core machine is larger than the cost measured here."
    )


if __name__ == "__main__":
    main()
