"""Advantage estimators and policy losses: pure functions over per-token tensors and masks.

Layout. Every per-token tensor is ``[B, T]``: one row per action (one :class:`~mappa_train.types.Sample`), one
column per *completion* token, right-padded (``pack_samples`` in :mod:`mappa_train.logprobs` builds it).
``completion_mask[b, t]`` is 1 where row ``b`` has a real completion token ``t`` and 0 on padding. Per-action
scalars (``rewards``, ``truncated``) are ``[B]``; group keys (roles, prompt groups) are a sequence of ``B`` hashable
values. Masks may be bool or float 0/1; every output is zero wherever the mask is zero.

Which tokens get which reward (REINFORCE++, as OpenRLHF and the MAPPA reference implement it):

1. ``kl_penalty``: per-token KL estimate ``KL_t`` between the behaviour policy and the frozen reference
   (``k1 = log π − log π_ref`` by default).
2. ``token_rewards``: ``r_t = −β·KL_t`` on every completion token, plus the action's scalar reward on its last
   completion token.
3. ``discounted_returns``: ``G_t = r_t + γ·G_{t+1}`` within the action (γ = 1 by default, so
   ``G_t = r − β·Σ_{t'≥t} KL_{t'}``).
4. ``normalize_advantages``: ``A_t = (G_t − μ) / σ`` with μ, σ taken over *all completion tokens of the batch* —
   of each role (``per_role=True``, what the reference does, since each of its agents has its own trainer) or of
   all roles together.
5. ``policy_loss``: PPO-clip (or plain REINFORCE) on ``A_t``, a token-level mean over the global count of
   loss-mask tokens.

Estimators are registered by name (:func:`register_estimator`, looked up by :func:`get_estimator`; the config's
``algorithm`` key picks one): ``reinforce_pp`` (the steps above), ``reinforce_pp_baseline`` (each reward minus its
group's mean, over the group's std, then the steps above: OpenRLHF's REINFORCE++-baseline) and ``grpo`` (per-agent
GRPO: each reward normalised within its group of replies to the same task by the same role at the same turn, one
value for every token of the action; needs ``group_size >= 2`` replies per task). The outcome-only baseline is a
reward choice (the env pays every action the outcome), not an estimator.

KL term: in the reward (``kl_in="reward"``, REINFORCE++: step 2 above) or in the loss (``kl_in="loss"``: ``β·k3``
per token added to the policy loss, as TRL's and OpenRLHF's GRPO do, see :func:`policy_loss`).

Truncated actions (stopped by ``max_new_tokens``) take part in the advantage statistics, like every sampled action,
but get zero weight in the loss: ``loss_mask(completion_mask, truncated)`` zeros their whole row (the reference's
``mask_truncated_completions=True``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch

KLKind = Literal["k1", "k2", "k3"]
LossKind = Literal["ppo", "reinforce"]


# ----------------------------------------------------------------------------------------------------------------
# masked reductions
# ----------------------------------------------------------------------------------------------------------------


def _float_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.to(dtype=like.dtype if like.is_floating_point() else torch.float32, device=like.device)


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``values`` where ``mask`` is 1, over ``dim`` (all elements when ``None``)."""
    mask = _float_mask(mask, values)
    return (values * mask).sum() if dim is None else (values * mask).sum(dim=dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` over the elements where ``mask`` is 1, along ``dim`` (all elements when ``None``).

    Every unmasked element counts once (token-level when ``values`` is ``[B, T]`` and ``dim=None``). An empty
    mask gives 0, not NaN.
    """
    mask = _float_mask(mask, values)
    count = mask.sum() if dim is None else mask.sum(dim=dim)
    return masked_sum(values, mask, dim) / count.clamp(min=1e-8)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    """Variance of ``values`` over all elements where ``mask`` is 1 (population variance unless ``unbiased``)."""
    mask = _float_mask(mask, values)
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        count = mask.sum()
        var = var * count / (count - 1).clamp(min=1e-8)
    return var


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """``(values − μ) / σ`` with μ and σ² the mean and population variance over ALL elements where ``mask`` is 1.

    σ² is floored at ``eps`` (OpenRLHF's ``var.clamp(min=1e-8).rsqrt()``), so a constant input maps to 0 rather
    than NaN. With ``shift_mean=False`` the mean is added back (scale only). Masked elements of the output are 0.
    """
    mask = _float_mask(mask, values)
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    whitened = (values - mean) * var.clamp(min=eps).rsqrt()
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of ``softmax(logits)`` over the last (vocabulary) dimension: ``logsumexp(z) − Σ softmax(z)·z``.

    Computed in float32; output has the shape of ``logits`` without its last dimension. For long sequences use
    :func:`mappa_train.logprobs.token_logprobs` with ``with_entropy=True``, which never holds all logits at once.
    """
    logits = logits.float()
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)


def loss_mask(completion_mask: torch.Tensor, truncated: torch.Tensor) -> torch.Tensor:
    """The completion mask with every token of a truncated action zeroed: truncated rows get zero loss weight.

    ``truncated`` is ``[B]`` bool (the action hit ``max_new_tokens`` instead of ending its turn). Its tokens are
    cut mid-thought, so training on them would reward or punish an unfinished action. Use the result as the
    ``mask`` of :func:`policy_loss` (and for the global token count); advantage statistics keep using the full
    completion mask. Returns the dtype of ``completion_mask``.
    """
    keep = ~truncated.to(device=completion_mask.device, dtype=torch.bool)
    if completion_mask.dtype == torch.bool:
        return completion_mask & keep[:, None]
    return completion_mask * keep[:, None].to(completion_mask.dtype)


# ----------------------------------------------------------------------------------------------------------------
# group keys
# ----------------------------------------------------------------------------------------------------------------


def _group_index(groups: Sequence[Hashable], device: torch.device) -> tuple[torch.Tensor, int]:
    """Map ``B`` group keys to ids ``0..G−1`` (in order of first appearance)."""
    ids: dict[Hashable, int] = {}
    index = [ids.setdefault(key, len(ids)) for key in groups]
    return torch.tensor(index, dtype=torch.long, device=device), len(ids)


# ----------------------------------------------------------------------------------------------------------------
# REINFORCE++ pieces
# ----------------------------------------------------------------------------------------------------------------


def kl_penalty(
    logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, kind: KLKind = "k1"
) -> torch.Tensor:
    """Per-token KL estimate between the policy that sampled the tokens and the reference, ``[B, T]``.

    With ``d = logp − ref_logp`` (log-probs of the sampled tokens; http://joschu.net/blog/kl-approx.html):
    ``k1 = d`` (unbiased, can be negative; what REINFORCE++ and the MAPPA reference fold into the reward),
    ``k2 = d²/2``, ``k3 = exp(−d) − 1 + d`` (both ≥ 0). No reduction: one value per token, 0 where ``mask`` is 0,
    and 0 everywhere when ``logp == ref_logp``. Float32.
    """
    d = logp.float() - ref_logp.float()
    if kind == "k1":
        kl = d
    elif kind == "k2":
        kl = 0.5 * d**2
    elif kind == "k3":
        kl = torch.exp(-d) - 1 + d
    else:
        raise ValueError(f"unknown KL estimator {kind!r}; use 'k1', 'k2' or 'k3'")
    return kl * _float_mask(mask, kl)


def last_token_index(completion_mask: torch.Tensor) -> torch.Tensor:
    """``[B]`` index of each row's last unmasked column (``T−1`` for an all-masked row, whose mask is 0 there)."""
    mask = completion_mask.to(torch.long)
    return mask.size(1) - 1 - mask.flip(dims=[1]).argmax(dim=1)


def token_rewards(
    rewards: torch.Tensor, completion_mask: torch.Tensor, kl: torch.Tensor, beta: float
) -> torch.Tensor:
    """REINFORCE++ per-token reward ``[B, T]``: ``r_t = −β·KL_t + 1[t = last]·r``.

    Every completion token gets ``−beta·kl[b, t]``; the action's scalar ``rewards[b]`` is added on its LAST
    unmasked token only (the end-of-turn token, or the last kept token). Padding gets 0. An action with no
    completion tokens contributes nothing (its reward has no token to sit on). ``beta ≤ 0`` disables the penalty.
    """
    mask = _float_mask(completion_mask, kl)
    beta = max(float(beta), 0.0)
    out = -beta * kl * mask
    last = last_token_index(completion_mask)
    rows = torch.arange(out.size(0), device=out.device)
    out[rows, last] += rewards.to(out) * mask[rows, last]
    return out


def discounted_returns(token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Per-token return within each action: ``G_t = r_t + γ·G_{t+1}``, ``G`` after the last token = 0, ``[B, T]``.

    Rows are independent (one action each; no return flows from one action into the previous one). Masked
    rewards are treated as 0; masked outputs are 0. ``gamma=1`` is a reverse cumulative sum.
    """
    mask = _float_mask(mask, token_rewards)
    rewards = token_rewards * mask
    if gamma == 1.0:
        returns = rewards.flip(dims=[1]).cumsum(dim=1).flip(dims=[1])
    else:
        returns = torch.zeros_like(rewards)
        running = torch.zeros_like(rewards[:, 0])
        for t in reversed(range(rewards.size(1))):
            running = rewards[:, t] + gamma * running
            returns[:, t] = running
    return returns * mask


def normalize_advantages(
    returns: torch.Tensor,
    mask: torch.Tensor,
    groups: Sequence[Hashable] | None = None,
    std_norm: bool = True,
    eps: float = 1e-8,
    std_floor: float = 0.0,
) -> torch.Tensor:
    """REINFORCE++ global batch normalisation: ``A_t = (G_t − μ) / max(σ, std_floor)``, ``[B, T]``.

    μ and σ² are the mean and population variance over ALL unmasked tokens of the batch (token-level, not
    per-sequence: an action of 300 tokens weighs 300 times one of 1 token). With ``groups`` (``B`` keys, e.g. each
    row's role) they are taken over all unmasked tokens of the rows sharing a key, so each role is normalised
    over its own batch; ``None`` pools every row (across roles). σ² is floored at ``eps``; ``std_norm=False``
    only subtracts μ. Masked outputs are 0.

    ``std_floor`` (in return units): when a role's rewards are all equal (a coach giving every verifier action
    the same score, or 0% success under outcome rewards), the returns differ only by the −β·KL shaping, and
    dividing by their tiny σ turns that noise into unit-size advantages — full-size updates in random
    directions (measured in docs/RESULTS.md). With a floor such a batch keeps advantages of its true, small size.
    0 (the default) is REINFORCE++ as published. A group whose returns are exactly equal (constant rewards and no
    KL yet) gets advantages of exactly 0, not the rounding residue of its float mean divided by σ.

    Why token-level: the loss (:func:`policy_loss`) is a mean over tokens, so centring over tokens makes the
    advantages that the loss actually sees sum to zero — the baseline the loss needs — and it is exactly what
    OpenRLHF and the MAPPA reference do. Call this on the whole rollout batch (every rank's samples) before it
    is split into micro-batches; the statistics are of the batch passed in.
    """
    maskf = _float_mask(mask, returns)
    # a row's largest and smallest unmasked return: where they are equal the group is constant and is centred to
    # exactly 0 (the float mean of many 0.1s is not 0.1; that residue, whitened, still moved AdamW)
    row_hi = torch.where(maskf > 0, returns, -math.inf).amax(dim=1)
    row_lo = torch.where(maskf > 0, returns, math.inf).amin(dim=1)
    if groups is None:
        mean = masked_mean(returns, maskf)
        centred = torch.where(row_hi.max() > row_lo.min(), returns - mean, 0.0)
        var = masked_mean(centred**2, maskf)
        scale = var.clamp(min=max(eps, std_floor**2)).rsqrt() if std_norm else torch.ones_like(var)
        return centred * scale * maskf
    if len(groups) != returns.size(0):
        raise ValueError(f"{len(groups)} group keys for {returns.size(0)} rows")
    index, n_groups = _group_index(groups, returns.device)
    row_sum = (returns * maskf).sum(dim=1)
    row_count = maskf.sum(dim=1)
    group_sum = torch.zeros(n_groups, dtype=returns.dtype, device=returns.device).index_add_(
        0, index, row_sum
    )
    group_count = torch.zeros_like(group_sum).index_add_(0, index, row_count)
    group_mean = group_sum / group_count.clamp(min=1e-8)
    varies = _group_varies(row_hi, row_lo, index, n_groups)[index][:, None]
    centred = torch.where(varies, returns - group_mean[index][:, None], 0.0)
    row_sq = (centred**2 * maskf).sum(dim=1)
    group_var = torch.zeros_like(group_sum).index_add_(0, index, row_sq) / group_count.clamp(min=1e-8)
    scale = group_var.clamp(min=max(eps, std_floor**2)).rsqrt() if std_norm else torch.ones_like(group_var)
    return centred * scale[index][:, None] * maskf


def _group_varies(hi: torch.Tensor, lo: torch.Tensor, index: torch.Tensor, n_groups: int) -> torch.Tensor:
    """``[n_groups]`` bool: does the group's largest value (of ``hi``) exceed its smallest (of ``lo``)?

    A group that does not is constant, and is centred to exactly 0 rather than to the rounding residue of its mean.
    """
    top = torch.full((n_groups,), -math.inf, dtype=hi.dtype, device=hi.device).scatter_reduce(
        0, index, hi, "amax"
    )
    bottom = torch.full((n_groups,), math.inf, dtype=lo.dtype, device=lo.device).scatter_reduce(
        0, index, lo, "amin"
    )
    return top > bottom


class Advantages(NamedTuple):
    """What an estimator returns: the advantages and the intermediate tensors (for logs and checks), all [B, T]."""

    advantages: torch.Tensor
    returns: torch.Tensor
    token_rewards: torch.Tensor
    kl: torch.Tensor


def reinforce_pp_advantages(
    rewards: torch.Tensor,
    completion_mask: torch.Tensor,
    logp: torch.Tensor | None = None,
    ref_logp: torch.Tensor | None = None,
    roles: Sequence[Hashable] | None = None,
    *,
    beta: float = 0.01,
    gamma: float = 1.0,
    kl_kind: KLKind = "k1",
    per_role: bool = True,
    std_norm: bool = True,
    std_floor: float = 0.0,
) -> Advantages:
    """REINFORCE++ advantages for a batch of actions: KL-shaped token rewards → returns → batch normalisation.

    ``rewards`` ``[B]``: each action's scalar reward (coach score / 10 in MAPPA), put on its last completion
    token. ``logp`` / ``ref_logp`` ``[B, T]``: log-probs of the sampled tokens under the behaviour policy and the
    frozen reference; both ``None`` (or ``beta=0``) means no KL term. Returns ``G_t = Σ_{s≥t} γ^{s−t} r_s`` within
    each action; advantages are the returns whitened over all completion tokens of each role (``per_role=True``,
    ``roles`` required: the reference trains one actor per agent and normalises over that agent's batch) or of
    the whole batch (``per_role=False``). Truncated actions are included here; exclude them from the loss with
    :func:`loss_mask`.
    """
    if logp is None or ref_logp is None:
        kl = torch.zeros_like(completion_mask, dtype=torch.float32)
    else:
        kl = kl_penalty(logp, ref_logp, completion_mask, kind=kl_kind)
    shaped = token_rewards(rewards.float(), completion_mask, kl, beta)
    returns = discounted_returns(shaped, completion_mask, gamma)
    if per_role and roles is None:
        raise ValueError("per_role=True needs the role of every row")
    advantages = normalize_advantages(
        returns, completion_mask, roles if per_role else None, std_norm=std_norm, std_floor=std_floor
    )
    return Advantages(advantages, returns, shaped, kl)


def group_centered_rewards(
    rewards: torch.Tensor, groups: Sequence[Hashable], std_norm: bool = False, eps: float = 1e-6
) -> torch.Tensor:
    """``[B]``: each reward minus the mean reward of the rows sharing its group key (sequence-level, one value
    per action), divided by the group's sample standard deviation (Bessel-corrected, as GRPO) when ``std_norm``.

    A group of one gets 0. Feeding the result to :func:`reinforce_pp_advantages` gives OpenRLHF's
    ``reinforce_baseline`` (REINFORCE++-baseline: group mean removed, then global token-level whitening).
    """
    if len(groups) != rewards.size(0):
        raise ValueError(f"{len(groups)} group keys for {rewards.size(0)} rows")
    rewards = rewards.float()
    index, n_groups = _group_index(groups, rewards.device)
    count = torch.zeros(n_groups, device=rewards.device).index_add_(0, index, torch.ones_like(rewards))
    mean = torch.zeros(n_groups, device=rewards.device).index_add_(0, index, rewards) / count
    varies = _group_varies(rewards, rewards, index, n_groups)[index]
    centred = torch.where(varies, rewards - mean[index], 0.0)  # a tied group is exactly 0
    if not std_norm:
        return centred
    sq = torch.zeros(n_groups, device=rewards.device).index_add_(0, index, centred**2)
    std = (sq / (count - 1).clamp(min=1)).sqrt()
    return centred / (std[index] + eps)


def group_baseline_advantages(
    rewards: torch.Tensor,
    groups: Sequence[Hashable],
    completion_mask: torch.Tensor,
    std_norm: bool = False,
    eps: float = 1e-6,
) -> torch.Tensor:
    """GRPO-style advantages ``[B, T]``: :func:`group_centered_rewards` broadcast to every completion token.

    ``groups`` ties the rows that answer the same prompt (``Sample.group``). Every completion token of an action
    gets the same value; padding gets 0. No KL term, no discounting, no batch whitening (a KL penalty, if
    wanted, belongs in the loss for this estimator).
    """
    centred = group_centered_rewards(rewards, groups, std_norm=std_norm, eps=eps)
    return centred[:, None] * _float_mask(completion_mask, centred)


# ----------------------------------------------------------------------------------------------------------------
# estimator registry
# ----------------------------------------------------------------------------------------------------------------

KLPlace = Literal["reward", "loss"]


@dataclass(frozen=True)
class EstimatorBatch:
    """An estimator's inputs: per-action ``rewards`` ``[B]``, ``completion_mask`` / ``logp`` (behaviour or
    recomputed old) / ``ref_logp`` ``[B, T]``, and each row's ``roles`` and ``groups`` keys (``Sample.group``)."""

    rewards: torch.Tensor
    completion_mask: torch.Tensor
    logp: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None
    roles: Sequence[Hashable] | None = None
    groups: Sequence[Hashable] | None = None


@dataclass(frozen=True)
class EstimatorSettings:
    """Shared knobs. ``beta`` is the KL coefficient IN THE REWARD (0 when the KL term sits in the loss)."""

    beta: float = 0.01
    gamma: float = 1.0
    kl_kind: KLKind = "k1"
    per_role: bool = True
    std_floor: float = 0.0


Estimator = Callable[[EstimatorBatch, EstimatorSettings], Advantages]


@dataclass(frozen=True)
class EstimatorSpec:
    """A registered estimator and what it needs: ``min_group_size`` replies per task, ``kl_in`` places allowed."""

    name: str
    fn: Estimator
    min_group_size: int = 1
    kl_in: tuple[KLPlace, ...] = ("reward", "loss")


ESTIMATORS: dict[str, EstimatorSpec] = {}

# names that once meant something else: the message says what to write instead
RENAMED = {
    "outcome_only": "algorithm 'outcome_only' was removed: the outcome baseline is a reward choice; use "
    "reward: outcome (the env pays every action the outcome) with algorithm: reinforce_pp",
}


def register_estimator(
    name: str, *, min_group_size: int = 1, kl_in: tuple[KLPlace, ...] = ("reward", "loss")
) -> Callable[[Estimator], Estimator]:
    """Decorator: make ``fn(batch, settings) -> Advantages`` selectable as ``algorithm: name``."""

    def register(fn: Estimator) -> Estimator:
        if name in ESTIMATORS:
            raise ValueError(f"estimator {name!r} is already registered ({ESTIMATORS[name].fn.__qualname__})")
        ESTIMATORS[name] = EstimatorSpec(name, fn, min_group_size, kl_in)
        return fn

    return register


def get_estimator(
    name: str, *, group_size: int = 1, kl_in: KLPlace = "reward", kl_beta: float = 0.0
) -> EstimatorSpec:
    """The estimator registered as ``name``, checked against the run's ``group_size`` and ``kl_in``.

    Raises ``ValueError`` naming the key and the fix: an unknown or removed name, too few replies per task for a
    group estimator, or a KL placement the estimator does not support (only checked when ``kl_beta > 0``).
    """
    if name in RENAMED:
        raise ValueError(RENAMED[name])
    if name not in ESTIMATORS:
        raise ValueError(
            f"algorithm {name!r} is not a registered estimator; choose one of {sorted(ESTIMATORS)}"
        )
    spec = ESTIMATORS[name]
    if group_size < spec.min_group_size:
        hint = ""
        if name == "grpo":
            hint = (
                "; before this version 'grpo' named REINFORCE++-baseline (a group baseline then batch whitening), "
                "which is now 'reinforce_pp_baseline'"
            )
        raise ValueError(
            f"algorithm {name!r} normalises within groups of replies to the same task and needs "
            f"group_size >= {spec.min_group_size} (got {group_size}): set group_size{hint}"
        )
    if kl_beta > 0 and kl_in not in spec.kl_in:
        raise ValueError(
            f"algorithm {name!r} takes its KL term in {' or '.join(spec.kl_in)}, not the {kl_in}: "
            f"set kl_in: {spec.kl_in[0]} (or kl_beta: 0)"
        )
    return spec


@register_estimator("reinforce_pp")
def reinforce_pp(batch: EstimatorBatch, settings: EstimatorSettings) -> Advantages:
    """REINFORCE++: KL-shaped token rewards → returns → whitening per role (:func:`reinforce_pp_advantages`)."""
    return reinforce_pp_advantages(
        batch.rewards,
        batch.completion_mask,
        batch.logp,
        batch.ref_logp,
        batch.roles,
        beta=settings.beta,
        gamma=settings.gamma,
        kl_kind=settings.kl_kind,
        per_role=settings.per_role,
        std_floor=settings.std_floor,
    )


@register_estimator("reinforce_pp_baseline")
def reinforce_pp_baseline(batch: EstimatorBatch, settings: EstimatorSettings) -> Advantages:
    """REINFORCE++-baseline: each reward minus its group's mean, over the group's (Bessel) std
    (:func:`group_centered_rewards`), then REINFORCE++ (KL shaping, returns, whitening per role).

    Groups are ``Sample.group`` (same task, role and turn); with ``group_size: 1`` a group holds only the replies
    that happened to share a task in the batch. This is what ``algorithm: grpo`` computed before the real GRPO.
    """
    if batch.groups is None:
        raise ValueError("reinforce_pp_baseline needs the group key of every row")
    centred = group_centered_rewards(batch.rewards, batch.groups, std_norm=True)
    return reinforce_pp(EstimatorBatch(centred, *_rest(batch)), settings)


@register_estimator("grpo", min_group_size=2, kl_in=("loss",))
def grpo(batch: EstimatorBatch, settings: EstimatorSettings) -> Advantages:
    """Per-agent GRPO: ``A = (r − mean_g) / (std_g + 1e-6)`` on every completion token of the action.

    ``g`` is the row's group: the replies to the same task by the same role at the same turn (``Sample.group``;
    the trainer plays each task ``group_size`` times per step). Mean and sample std (Bessel) are over the group's
    ACTIONS, one value per action, not over tokens; a group whose rewards are all equal gets exactly 0. For a
    role's first turn the prompts of a group are identical (GRPO proper); at later turns they differ by what
    teammates said (the per-agent, per-turn grouping of AT-GRPO). No discounting, no batch whitening; the KL
    term belongs in the loss (``kl_in: loss``). ``returns`` (for the logs): the action's reward at every
    token (γ = 1, no KL).
    """
    if batch.groups is None:
        raise ValueError("grpo needs the group key of every row")
    mask = batch.completion_mask
    advantages = group_baseline_advantages(batch.rewards, batch.groups, mask, std_norm=True)
    if batch.logp is None or batch.ref_logp is None:
        kl = torch.zeros_like(mask, dtype=torch.float32)
    else:
        kl = kl_penalty(batch.logp, batch.ref_logp, mask, kind=settings.kl_kind)
    rewards_on_last = token_rewards(batch.rewards.float(), mask, torch.zeros_like(kl), 0.0)
    returns = discounted_returns(rewards_on_last, mask, 1.0)
    return Advantages(advantages, returns, rewards_on_last, kl)


def _rest(batch: EstimatorBatch) -> tuple:
    return batch.completion_mask, batch.logp, batch.ref_logp, batch.roles, batch.groups


# ----------------------------------------------------------------------------------------------------------------
# policy loss
# ----------------------------------------------------------------------------------------------------------------


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    kind: LossKind = "ppo",
    num_tokens: float | torch.Tensor | None = None,
    ref_logp: torch.Tensor | None = None,
    kl_beta: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Policy-gradient loss: a token-level sum over unmasked tokens divided by ``num_tokens``.

    ``kind="ppo"``: ``ratio = exp(logp − old_logp)``, per token ``−min(ratio·A, clip(ratio, 1−ε, 1+ε_high)·A)``
    (``ε_high`` defaults to ``clip_eps``): a positive advantage stops pushing once ratio > 1+ε_high, a negative
    one once ratio < 1−ε. ``kind="reinforce"``: per token ``−A·logp`` (plain on-policy REINFORCE; ``old_logp``
    only feeds the stats).

    Reduction: ``Σ_{b,t} mask·loss_t / num_tokens``. ``num_tokens`` defaults to ``mask.sum()`` (a mean over this
    batch's unmasked tokens); pass the count of the WHOLE optimiser step (all ranks, all micro-batches) so that
    how the step is sharded does not change it: the shard losses then sum to the full-batch loss. Under DDP, whose
    all-reduce averages gradients over ``W`` ranks, multiply each rank's loss by ``W`` (or pass
    ``num_tokens = global / W``); with gradient accumulation, sum the micro-batch losses, do not average them.
    Use :func:`loss_mask` as ``mask`` so truncated actions get zero weight.

    KL in the loss (``kl_in: loss``): with ``ref_logp`` and ``kl_beta > 0`` every token adds
    ``kl_beta · k3``, ``k3 = exp(ref_logp − logp) − (ref_logp − logp) − 1`` under the CURRENT ``logp`` (so it has
    a gradient), reduced like the policy term — TRL's and OpenRLHF's GRPO KL loss. Stat ``kl_loss``: its mean.

    Stats (detached, means over this batch's unmasked tokens): ``clip_frac`` (share of tokens where the clipped
    term was chosen), ``approx_kl`` (k3 estimate of KL(π_old‖π): ``ratio − 1 − log ratio``), ``ratio_mean``,
    ``ratio_max``, ``tokens``.
    """
    maskf = _float_mask(mask, advantages)
    log_ratio = logp.float() - old_logp.float()
    ratio = torch.exp(log_ratio)
    advantages = advantages.float()
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    surr1 = ratio * advantages
    surr2 = ratio.clamp(1.0 - clip_eps, 1.0 + eps_high) * advantages
    if kind == "ppo":
        per_token = -torch.min(surr1, surr2)
    elif kind == "reinforce":
        per_token = -advantages * logp.float()
    else:
        raise ValueError(f"unknown policy loss {kind!r}; use 'ppo' or 'reinforce'")
    kl_term = None
    if ref_logp is not None and kl_beta > 0:
        kl_term = kl_penalty(logp, ref_logp, maskf, kind="k3")
        per_token = per_token + kl_beta * kl_term
    count = maskf.sum() if num_tokens is None else torch.as_tensor(num_tokens, dtype=torch.float32)
    loss = (per_token * maskf).sum() / count.clamp(min=1e-8).to(per_token.device)
    with torch.no_grad():
        clipped = (surr2 < surr1).float()
        stats = {
            "clip_frac": masked_mean(clipped, maskf).item(),
            "approx_kl": masked_mean(ratio - 1 - log_ratio, maskf).item(),
            "ratio_mean": masked_mean(ratio, maskf).item(),
            "ratio_max": (ratio * maskf).max().item() if maskf.any() else 0.0,
            "tokens": maskf.sum().item(),
        }
        if kl_term is not None:
            stats["kl_loss"] = masked_mean(kl_term, maskf).item()
    return loss, stats
