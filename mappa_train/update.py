"""One policy update from a batch of samples: log-probs → advantages over the whole batch → per-role steps.

The estimator is the one registered under ``config.algorithm`` (:func:`mappa_train.algorithms.get_estimator`);
``config.kl_in`` puts the ``kl_beta`` KL term in the estimator's reward or in the loss of :func:`update_role`.

Advantages are computed once over the *whole* rollout batch (all roles), because REINFORCE++ normalises over the
global batch — per role or across roles (``config.normalize_per_role``). Then each role's adapter is updated on its
own samples with its own optimiser: separate weights per agent. Under ``accelerate launch`` the advantage
statistics are the local batch's and the gradients are summed across processes with the global token count
(see :mod:`mappa_train.distributed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mappa_train import distributed as dist
from mappa_train.algorithms import (
    Advantages,
    EstimatorBatch,
    EstimatorSettings,
    get_estimator,
    loss_mask,
    masked_mean,
    policy_loss,
)
from mappa_train.logprobs import batch_logprobs, completion_logprobs, pack_samples
from mappa_train.types import Sample

LOGPROB_CHUNK = 512


@dataclass
class Prepared:
    """Per-sample tensors the update needs: old (pre-update) and reference log-probs, advantages."""

    old_logp: list[torch.Tensor]
    ref_logp: list[torch.Tensor]
    advantages: list[torch.Tensor]


def _temperature(config: Any) -> float:
    """Log-probs are taken under the sampling distribution (logits / temperature), as the rollouts drew from it."""
    return config.temperature if config.temperature > 0 else 1.0


def _micro_batches(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def _pad(rows: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.nn.utils.rnn.pad_sequence(list(rows), batch_first=True)


def _score(model: Any, samples: Sequence[Sample], pad_id: int, device: torch.device, **kw: Any):
    batch = pack_samples(samples, pad_id, device=device)
    return batch, batch_logprobs(model, batch, chunk_size=LOGPROB_CHUNK, **kw)


@torch.no_grad()
def _logprobs_by_role(
    policy: Any, samples: Sequence[Sample], micro: int, reference: bool, temperature: float
) -> list[torch.Tensor]:
    """Per-sample log-prob rows under each sample's role (or the reference), no grad."""
    out: list[torch.Tensor | None] = [None] * len(samples)
    pad_id = policy.pad_id
    roles = sorted({s.role for s in samples})
    for role in roles:
        idx = [i for i, s in enumerate(samples) if s.role == role]
        context = policy.reference() if reference else policy.forward_role(role)
        with context as model:
            for chunk in _micro_batches(len(idx), micro):
                rows = [idx[j] for j in chunk]
                batch, logp = _score(
                    model, [samples[i] for i in rows], pad_id, policy.device, temperature=temperature
                )
                for k, i in enumerate(rows):
                    out[i] = logp[k, : int(batch["completion_lengths"][k])].cpu()
    return out  # type: ignore[return-value]


def kl_beta_in_reward(config: Any) -> float:
    """``config.kl_beta`` where the KL term sits in the reward, 0 where it sits in the loss (``kl_in``)."""
    return config.kl_beta if config.kl_in == "reward" else 0.0


def kl_beta_in_loss(config: Any) -> float:
    """``config.kl_beta`` where the KL term sits in the loss, else 0."""
    return config.kl_beta if config.kl_in == "loss" else 0.0


def estimate(batch: EstimatorBatch, config: Any) -> Advantages:
    """The estimator named by ``config.algorithm`` (the registry in :mod:`mappa_train.algorithms`) on ``batch``."""
    spec = get_estimator(
        config.algorithm, group_size=config.group_size, kl_in=config.kl_in, kl_beta=config.kl_beta
    )
    settings = EstimatorSettings(
        beta=kl_beta_in_reward(config),
        gamma=config.gamma,
        per_role=config.normalize_per_role,
        std_floor=config.adv_std_floor,
    )
    return spec.fn(batch, settings)


