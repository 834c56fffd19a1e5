"""Served-agent throughput against a fake OpenAI server of fixed latency (no model, no network).

64 agent turns at concurrency 16 against a server that answers each request after a fixed 200 ms: ideally
64 / 16 * 0.2 = 0.8 s (the issue's target: wall <= 1.2 x ideal). The turns go out the way a lockstep rollout sends
them (``ServedTeam.generate`` for one role's pending turns), with math-chat-sized prompts. The server runs in a
process of its own, as a real one would (bench/coach.py's helper), and once in-process for the peak in-flight
count; last, the same requests against a zero-latency server give the per-request client CPU cost, which is what
separates the measured wall time from the ideal.

    .venv/bin/python bench/served.py [--turns 64] [--concurrency 16] [--latency 0.2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]

from coach import server_process  # noqa: E402
from fake_openai_server import FakeOpenAIServer  # noqa: E402

from mappa_envs.agents import Endpoint, ServedTeam  # noqa: E402

SYSTEM = "You are the Code Executor of a three-agent maths team. Write one fenced python block that prints the answer."


def prompts(n: int) -> list[list[dict[str, str]]]:
    return [
        [
            {"role": "system", "content": SYSTEM},
            {
                "role": "user",
                "content": f"## Problem\nWhat is {i} + {i + 1}?\n\n## Problem Solver\n" + "x " * 300,
            },
        ]
        for i in range(n)
    ]


def run(base_url: str, turns: int, concurrency: int) -> tuple[float, ServedTeam]:
    team = ServedTeam({"coder": Endpoint(model="fake-agent", base_url=base_url)}, concurrency=concurrency)
    team.generate("coder", prompts(1))  # import openai, start the loop thread and the pool: not what we time
    start = time.perf_counter()
    replies = team.generate("coder", prompts(turns))
    wall = time.perf_counter() - start
    assert len(replies) == turns and not any(r.agent_error for r in replies), "a turn failed"
    return wall, team


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per row; the table shows the median")
    args = ap.parse_args()
    ideal = -(-args.turns // args.concurrency) * args.latency
    sequential = args.turns * args.latency
    rows = []
    with server_process(args.latency) as base_url:
        walls = [run(base_url, args.turns, args.concurrency)[0] for _ in range(args.repeats)]
        rows.append(("own process", walls))
    with FakeOpenAIServer(latency_s=args.latency) as srv:
        walls = []
        for _ in range(args.repeats):
            wall, team = run(srv.base_url, args.turns, args.concurrency)
            walls.append(wall)
        rows.append(("in-process", walls))
        in_flight = srv.max_in_flight
    tokens = team.stats["coder"]
    with FakeOpenAIServer(latency_s=0.0) as fast:
        overhead, _ = run(fast.base_url, args.turns, args.concurrency)
    print(
        f"served-agent bench: {args.turns} turns, concurrency {args.concurrency}, server latency {args.latency:g} s, "
        f"median of {args.repeats}"
    )
    print(
        f"ideal {ideal:.2f} s ({args.turns}/{args.concurrency} x {args.latency:g} s), sequential {sequential:.2f} s"
    )
    print(f"{'server':<12} {'wall s':>7} {'min s':>7} {'/ideal':>7} {'speedup vs seq':>15}  target")
    for where, walls in rows:
        wall = statistics.median(walls)
        verdict = f"wall <= 1.2 x ideal: {'PASS' if wall <= 1.2 * ideal else 'MISS'}"
        print(
            f"{where:<12} {wall:>7.3f} {min(walls):>7.3f} {wall / ideal:>7.2f} {sequential / wall:>15.1f}  {verdict}"
        )
    print(f"max requests in flight at the in-process server: {in_flight} (concurrency {args.concurrency})")
    print(
        f"usage counted (last in-process run + warm-up): {tokens.prompt_tokens} prompt, {tokens.completion_tokens} completion tokens, {tokens.failed_turns} failed turns"
    )
    print(
        f"per-request client CPU (same {args.turns} requests, zero latency): {overhead:.3f} s = "
        f"{overhead / args.turns * 1000:.1f} ms/request"
    )


if __name__ == "__main__":
    main()
