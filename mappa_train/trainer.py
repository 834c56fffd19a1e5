"""The training loop: rollout → rewards → advantages → per-role update → held-out eval → log → checkpoint.

Every step is a deterministic function of (config, step, weights): the tasks and env seeds of step ``s`` are drawn
from ``(seed, s)`` and the sampling RNG is re-seeded from them, so a run killed at any point and resumed from its
last checkpoint produces the same weights as a run that was never interrupted.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import mappa_envs
from mappa_envs.tasks import TaskSet
from mappa_train import distributed as dist
from mappa_train.algorithms import get_estimator
from mappa_train.checkpoint import (
    CheckpointError,
    check_checkpoint,
    is_old_format,
    latest_checkpoint,
    list_checkpoints,
    load_trainer_state,
    remove_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from mappa_train.config import TrainConfig
from mappa_train.rollout import Episode, draw_resets, episodes_to_samples, run_rollouts
from mappa_train.rundir import claim
from mappa_train.runlog import RunLogger, atomic_write_text, read_metrics
from mappa_train.types import Sample
from mappa_train.update import compute_advantages, update_role


def filter_tasks(tasks: TaskSet, tags: Sequence[str]) -> TaskSet:
    """Keep the tasks that match ``tags`` as facets (all tasks when ``tags`` is empty).

    Tags sharing a key (the part before ``:``) are alternatives, different keys must all hold:
    ``[level:1, level:2, family:power]`` keeps level-1 *or* level-2 tasks that are *also* power tasks. This is the
    filter users know from search facets, and it lets a config narrow the difficulty mix without new task files.
    """
    if not tags:
        return tasks
    facets: dict[str, set[str]] = {}
    for tag in tags:
        facets.setdefault(tag.split(":", 1)[0], set()).add(tag)
    kept = [t for t in tasks if all(any(tag in t.tags for tag in group) for group in facets.values())]
    if not kept:
        raise ValueError(
            f"no task in {tasks.name} matches the tags {list(tags)} (same key: any of them; different keys: all); "
            "check the spelling against the tasks' 'tags' field or drop a key"
        )
    return TaskSet(kept, name=f"{tasks.name}{list(tags)}")


def load_tasks(config: TrainConfig, source: str) -> TaskSet:
    """The tasks at ``source`` as the env loads them, narrowed by ``config.task_filter``."""
    probe = mappa_envs.make(config.env, reward="outcome", tasks=source)
    try:
        return filter_tasks(probe.unwrapped.tasks, config.task_filter)
    finally:
        probe.close()


def make_env(config: TrainConfig, tasks: TaskSet | str, env_id: str | None = None) -> Any:
    """An env built as the trainer builds it: the config's reward, coach and ``env_kwargs``."""
    kwargs: dict[str, Any] = {"tasks": tasks, "reward": config.reward, **config.env_kwargs}
    if config.reward == "coach":
        kwargs.update(coach=config.coach, hindsight=config.hindsight)
        if config.correction_weight > 0:  # the supervised term needs the coach's corrections
            kwargs["coach_kwargs"] = {**dict(kwargs.get("coach_kwargs") or {}), "corrections": True}
    return mappa_envs.make(env_id or config.env, **kwargs)


def build_policy(config: TrainConfig, roles: list[str]):
    from mappa_train.models import load_base
    from mappa_train.policy import TeamPolicy

    model, tokenizer = load_base(config.model)
    policy = TeamPolicy(
        model,
        tokenizer,
        roles,
        mode=config.mode,
        lora_r=config.lora_r,
        lora_alpha=config.lora_alpha,
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        max_prompt_tokens=config.max_prompt_tokens,
    )
    if config.sampler == "vllm":
        from mappa_train.vllm_sampler import VLLMSampler

        adapter_dir = Path(config.vllm_adapter_dir or Path(config.out_dir) / "vllm-adapters")
        suffix = f"-rank{dist.rank()}" if dist.world_size() > 1 else ""
        policy.sampler = VLLMSampler(
            config.vllm_url,
            adapter_dir / suffix.strip("-") if suffix else adapter_dir,
            policy.weights,
            policy.stop_token_ids,
            decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
            timeout=config.vllm_timeout,
            name_suffix=suffix,
        )
    return policy.enable_gradient_checkpointing() if config.gradient_checkpointing else policy