def compute_advantages(
    policy: Any, samples: Sequence[Sample], config: Any
) -> tuple[Prepared, dict[str, float]]:
    """Reference log-probs for every sample, then the configured advantage estimator over the batch.

    The samples must come from the current weights (on-policy): the old log-probs are recomputed under them, or
    taken from the samples' behaviour log-probs (``config.old_logprobs``).
    """
    temperature = _temperature(config)
    # The behaviour log-probs were taken by the same weights under the same temperature while sampling, but by a
    # different computation (KV cache, left padding): they differ from the scorer's by float noise. Used as the old
    # log-probs, that noise enters the KL reward, and AdamW normalises the resulting ~1e-5 gradients into full-size
    # steps, so a role with constant rewards still moves. Recomputing costs one no-grad forward over the batch.
    behaviour = [torch.tensor(s.behaviour_logprobs, dtype=torch.float32) for s in samples]
    if config.old_logprobs == "recompute":
        old = _logprobs_by_role(policy, samples, config.micro_batch, reference=False, temperature=temperature)
    else:
        old = behaviour
    ref = _logprobs_by_role(policy, samples, config.micro_batch, reference=True, temperature=temperature)
    mask = _pad([torch.ones(len(s.completion_ids), dtype=torch.bool) for s in samples])
    old_t, ref_t = _pad(old), _pad(ref)
    roles = [s.role for s in samples]
    batch = EstimatorBatch(
        rewards=torch.tensor([s.reward for s in samples], dtype=torch.float32),
        completion_mask=mask,
        logp=old_t,
        ref_logp=ref_t,
        roles=roles,
        groups=[s.group for s in samples],
    )
    result = estimate(batch, config)
    lengths = [len(s.completion_ids) for s in samples]
    prepared = Prepared(
        old_logp=old,
        ref_logp=ref,
        advantages=[result.advantages[i, : lengths[i]] for i in range(len(samples))],
    )
    # the sampler/scorer mismatch per token, logged when the old log-probs were recomputed
    gap = (old_t - _pad(behaviour)).abs() if old is not behaviour else None
    stats: dict[str, float] = {}
    for role in sorted(set(roles)):
        rows = torch.tensor([r == role for r in roles])
        m = mask & rows[:, None]
        stats[f"kl/{role}"] = float(masked_mean(result.kl, m))
        stats[f"advantage_mean/{role}"] = float(masked_mean(result.advantages, m))
        stats[f"return_mean/{role}"] = float(masked_mean(result.returns, m))
        if gap is not None:
            stats[f"sampler_gap/{role}"] = float(masked_mean(gap, m))
    return prepared, stats


def correction_targets(
    policy: Any, samples: Sequence[Sample], indices: Sequence[int], config: Any
) -> list[tuple[int, list[int]]]:
    """``(sample index, target ids)`` for the actions of ``indices`` that learn their correction: the sample has
    one and its coach score is below ``config.correction_below``. The correction is tokenised as the role's
    chat template writes a reply (:meth:`~mappa_train.prompting.ChatPrompter.encode_reply`), cut at
    ``config.max_new_tokens`` (the longest reply the sampler can give), and continues the sample's own prompt ids:
    the state the team actually visited (DAgger), not a re-rendered one."""
    if config.correction_weight <= 0:
        return []
    prompter = getattr(policy, "prompter", None)
    if prompter is None or not callable(getattr(prompter, "encode_reply", None)):
        raise TypeError(
            f"correction_weight > 0 needs a policy with a ChatPrompter (policy.prompter); {type(policy).__name__} "
            "has none: set correction_weight: 0"
        )
    out = []
    for i in indices:
        s = samples[i]
        if s.correction is None or s.coach_score is None or s.coach_score >= config.correction_below:
            continue
        ids = prompter.encode_reply(s.correction, max_tokens=config.max_new_tokens)
        if ids:
            out.append((i, ids))
    return out


def sft_loss(
    model: Any,
    prompts: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    pad_id: int,
    num_tokens: float,
) -> torch.Tensor:
    """Token NLL of each target given its prompt, summed over every target token and divided by ``num_tokens``
    (the role's correction tokens in the whole, global batch), so micro-batching and data-parallel sharding do
    not change it: each correction token weighs the same, a long correction weighs more than a short one.
    Log-probs are the model's own (temperature 1): the target is a distribution to match, not a sample."""
    rows = completion_logprobs(model, prompts, targets, pad_id, chunk_size=LOGPROB_CHUNK)
    return -torch.stack([r.sum() for r in rows]).sum() / max(num_tokens, 1.0)


