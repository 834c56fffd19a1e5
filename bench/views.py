"""Single-agent view benchmark: the per-step overhead of ``SingleAgentEnv`` over the AEC loop it drives.

    .venv/bin/python bench/views.py            # ~20 s on 2 cores
    .venv/bin/python bench/views.py --episodes 50

Both loops play the same ``math-chat-v2`` episodes (same seeds, same rules coach in hindsight) with scripted
replies that run no code, so no kernel is involved and what is timed is Python: the env, the reward wrapper and
the loop. The learner is the coder; one of its steps covers its own action, the verifier's turn and the end of the
episode (grading, coaching).

* **raw AEC loop**: ``last()`` + ``step()`` for the coder and then the verifier, the loop a PettingZoo user writes;
* **view**: ``SingleAgentEnv.step(reply)``, which does the same AEC calls plus its own bookkeeping.

The runs are interleaved (raw, view, raw, view, ...) and the overhead is the median of the paired differences,
so a load change on a shared machine hits both. Resets are not timed. Target: overhead < 1 ms median.
"""

from __future__ import annotations

import argparse
import statistics
import time

import mappa_envs
from mappa_envs.views import SingleAgentEnv

TASKS = [{"id": f"t{i}", "problem": f"What is {i} + 5?", "answer": str(i + 5)} for i in range(16)]
REPLIES = {
    "solver": "Adding the two numbers gives the answer.",
    "coder": "No code is needed: the sum is small.",
    "verifier": "The sum is right. \\boxed{0}",
}
TARGET_MS = 1.0


def team(agent: str, messages) -> str:
    return REPLIES[agent]


def raw_step_s(env, seed: int) -> float:
    """Seconds of AEC work from the coder's turn to the episode's end (what one view step covers)."""
    env.reset(seed=seed)
    elapsed = 0.0
    timing = False
    for agent in env.agent_iter():
        if agent == "coder":
            timing = True
        t0 = time.perf_counter()
        obs, _, term, trunc, _ = env.last()
        env.step(None if term or trunc else team(agent, obs["messages"]))
        if timing:
            elapsed += time.perf_counter() - t0
        if all(env.terminations.get(a, False) for a in env.agents):
            break  # the view stops here too (it reads the reward, it does not drain the dead steps)
    return elapsed


def view_step_s(view: SingleAgentEnv, seed: int) -> float:
    view.reset(seed=seed)
    t0 = time.perf_counter()
    _, _, terminated, _, _ = view.step(REPLIES["coder"])
    elapsed = time.perf_counter() - t0
    assert terminated  # one coder step per episode: a reply without code ends its part
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=200)
    args = parser.parse_args()
    kwargs = {"tasks": TASKS, "kernel_pool": 0}
    env = mappa_envs.make("math-chat-v2", **kwargs)
    view = SingleAgentEnv("math-chat-v2", role="coder", teammates=team, **kwargs)
    try:
        for seed in range(5):  # warm-up: imports, caches
            raw_step_s(env, seed)
            view_step_s(view, seed)
        raw, wrapped, diff = [], [], []
        for seed in range(args.episodes):
            r = raw_step_s(env, seed)
            v = view_step_s(view, seed)
            raw.append(r)
            wrapped.append(v)
            diff.append(v - r)
    finally:
        env.close()
        view.close()
    ms = 1e3
    raw_med, view_med, over = (statistics.median(x) * ms for x in (raw, wrapped, diff))
    print(
        f"math-chat-v2, learner = coder, {args.episodes} paired episodes, scripted teammates, no code run\n"
    )
    print(f"{'loop':<34}{'median ms / learner step':>26}{'ratio vs raw':>14}")
    print(f"{'raw AEC loop (last + step)':<34}{raw_med:>26.3f}{1.0:>13.2f}x")
    print(f"{'SingleAgentEnv.step':<34}{view_med:>26.3f}{view_med / raw_med:>13.2f}x")
    verdict = "PASS" if over < TARGET_MS else "MISS"
    print(
        f"\noverhead of the view (median of paired differences): {over:.3f} ms  (< {TARGET_MS} ms {verdict})"
    )


if __name__ == "__main__":
    main()