def episode_metrics(prefix: str, episodes: Sequence[Episode]) -> dict[str, float]:
    """Success rate, mean outcome reward (a fair mean: failures count at baseline), coach-vs-outcome by tag.

    Success rate and mean outcome reward are summed over all processes of a data-parallel run; the per-tag and
    coach figures are this process's share.
    """
    totals = dist.all_reduce_sum(
        torch.tensor(
            [
                float(len(episodes)),
                float(sum(e.success for e in episodes)),
                float(sum(e.outcome.get("reward", 0.0) for e in episodes)),
            ],
            dtype=torch.float64,
        )
    )
    n, successes, reward = (float(x) for x in totals)
    if n == 0:
        return {}
    out: dict[str, float] = {
        f"{prefix}/success_rate": successes / n,
        f"{prefix}/mean_outcome_reward": reward / n,
        f"{prefix}/episodes": n,
    }
    rewards = [r for e in episodes for r in e.rewards]
    out[f"{prefix}/mean_action_reward"] = float(np.mean(rewards)) if rewards else 0.0
    judged = [r.judgement for e in episodes for r in e.records if r.judgement is not None]
    if judged:
        out[f"{prefix}/coach_fallback_rate"] = float(np.mean([j.source == "fallback" for j in judged]))
    by_tag: dict[str, list[Episode]] = defaultdict(list)
    for e in episodes:
        for tag in e.task_tags:
            by_tag[tag].append(e)
    for tag, eps in sorted(by_tag.items()):
        out[f"{prefix}_by_tag/{tag}/coach"] = float(np.mean([r for e in eps for r in e.rewards] or [0.0]))
        out[f"{prefix}_by_tag/{tag}/outcome"] = float(np.mean([e.success for e in eps]))
    return out


# Why the published maths configs print this: with the sampler's log-probs as the "old" ones, a batch that carries
# no signal for a role (all rewards equal, adapter still at its start) still moves it one full AdamW step.
SAMPLER_NOISE_WARNING = (
    "old_logprobs='sampler': a role whose rewards in a batch are all equal while its adapter is still at its start "
    "takes a full lr step in a direction set by float noise, which differs between machines (docs/RESULTS.md, "
    "'The bugs these runs found'). Use old_logprobs=recompute (the default) unless you are reproducing the "
    "published maths runs."
)


