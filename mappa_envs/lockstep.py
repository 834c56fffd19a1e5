"""Several episodes at once with any policy: the AEC loop over a list of envs, one batched call per role per tick.

A model is fastest when it answers many prompts at once, and an env spends its time in code cells and coach calls
that release the GIL. :func:`play` keeps one episode running in each env, gathers every env's pending turn, asks
the policy once per role for all of them, and steps the envs concurrently. The policy is either a function of one
turn, ``act(agent, messages) -> str`` (a scripted team, a served model), or a batched one, ``act_batch(agent,
[messages, ...]) -> [str, ...]`` (a local model decoding a batch). No torch needed: the trainer's own rollouts
(:func:`mappa_train.rollout.run_rollouts`) follow the same schedule and also keep token ids and log-probs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from mappa_envs.records import ActionRecord, Message

Act = Callable[[str, list[Message]], str]
ActBatch = Callable[[str, list[list[Message]]], list[str]]


@dataclass
class Played:
    """One finished episode: its receipts, the graded outcome, and the reward each agent was paid in total."""

    task_id: str
    outcome: dict[str, Any]
    records: list[ActionRecord]
    returns: dict[str, float] = field(default_factory=dict)


def play(
    envs: Sequence[Any],
    resets: Sequence[Mapping[str, Any]],
    act: Act | None = None,
    *,
    act_batch: ActBatch | None = None,
    workers: int | None = None,
) -> list[Played]:
    """Play ``len(resets)`` episodes (each the ``reset`` keywords of one), ``len(envs)`` at a time.

    Give exactly one of ``act`` (called once per turn) and ``act_batch`` (called once per role per tick with every
    pending turn of that role). Returns the episodes in the order of ``resets``.
    """
    if (act is None) == (act_batch is None):
        raise TypeError("play() takes exactly one of act=(agent, messages) -> str and act_batch=")
    if not envs:
        raise ValueError("play() needs at least one env")
    batch = act_batch or (lambda agent, many: [act(agent, m) for m in many])  # type: ignore[misc]
    results: list[Played | None] = [None] * len(resets)
    queue = list(range(len(resets)))
    running: dict[int, int] = {}  # env slot -> episode index
    totals: dict[int, dict[str, float]] = {}

    def start(slot: int) -> None:
        episode = queue.pop(0)
        envs[slot].reset(**resets[episode])
        running[slot] = episode
        totals[episode] = defaultdict(float)

    def pending(slot: int) -> tuple[str, list[Message]] | None:
        env = envs[slot]
        while env.agents:
            obs, reward, term, trunc, _ = env.last()
            totals[running[slot]][env.agent_selection] += float(reward)
            if term or trunc:
                env.step(None)
                continue
            return env.agent_selection, obs["messages"]
        return None

    with ThreadPoolExecutor(max_workers=workers or len(envs), thread_name_prefix="mappa-lockstep") as pool:
        for slot in range(min(len(envs), len(queue))):
            start(slot)
        while running:
            turns: dict[int, tuple[str, list[Message]]] = {}
            for slot in list(running):
                turn = pending(slot)
                if turn is not None:
                    turns[slot] = turn
                    continue
                episode = running.pop(slot)
                raw = envs[slot].unwrapped
                results[episode] = Played(
                    raw.task.id, dict(raw.outcome or {}), list(raw.records), dict(totals.pop(episode))
                )
                if queue:
                    start(slot)
                    turn = pending(slot)
                    if turn is not None:
                        turns[slot] = turn
            by_role: dict[str, list[int]] = defaultdict(list)
            for slot, (agent, _) in turns.items():
                by_role[agent].append(slot)
            replies: dict[int, str] = {}
            for role, slots in by_role.items():
                texts = batch(role, [turns[s][1] for s in slots])
                if len(texts) != len(slots):
                    raise RuntimeError(
                        f"act_batch returned {len(texts)} replies for {len(slots)} {role} turns"
                    )
                replies.update(zip(slots, texts, strict=True))
            for future in [pool.submit(envs[slot].step, text) for slot, text in replies.items()]:
                future.result()  # an env error surfaces here, in the caller's loop
    return [r for r in results if r is not None]
