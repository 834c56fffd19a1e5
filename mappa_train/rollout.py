"""Batched rollouts: B episodes of a mappa env in lockstep, one generation batch per role per tick.

At every tick each unfinished episode has exactly one pending agent turn. Pending turns are grouped by role and
generated in one batch with that role's weights; the env steps (which run code cells and, at episode end, the
hindsight coach) run concurrently in a thread pool — separate episodes have separate kernels, and kernel I/O and
coach HTTP calls release the GIL. The sampled token ids and log-probs are kept per action and joined with what the
env's reward wrapper paid that action (:func:`mappa_envs.rewards.paid`), so the trainer trains on exactly the
rewards the env paid, and nothing is ever re-tokenised.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from mappa_envs.records import ActionRecord
from mappa_envs.rewards import paid
from mappa_train.types import Generation, Policy, Sample


@dataclass
class Episode:
    """A finished episode: its receipts, the generation behind each action, and the graded outcome."""

    records: list[ActionRecord]
    generations: list[Generation]
    outcome: dict[str, Any]
    task_id: str
    task_tags: tuple[str, ...] = ()
    rewards: list[float] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return bool(self.outcome.get("success"))


def _advance(env: Any) -> tuple[str, list[dict[str, str]]] | None:
    """Step finished agents out; return the pending (agent, messages), or None when the episode is over."""
    while env.agents:
        obs, _, term, trunc, _ = env.last()
        if term or trunc:
            env.step(None)
            continue
        return env.agent_selection, obs["messages"]
    return None


def draw_resets(
    seed: int, step: int, n_tasks: int, episodes: int, group_size: int = 1, rank: int = 0, world: int = 1
) -> list[dict[str, Any]]:
    """This process's share of step ``step``'s episodes: the ``reset`` arguments, drawn from ``(seed, step)``.

    ``group_size = 1``: ``episodes`` tasks drawn with replacement, one seed each, episode ``i`` on rank
    ``i % world``. ``group_size = n > 1`` (the group sampler GRPO needs): ``episodes / n`` tasks, each played
    ``n`` times with different seeds, so every role's replies at a turn form groups of ``n`` answering the same
    task (``Sample.group``); whole groups are dealt to ranks (group ``g`` on rank ``g % world``) so a group's
    statistics are never split. Two groups that draw the same task share a group key, i.e. form one larger group.
    """
    if group_size < 1 or episodes % group_size:
        raise ValueError(
            f"episodes_per_step={episodes} must be a positive multiple of group_size={group_size}: "
            "change one of them"
        )
    rng = np.random.default_rng([seed, step])
    n_groups = episodes // group_size
    tasks = rng.integers(n_tasks, size=n_groups)
    seeds = rng.integers(2**31, size=episodes)
    return [
        {"seed": int(seeds[i]), "options": {"task_index": int(tasks[i // group_size])}}
        for i in range(episodes)
        if (i // group_size) % world == rank
    ]


def run_rollouts(
    envs: Sequence[Any],
    policy: Policy,
    resets: Sequence[dict[str, Any]],
    workers: int | None = None,
    progress: bool = True,
    desc: str = "rollout",
) -> list[Episode]:
    """Play ``len(resets)`` episodes with ``policy``, ``len(envs)`` at a time in lockstep.

    ``resets`` holds the ``reset`` keyword arguments of each episode (``seed``, ``options={"task_index": i}``).
    Returns the episodes in the order of ``resets``.
    """
    results: list[Episode | None] = [None] * len(resets)
    queue = list(range(len(resets)))
    slots: list[int | None] = [None] * len(envs)
    generations: dict[int, list[Generation]] = defaultdict(list)
    pool = ThreadPoolExecutor(max_workers=workers or len(envs), thread_name_prefix="mappa-env")
    bar = tqdm(total=len(resets), desc=desc, unit="ep", disable=not progress, leave=False)

    def start(slot: int) -> None:
        episode = queue.pop(0)
        envs[slot].reset(**resets[episode])
        slots[slot] = episode

    def finish(slot: int) -> None:
        episode = slots[slot]
        raw = envs[slot].unwrapped
        records = list(raw.records)
        results[episode] = Episode(
            records=records,
            generations=generations.pop(episode),
            outcome=dict(raw.outcome or {}),
            task_id=raw.task.id,
            task_tags=tuple(raw.task.tags),
            rewards=paid(envs[slot]),
        )
        slots[slot] = None
        bar.update(1)

    try:
        for slot in range(min(len(envs), len(queue))):
            start(slot)
        while any(s is not None for s in slots):
            pending = {slot: _advance(envs[slot]) for slot, ep in enumerate(slots) if ep is not None}
            for slot, turn in list(pending.items()):
                if turn is None:
                    finish(slot)
                    del pending[slot]
                    if queue:
                        start(slot)
            by_role: dict[str, list[int]] = defaultdict(list)
            for slot, (agent, _) in pending.items():
                by_role[agent].append(slot)
            replies: dict[int, Generation] = {}
            for role, role_slots in by_role.items():
                outs = policy.generate(role, [pending[s][1] for s in role_slots])
                replies.update(zip(role_slots, outs, strict=True))
            for slot, gen in replies.items():
                generations[slots[slot]].append(gen)  # type: ignore[index]
            steps = [pool.submit(envs[slot].step, gen.text) for slot, gen in replies.items()]
            for future in steps:
                future.result()  # re-raise an env error here, in the training loop
    finally:
        pool.shutdown(wait=True)
        bar.close()
    return [r for r in results if r is not None]


def episodes_to_samples(episodes: Sequence[Episode]) -> list[Sample]:
    """One :class:`Sample` per action, with the action's reward from its receipt (and the coach's correction and
    score, when its judgement has them: the supervised target travels with the sample)."""
    samples = []
    for ep in episodes:
        for record, gen, reward in zip(ep.records, ep.generations, ep.rewards, strict=True):
            samples.append(
                Sample(
                    role=record.role,
                    prompt_ids=list(gen.prompt_ids),
                    completion_ids=list(gen.completion_ids),
                    behaviour_logprobs=list(gen.logprobs),
                    reward=reward,
                    truncated=gen.truncated,
                    outcome_reward=float(ep.outcome.get("reward", 0.0)),
                    task_id=ep.task_id,
                    task_tags=ep.task_tags,
                    episode_id=record.episode_id,
                    step=record.step,
                    group=f"{ep.task_id}/{record.role}/{record.turn}",
                    correction=record.judgement.correction if record.judgement is not None else None,
                    coach_score=record.judgement.score if record.judgement is not None else None,
                )
            )
    return samples