class Trainer:
    """``Trainer(config).fit()`` trains every role of the team; ``evaluate()`` scores the held-out tasks."""

    def __init__(self, config: TrainConfig, policy: Any = None) -> None:
        self.config = config
        # the estimator and its needs (group_size, kl_in) are checked before any env or model is built
        get_estimator(
            config.algorithm, group_size=config.group_size, kl_in=config.kl_in, kl_beta=config.kl_beta
        )
        self.rank, self.world = dist.init()
        self.out_dir = Path(config.out_dir)
        probe = mappa_envs.make(config.env, reward="outcome", tasks=config.train_tasks)
        self.roles = list(probe.unwrapped.possible_agents)
        self.train_tasks = filter_tasks(probe.unwrapped.tasks, config.task_filter)
        probe.close()
        self.eval_tasks = load_tasks(config, config.eval_tasks)
        torch.manual_seed(config.seed)
        self.policy = policy if policy is not None else build_policy(config, self.roles)
        params = {role: list(self.policy.trainable_parameters(role)) for role in self.roles}
        self.optimizers = {  # a role without parameters (served, scripted) is played, not trained
            role: torch.optim.AdamW(p, lr=config.lr, weight_decay=config.weight_decay)
            for role, p in params.items()
            if p
        }
        self.step = 0
        self.episodes_seen = 0
        self._train_envs: list[Any] = []
        self._eval_envs: list[Any] = []

    # -- envs ----------------------------------------------------------------------------------------------------
    def _make_env(self, tasks: TaskSet) -> Any:
        return make_env(self.config, tasks)

    def _envs(self, which: str) -> list[Any]:
        pool = self._train_envs if which == "train" else self._eval_envs
        if not pool:
            tasks = self.train_tasks if which == "train" else self.eval_tasks
            pool.extend(self._make_env(tasks) for _ in range(self.config.parallel_envs))
        return pool

    def close(self) -> None:
        for env in self._train_envs + self._eval_envs:
            env.close()
        self._train_envs, self._eval_envs = [], []

    # -- rollouts ------------------------------------------------------------------------------------------------
    def _train_resets(self, step: int) -> list[dict[str, Any]]:
        """This process's share of step ``step``'s episodes: tasks and seeds drawn from (seed, step)."""
        c = self.config
        return draw_resets(
            c.seed, step, len(self.train_tasks), c.episodes_per_step, c.group_size, self.rank, self.world
        )

    def rollout(self, step: int) -> list[Episode]:
        torch.manual_seed(self.config.seed * 1_000_003 + step)
        self.policy.eval()
        return run_rollouts(
            self._envs("train"),
            self.policy,
            self._train_resets(step),
            progress=self.config.progress,
            desc=f"rollout {step}",
        )

    def evaluate(self) -> tuple[dict[str, float], list[Episode]]:
        """Play the held-out tasks (greedy by default) and grade them programmatically."""
        c = self.config
        n = len(self.eval_tasks) if c.eval_episodes <= 0 else min(c.eval_episodes, len(self.eval_tasks))
        resets = [{"seed": c.seed + i, "options": {"task_index": i}} for i in range(self.rank, n, self.world)]
        torch.manual_seed(c.seed)
        self.policy.eval()
        with self.policy.sampling(temperature=c.eval_temperature):
            episodes = run_rollouts(self._envs("eval"), self.policy, resets, progress=c.progress, desc="eval")
        return episode_metrics("eval", episodes), episodes

    # -- update --------------------------------------------------------------------------------------------------
    def update(self, samples: list[Sample]) -> dict[str, float]:
        c = self.config
        self.policy.train()
        prepared, adv_stats = compute_advantages(self.policy, samples, c)
        stats: dict[str, float] = dict(adv_stats)
        for role in self.roles:
            idx = [i for i, s in enumerate(samples) if s.role == role]
            role_stats = update_role(self.policy, self.optimizers[role], role, samples, prepared, idx, c)
            stats.update({f"{k}/{role}": v for k, v in role_stats.items()})
        self.policy.on_update()  # a sampler with its own copy of the weights (served, engine) syncs here
        return stats

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "episodes_seen": self.episodes_seen,
            "optimizers": {r: o.state_dict() for r, o in self.optimizers.items()},
            "config": self.config.to_dict(),
        }

    def save(self) -> Path | None:
        if not dist.is_main():
            return None
        return save_checkpoint(self.out_dir / "checkpoints", self.step, self.policy, self._state())

    def resume(self, path: Path | None = None) -> bool:
        """Load the given checkpoint, or the latest intact one in out_dir; False when out_dir has none.

        A given checkpoint that is missing or damaged is a :class:`~mappa_train.checkpoint.CheckpointError`
        naming the ones there are; without one, damaged newer checkpoints are skipped, reported and deleted
        (the run continues from the last intact one and will write them again).
        """
        if path is not None:
            path = check_checkpoint(Path(path))
        else:
            root = self.out_dir / "checkpoints"
            old = [p.name for p in list_checkpoints(root) if is_old_format(p)]
            if old:  # not damage: another run's history, never deleted here
                raise CheckpointError(
                    f"{root} holds checkpoints of an older mappa ({', '.join(old)}: trainer.pt, a pickle, which "
                    "can run code when loaded and is no longer read). They cannot be resumed: start a new run "
                    "in a new out_dir, or pass --overwrite to replace this one"
                )
            damaged: list[Path] = []

            def report(bad: Path, why: str) -> None:
                damaged.append(bad)
                print(f"checkpoint {bad} is damaged ({why}); skipping it", file=sys.stderr)

            path = latest_checkpoint(root, report=report if dist.is_main() else None)
            if damaged:  # only the main process reports and removes
                where = (
                    f"resuming from {path.name}" if path else "no intact checkpoint is left: starting over"
                )
                print(f"{where}; removing the damaged ones", file=sys.stderr)
                for bad in damaged:
                    remove_checkpoint(bad)
            if path is None:
                return False
        state = load_trainer_state(path)
        self.policy.load(path / "policy")
        for role, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][role])
        self.step = int(state["step"])
        self.episodes_seen = int(state["episodes_seen"])
        set_rng_state(state["rng"])
        return True

    def _finished(self) -> dict[str, Any]:
        """What ``fit`` returns for a resumed run that has no steps left: its logged numbers, nothing re-run."""
        rows = read_metrics(self.out_dir / "metrics.jsonl")
        evals = [r for r in rows if "eval/success_rate" in r]
        history: dict[str, Any] = {"finished": True, "step": self.step}
        before = [r for r in evals if r["step"] == 0]
        if before:
            history["before"] = {k: v for k, v in before[-1].items() if k.startswith("eval/")}
        if evals and evals[-1]["step"] > 0:
            history["after"] = {k: v for k, v in evals[-1].items() if k.startswith("eval/")}
        if (self.out_dir / "curves.png").exists():
            history["plot"] = str(self.out_dir / "curves.png")
        return history

    # -- loop ----------------------------------------------------------------------------------------------------
    def fit(self, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
        """Train to ``config.steps``. A fresh run needs an unused out_dir (or ``overwrite``, which clears it);
        ``resume`` continues the run in out_dir from its last intact checkpoint, with the config it began with."""
        c = self.config
        if dist.is_main():
            claim(self.out_dir, c.to_dict(), resume=resume, overwrite=overwrite)
        dist.barrier()
        if c.old_logprobs == "sampler" and c.steps > 0 and dist.is_main():  # only updates are affected
            warnings.warn(SAMPLER_NOISE_WARNING, stacklevel=2)
        resumed = self.resume() if resume else False
        if resume and not resumed and dist.is_main():
            print(
                f"no checkpoint in {self.out_dir / 'checkpoints'}: starting the run from step 0",
                file=sys.stderr,
            )
        if resumed and self.step >= c.steps:
            self.close()
            return self._finished()
        logger = (
            RunLogger(self.out_dir, resume_step=self.step if resumed else None) if dist.is_main() else None
        )
        if logger is not None:
            atomic_write_text(self.out_dir / "config.json", json.dumps(c.to_dict(), indent=2))
        history: dict[str, Any] = {}
        try:
            if not resumed and (c.eval_at_start or c.steps == 0):
                metrics, episodes = self.evaluate()
                history["before"] = metrics
                if logger:
                    logger.log(0, {**metrics, "episodes_seen": 0})
                    logger.transcripts(0, "eval", episodes)
            bar = tqdm(
                range(self.step, c.steps),
                desc="train",
                unit="step",
                disable=not c.progress,
                initial=self.step,
                total=c.steps,
            )
            for step in bar:
                started = time.time()
                episodes = self.rollout(step)
                samples = episodes_to_samples(episodes)
                rollout_s = time.time() - started
                stats = self.update(samples)
                self.step = step + 1
                self.episodes_seen += c.episodes_per_step
                metrics = {**episode_metrics("train", episodes), **stats}
                for role in self.roles:
                    rs = [s.reward for s in samples if s.role == role]
                    metrics[f"reward/{role}"] = float(np.mean(rs)) if rs else math.nan
                metrics.update(
                    {
                        "episodes_seen": self.episodes_seen,
                        "time/rollout_s": rollout_s,
                        "time/step_s": time.time() - started,
                    }
                )
                last = self.step == c.steps
                if last or (c.eval_every and self.step % c.eval_every == 0):
                    eval_metrics, eval_eps = self.evaluate()
                    metrics.update(eval_metrics)
                    if logger:
                        logger.transcripts(self.step, "eval", eval_eps)
                if logger:
                    logger.log(self.step, metrics)
                    logger.transcripts(self.step, "train", episodes)
                bar.set_postfix(success=f"{metrics.get('train/success_rate', 0):.2f}")
                if last or (c.checkpoint_every and self.step % c.checkpoint_every == 0):
                    self.save()
                history["after"] = {k: v for k, v in metrics.items() if k.startswith("eval/")} or history.get(
                    "after"
                )
            if logger:
                from mappa_train.plots import plot_run

                history["plot"] = str(plot_run(self.out_dir))
        finally:
            if logger:
                logger.close()
            self.close()
        return history
