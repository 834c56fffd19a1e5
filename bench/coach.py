"""Coach throughput and cache benchmark against a local fake OpenAI server (no model, no network).

64 actions, concurrency 16, a fixed 200 ms server latency: ideally 64 / 16 * 0.2 = 0.8 s. Prints the measured
wall time next to that ideal (and the sequential 12.8 s), then judges the same actions again with a fresh coach on
the same cache folder and prints the hit rate (should be 100 %), and last the per-request CPU cost (a run of the
same requests against a zero-latency server), which is what separates the measured wall time from the ideal.

    .venv/bin/python bench/coach.py [--actions 64] [--concurrency 16] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from coach_fixtures import DS_ROLES, record  # noqa: E402
from fake_openai_server import FakeOpenAIServer  # noqa: E402

from mappa_envs.coach import OpenAICoach  # noqa: E402

TESTS = Path(__file__).resolve().parents[1] / "tests"


@contextlib.contextmanager
def server_process(latency_s: float) -> Iterator[str]:
    """The fake server in a process of its own, as a real server would be: its CPU is not charged to our GIL."""
    code = (
        f"import sys, time; sys.path.insert(0, {str(TESTS)!r})\n"
        "from fake_openai_server import FakeOpenAIServer\n"
        f"s = FakeOpenAIServer(latency_s={latency_s!r}).start()\n"
        "print(s.base_url, flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        yield proc.stdout.readline().strip()  # type: ignore[union-attr]
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(timeout=10)


def timed_runs(base_url: str, records, args, cache: str) -> list[tuple[str, float, int, float]]:
    warm = OpenAICoach("fake-coach", base_url=base_url, cache=False)
    warm.judge(records[:1], DS_ROLES)  # import openai, start the loop thread, negotiate: not what we time
    warm.close()
    rows = []
    for run in ("cold", "rerun"):
        coach = OpenAICoach("fake-coach", base_url=base_url, concurrency=args.concurrency, cache_dir=cache)
        start = time.perf_counter()
        js = coach.judge(records, DS_ROLES)
        wall = time.perf_counter() - start
        stats = coach.stats_dict()
        coach.close()
        assert len(js) == args.actions
        rows.append((run, wall, stats["calls"], stats["cache_hit_rate"]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--actions", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--latency", type=float, default=0.2)
    args = ap.parse_args()
    records = [record("modeler", i, f"action {i}", episode_id=f"ep-{i}") for i in range(args.actions)]
    ideal = -(-args.actions // args.concurrency) * args.latency
    sequential = args.actions * args.latency
    with tempfile.TemporaryDirectory() as cache, server_process(args.latency) as base_url:
        rows = [("own process:", *r) for r in timed_runs(base_url, records, args, cache)]
    with tempfile.TemporaryDirectory() as cache, FakeOpenAIServer(latency_s=args.latency) as srv:
        rows += [("in-process:", *r) for r in timed_runs(srv.base_url, records, args, cache)]
        in_flight = srv.max_in_flight
    with FakeOpenAIServer(
        latency_s=0.0
    ) as fast:  # the same requests with no latency: pure per-request CPU cost
        coach = OpenAICoach("fake-coach", base_url=fast.base_url, concurrency=args.concurrency, cache=False)
        coach.judge(records[:1], DS_ROLES)
        start = time.perf_counter()
        coach.judge(records, DS_ROLES)
        overhead = time.perf_counter() - start
        coach.close()
    print(
        f"coach bench: {args.actions} actions, concurrency {args.concurrency}, server latency {args.latency:g} s"
    )
    print(f"ideal {ideal:.2f} s, sequential {sequential:.2f} s")
    print(
        f"{'server':<13} {'run':<6} {'wall s':>7} {'/ideal':>7} {'speedup vs seq':>15} {'calls':>6} {'cache hits':>11}  target"
    )
    for where, run, wall, calls, hit in rows:
        if run == "cold":
            verdict = f"wall <= 1.2 x ideal: {'PASS' if wall <= 1.2 * ideal else 'MISS'}"
        else:
            verdict = f"100% cache hits: {'PASS' if hit == 1.0 else 'MISS'}"
        print(
            f"{where:<13} {run:<6} {wall:>7.3f} {wall / ideal:>7.2f} {sequential / wall:>15.1f} {calls:>6} {hit:>10.0%}  {verdict}"
        )
    print(f"max requests in flight at the in-process server: {in_flight} (concurrency {args.concurrency})")
    print(
        f"per-request CPU (same {args.actions} requests, zero latency): {overhead:.3f} s = "
        f"{overhead / args.actions * 1000:.1f} ms/request (openai client + in-process HTTP server, one GIL)"
    )


if __name__ == "__main__":
    main()
