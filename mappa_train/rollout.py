"""Batched rollouts: B episodes of a mappa env at once, their replies decoded in batches.

With a continuous decoder (the in-process sampler in lora mode) the pending turns of every role share one decode
batch, and an episode is stepped as soon as its reply finishes, its next turn joining the running batch. Without
one (a served sampler, full-copy mode) the episodes run in lockstep: at every tick each unfinished episode has
exactly one pending agent turn, pending turns are grouped by role and generated in one batch with that role's
weights. Either way the env steps (which run code cells and, at episode end, the
hindsight coach) run concurrently in a thread pool — separate episodes have separate kernels, and kernel I/O and
coach HTTP calls release the GIL. The sampled token ids and log-probs are kept per action and joined with what the
env's reward wrapper paid that action (:func:`mappa_envs.rewards.paid`), so the trainer trains on exactly the
rewards the env paid, and nothing is ever re-tokenised.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
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


class _Progress:
    """A bar over actions (turns) whose total is a running estimate: episodes x mean actions per finished episode.

    Why: episodes differ in length, so a bar over episodes jumps and its ETA says little; the action count moves
    every turn. The postfix shows completion tokens per second since the start.
    """

    def __init__(self, episodes: int, progress: bool, desc: str) -> None:
        self.episodes = episodes
        self.bar = tqdm(total=None, desc=desc, unit="act", disable=not progress, leave=False)
        self.finished_actions = 0
        self.finished = 0
        self.tokens = 0
        self.start = time.perf_counter()

    def action(self, gen: Generation) -> None:
        self.tokens += len(gen.completion_ids)
        self.bar.update(1)
        self._postfix()

    def episode(self, actions: int) -> None:
        self.finished += 1
        self.finished_actions += actions
        estimate = round(self.finished_actions / self.finished * self.episodes)
        self.bar.total = max(estimate, self.bar.n)
        self._postfix()

    def _postfix(self) -> None:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix(
            ep=f"{self.finished}/{self.episodes}", tok_s=f"{self.tokens / elapsed:.0f}", refresh=False
        )

    def close(self) -> None:
        self.bar.close()


def row_seed(base: int, episode: int, turn: int) -> int:
    """The seed of one reply's generator, from the rollout's base seed, the episode index and the turn."""
    return int(np.random.SeedSequence([base, episode, turn]).generate_state(1, np.uint64)[0] >> 1)


def run_rollouts(
    envs: Sequence[Any],
    policy: Policy,
    resets: Sequence[dict[str, Any]],
    workers: int | None = None,
    progress: bool = True,
    desc: str = "rollout",
) -> list[Episode]:
    """Play ``len(resets)`` episodes with ``policy``, ``len(envs)`` at a time.

    ``resets`` holds the ``reset`` keyword arguments of each episode (``seed``, ``options={"task_index": i}``).
    Returns the episodes in the order of ``resets``.

    When the policy offers a continuous decoder (``policy.decoder()``, :class:`~mappa_train.policy.TeamPolicy`
    with the in-process sampler in lora mode), the pending turns of every role share one decode batch and an
    episode is stepped as soon as its reply finishes, its next turn joining the running batch; each reply samples
    from its own generator seeded from ``(base, episode, turn)`` with ``base`` drawn from the global torch RNG
    (so ``torch.manual_seed`` still makes a rollout reproducible). Otherwise the episodes run in lockstep: one
    ``policy.generate(role, prompts)`` batch per role per tick.
    """
    open_decoder = getattr(policy, "decoder", None)
    decoder = open_decoder() if open_decoder is not None else None
    rollout = _Rollout(envs, resets, workers, _Progress(len(resets), progress, desc))
    try:
        if decoder is not None:
            rollout.continuous(decoder)
        else:
            rollout.lockstep(policy)
    finally:
        rollout.close()
    return [r for r in rollout.results if r is not None]


class _Rollout:
    """The state both loops share: which episode each env plays, the generations so far, the finished episodes."""

    def __init__(
        self, envs: Sequence[Any], resets: Sequence[dict[str, Any]], workers: int | None, bar: _Progress
    ):
        self.envs, self.resets, self.bar = envs, resets, bar
        self.results: list[Episode | None] = [None] * len(resets)
        self.queue = list(range(len(resets)))
        self.slots: list[int | None] = [None] * len(envs)
        self.generations: dict[int, list[Generation]] = defaultdict(list)
        self.pool = ThreadPoolExecutor(max_workers=workers or len(envs), thread_name_prefix="mappa-env")

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.bar.close()

    def start(self, slot: int) -> None:
        episode = self.queue.pop(0)
        self.envs[slot].reset(**self.resets[episode])
        self.slots[slot] = episode

    def finish(self, slot: int) -> None:
        episode = self.slots[slot]
        env = self.envs[slot]
        raw = env.unwrapped
        self.results[episode] = Episode(
            records=list(raw.records),
            generations=self.generations.pop(episode),
            outcome=dict(raw.outcome or {}),
            task_id=raw.task.id,
            task_tags=tuple(raw.task.tags),
            rewards=paid(env),
        )
        self.slots[slot] = None
        self.bar.episode(len(self.results[episode].generations))

    def record(self, slot: int, gen: Generation) -> None:
        self.generations[self.slots[slot]].append(gen)  # type: ignore[index]
        self.bar.action(gen)

    def lockstep(self, policy: Policy) -> None:
        """Every unfinished episode has one pending turn per tick; one generate batch per role."""
        envs, slots = self.envs, self.slots
        for slot in range(min(len(envs), len(self.queue))):
            self.start(slot)
        while any(s is not None for s in slots):
            pending = {slot: _advance(envs[slot]) for slot, ep in enumerate(slots) if ep is not None}
            for slot, turn in list(pending.items()):
                if turn is None:
                    self.finish(slot)
                    del pending[slot]
                    if self.queue:
                        self.start(slot)
            by_role: dict[str, list[int]] = defaultdict(list)
            for slot, (agent, _) in pending.items():
                by_role[agent].append(slot)
            replies: dict[int, Generation] = {}
            for role, role_slots in by_role.items():
                outs = policy.generate(role, [pending[s][1] for s in role_slots])
                replies.update(zip(role_slots, outs, strict=True))
            for slot, gen in replies.items():
                self.record(slot, gen)
            steps = [self.pool.submit(envs[slot].step, gen.text) for slot, gen in replies.items()]
            for future in steps:
                future.result()  # re-raise an env error here, in the training loop

    def continuous(self, decoder: Any) -> None:
        """One decode batch over every role, refilled: an env steps (in the pool) as soon as its reply is done.

        Invariant: each env has at most one thing in flight, a pool future (reset or step, then advance to the
        next pending turn) or a reply in the decoder, so env calls of one episode never overlap.
        """
        envs, slots = self.envs, self.slots
        base = int(torch.randint(2**62, (1,)).item())
        futures: dict[Future, int] = {}

        def reset_and_advance(slot: int, episode: int):
            envs[slot].reset(**self.resets[episode])
            return _advance(envs[slot])

        def begin(slot: int) -> None:
            episode = self.queue.pop(0)  # here, in the main thread: the pool only resets
            slots[slot] = episode
            futures[self.pool.submit(reset_and_advance, slot, episode)] = slot

        def step_and_advance(slot: int, text: str):
            envs[slot].step(text)
            return _advance(envs[slot])

        for slot in range(min(len(envs), len(self.queue))):
            begin(slot)
        while futures or decoder.active:
            if futures:
                ready, _ = wait(
                    list(futures), timeout=0 if decoder.active else None, return_when=FIRST_COMPLETED
                )
                for future in ready:
                    slot = futures.pop(future)
                    turn = future.result()  # re-raise an env error here, in the training loop
                    if turn is None:
                        self.finish(slot)
                        if self.queue:
                            begin(slot)
                        continue
                    episode = slots[slot]
                    role, messages = turn
                    seed = row_seed(base, episode, len(self.generations[episode]))  # type: ignore[arg-type]
                    decoder.submit(slot, role, messages, seed)
            if decoder.active:
                for slot, gen in decoder.step():
                    self.record(slot, gen)
                    futures[self.pool.submit(step_and_advance, slot, gen.text)] = slot


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