def update_role(
    policy: Any,
    optimizer: torch.optim.Optimizer,
    role: str,
    samples: Sequence[Sample],
    prepared: Prepared,
    indices: Sequence[int],
    config: Any,
) -> dict[str, float]:
    """``config.update_epochs`` passes over ``role``'s samples in micro-batches, one optimiser step per pass.

    The loss is a token-level sum divided by the number of loss tokens of this role in the whole (global) batch,
    so micro-batching and data-parallel sharding do not change it. Truncated actions carry no loss unless
    ``config.mask_truncated`` is off.
    With ``config.kl_in == "loss"`` each token also adds ``kl_beta · k3`` against the reference log-probs of
    ``prepared`` (:func:`~mappa_train.algorithms.policy_loss`), reduced the same way.
    With ``config.correction_weight > 0`` the same optimiser step also takes ``correction_weight ·``
    :func:`sft_loss` over the role's actions that fell short and carry a correction (:func:`correction_targets`);
    ``sft_loss`` (unweighted, per correction token) and ``corrections`` (how many) are logged beside the RL terms.
    With it at 0 nothing of this runs: the update is exactly the RL one.
    """
    if not indices:
        return {}
    rows = [samples[i] for i in indices]
    truncated = torch.tensor([s.truncated for s in rows])
    lengths = torch.tensor([len(s.completion_ids) for s in rows])
    counted = [int(n) for n, t in zip(lengths, truncated, strict=True) if not (t and config.mask_truncated)]
    local_tokens = float(sum(counted))
    global_tokens = float(dist.all_reduce_sum(torch.tensor(local_tokens)))
    params = policy.trainable_parameters(role)
    totals = {"loss": 0.0, "clip_frac": 0.0, "approx_kl": 0.0, "entropy": 0.0, "grad_norm": 0.0}
    micro = _micro_batches(len(rows), config.micro_batch)
    targets = correction_targets(policy, samples, indices, config)
    sft_tokens = float(dist.all_reduce_sum(torch.tensor(float(sum(len(t) for _, t in targets)))))
    if config.correction_weight > 0:
        totals["sft_loss"] = 0.0
        totals["corrections"] = float(len(targets))
    for _ in range(config.update_epochs):
        optimizer.zero_grad(set_to_none=True)
        for chunk in micro:
            part = [rows[j] for j in chunk]
            with policy.forward_role(role) as model:
                batch, (logp, entropy) = _score(
                    model,
                    part,
                    policy.pad_id,
                    policy.device,
                    with_entropy=True,
                    temperature=_temperature(config),
                )
            cmask = batch["completion_mask"]
            lmask = loss_mask(cmask, batch["truncated"]) if config.mask_truncated else cmask
            old = _pad([prepared.old_logp[indices[j]] for j in chunk]).to(logp.device)
            adv = _pad([prepared.advantages[indices[j]] for j in chunk]).to(logp.device)
            beta = kl_beta_in_loss(config)
            ref = _pad([prepared.ref_logp[indices[j]] for j in chunk]).to(logp.device) if beta > 0 else None
            loss, st = policy_loss(
                logp,
                old,
                adv,
                lmask,
                clip_eps=config.clip_eps,
                kind=config.loss,
                num_tokens=max(global_tokens, 1.0),
                ref_logp=ref,
                kl_beta=beta,
            )
            if global_tokens > 0:
                loss.backward()
            weight = len(chunk) / len(rows)
            totals["loss"] += float(loss.detach()) / config.update_epochs
            totals["clip_frac"] += st["clip_frac"] * weight / config.update_epochs
            totals["approx_kl"] += st["approx_kl"] * weight / config.update_epochs
            if "kl_loss" in st:
                totals["kl_loss"] = totals.get("kl_loss", 0.0) + st["kl_loss"] * weight / config.update_epochs
            totals["entropy"] += float(masked_mean(entropy.detach(), cmask)) * weight / config.update_epochs
        for chunk in _micro_batches(len(targets), config.micro_batch):
            part = [targets[j] for j in chunk]
            with policy.forward_role(role) as model:
                nll = sft_loss(
                    model,
                    [samples[i].prompt_ids for i, _ in part],
                    [t for _, t in part],
                    policy.pad_id,
                    sft_tokens,
                )
            (config.correction_weight * nll).backward()
            totals["sft_loss"] += float(nll.detach()) / config.update_epochs
        dist.sum_gradients(params)
        norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        totals["grad_norm"] += float(norm) / config.update_epochs
        optimizer.step()
    totals["samples"] = float(len(rows))
    totals["truncated_frac"] = float(truncated.float().mean())
    return totals
