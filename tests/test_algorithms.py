"""Advantage estimators and policy losses against numbers computed by hand in the comments."""

from __future__ import annotations

import math

import pytest
import torch

from mappa_train.algorithms import (
    ESTIMATORS,
    EstimatorBatch,
    EstimatorSettings,
    discounted_returns,
    entropy_from_logits,
    get_estimator,
    group_baseline_advantages,
    group_centered_rewards,
    kl_penalty,
    last_token_index,
    loss_mask,
    masked_mean,
    masked_var,
    masked_whiten,
    normalize_advantages,
    policy_loss,
    register_estimator,
    reinforce_pp_advantages,
    token_rewards,
)


def close(actual: torch.Tensor, expected, atol: float = 1e-6) -> None:
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=actual.dtype), atol=atol, rtol=0)


# Two actions: row 0 has 3 completion tokens, row 1 has 2 (its third column is padding).
LOGP = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, -9.0]])
REF = torch.tensor([[-1.5, -2.0, -0.7], [-0.1, -1.0, -3.0]])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
REWARDS = torch.tensor([1.0, -0.5])
BETA = 0.1


# ---------------------------------------------------------------- masked reductions


def test_masked_mean_var_whiten():
    x = torch.tensor([[1.0, 2.0, 3.0], [5.0, 100.0, 100.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    close(masked_mean(x, m), (1 + 2 + 5) / 3)  # 8/3: the 100s and the 3 are masked
    close(masked_mean(x, m, dim=1), [1.5, 5.0])
    # mean 8/3; deviations -5/3, -2/3, 7/3; squares 25/9 + 4/9 + 49/9 = 78/9; /3 = 26/9
    close(masked_var(x, m), 26 / 9)
    close(masked_var(x, m, unbiased=True), 78 / 9 / 2)
    s = math.sqrt(26 / 9)
    close(
        masked_whiten(x, m), [[(1 - 8 / 3) / s, (2 - 8 / 3) / s, 0.0], [(5 - 8 / 3) / s, 0.0, 0.0]], atol=1e-5
    )
    assert masked_mean(x, torch.zeros_like(m)).item() == 0.0  # empty mask: 0, not NaN
    close(masked_whiten(torch.full((2, 2), 0.7), torch.ones(2, 2)), torch.zeros(2, 2), atol=1e-3)


def test_entropy_from_logits():
    close(entropy_from_logits(torch.zeros(2, 4)), [math.log(4)] * 2)  # uniform over 4
    close(entropy_from_logits(torch.tensor([[50.0, 0.0, 0.0]])), [0.0], atol=1e-5)  # near one-hot
    z = torch.randn(3, 7)
    p = torch.softmax(z, -1)
    close(entropy_from_logits(z), -(p * p.log()).sum(-1), atol=1e-5)


# ---------------------------------------------------------------- KL, token rewards, returns


def test_kl_estimators_by_hand():
    # d = logp - ref = [[0.5, 0.0, 0.2], [-0.2, -0.2, (padding)]]
    close(kl_penalty(LOGP, REF, MASK, "k1"), [[0.5, 0.0, 0.2], [-0.2, -0.2, 0.0]])
    # k2 = d^2 / 2
    close(kl_penalty(LOGP, REF, MASK, "k2"), [[0.125, 0.0, 0.02], [0.02, 0.02, 0.0]])
    # k3 = exp(-d) - 1 + d: d=0.5 -> 0.60653066 - 0.5 = 0.10653066; d=0.2 -> 0.81873075 - 0.8 = 0.01873075;
    # d=-0.2 -> 1.22140276 - 1.2 = 0.02140276
    close(
        kl_penalty(LOGP, REF, MASK, "k3"),
        [[0.10653066, 0.0, 0.01873075], [0.02140276, 0.02140276, 0.0]],
    )
    with pytest.raises(ValueError):
        kl_penalty(LOGP, REF, MASK, "k4")


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
def test_kl_is_zero_when_policy_equals_reference(kind):
    logp = torch.randn(4, 6)
    assert torch.equal(kl_penalty(logp, logp.clone(), torch.ones(4, 6), kind), torch.zeros(4, 6))


def test_token_rewards_by_hand():
    kl = kl_penalty(LOGP, REF, MASK)
    # row 0: -0.1 * [0.5, 0, 0.2] = [-0.05, 0, -0.02]; reward +1 on its last token (t=2) -> [-0.05, 0, 0.98]
    # row 1: -0.1 * [-0.2, -0.2] = [0.02, 0.02]; reward -0.5 on its last token (t=1) -> [0.02, -0.48, 0]
    close(token_rewards(REWARDS, MASK, kl, BETA), [[-0.05, 0.0, 0.98], [0.02, -0.48, 0.0]])
    # beta = 0: the reward alone, on the last token
    close(token_rewards(REWARDS, MASK, kl, 0.0), [[0.0, 0.0, 1.0], [0.0, -0.5, 0.0]])


def test_last_token_and_empty_action():
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    assert last_token_index(mask).tolist() == [2, 1, 2]
    out = token_rewards(torch.tensor([1.0, 2.0, 3.0]), mask, torch.zeros(3, 3), 0.1)
    close(out, [[0, 0, 1.0], [0, 2.0, 0], [0, 0, 0]])  # the empty action's reward has no token: dropped


def test_discounted_returns_by_hand():
    r = torch.tensor([[-0.05, 0.0, 0.98], [0.02, -0.48, 0.0]])
    # gamma = 1: reverse cumulative sum. row 0: G2 = 0.98, G1 = 0.98, G0 = 0.93; row 1: G1 = -0.48, G0 = -0.46
    close(discounted_returns(r, MASK), [[0.93, 0.98, 0.98], [-0.46, -0.48, 0.0]])
    # gamma = 0.5. row 0: G2 = 0.98, G1 = 0 + 0.5*0.98 = 0.49, G0 = -0.05 + 0.5*0.49 = 0.195
    #              row 1: G1 = -0.48, G0 = 0.02 + 0.5*(-0.48) = -0.22
    close(discounted_returns(r, MASK, gamma=0.5), [[0.195, 0.49, 0.98], [-0.22, -0.48, 0.0]])
    # masked rewards are ignored: garbage in the padding column changes nothing
    dirty = r.clone()
    dirty[1, 2] = 123.0
    close(discounted_returns(dirty, MASK, gamma=0.5), [[0.195, 0.49, 0.98], [-0.22, -0.48, 0.0]])


# ---------------------------------------------------------------- normalisation


# returns (gamma = 1) of the example: [[0.93, 0.98, 0.98], [-0.46, -0.48, -]]
RETURNS = torch.tensor([[0.93, 0.98, 0.98], [-0.46, -0.48, 0.0]])
# across roles, over the 5 tokens: sum = 2.89 - 0.94 = 1.95, mean = 0.39
# deviations 0.54, 0.59, 0.59, -0.85, -0.87; squares 0.2916 + 0.3481 + 0.3481 + 0.7225 + 0.7569 = 2.4672
# population variance 2.4672 / 5 = 0.49344
SD_ALL = math.sqrt(0.49344)
ACROSS = [[0.54 / SD_ALL, 0.59 / SD_ALL, 0.59 / SD_ALL], [-0.85 / SD_ALL, -0.87 / SD_ALL, 0.0]]
# per role (one row each): row 0 mean 2.89/3; deviations -1/30, 1/60, 1/60; variance (1/900 + 2/3600)/3 = 1/1800
#   -> (-1/30, 1/60, 1/60) * sqrt(1800) = (-sqrt 2, 1/sqrt 2, 1/sqrt 2)
# row 1 mean -0.47; deviations 0.01, -0.01; variance 1e-4 -> (1, -1)
PER_ROLE = [[-math.sqrt(2), 1 / math.sqrt(2), 1 / math.sqrt(2)], [1.0, -1.0, 0.0]]


def test_normalize_across_roles_is_token_level():
    close(normalize_advantages(RETURNS, MASK), ACROSS, atol=1e-5)
    a = normalize_advantages(RETURNS, MASK)
    assert abs(masked_mean(a, MASK).item()) < 1e-6  # the tokens the loss sees are centred
    close(
        normalize_advantages(RETURNS, MASK, std_norm=False), [[0.54, 0.59, 0.59], [-0.85, -0.87, 0.0]], 1e-5
    )


def test_normalize_per_role():
    close(normalize_advantages(RETURNS, MASK, groups=["solver", "coder"]), PER_ROLE, atol=1e-4)
    # grouping is by key, not by adjacency: rows 0 and 2 share role "x"
    ret = torch.tensor([[1.0, 2.0], [10.0, 10.0], [3.0, 4.0]])
    out = normalize_advantages(ret, torch.ones(3, 2), groups=["x", "y", "x"])
    # x: tokens 1, 2, 3, 4 -> mean 2.5, variance (2.25 + 0.25 + 0.25 + 2.25)/4 = 1.25; y: constant -> 0
    s = math.sqrt(1.25)
    close(out, [[-1.5 / s, -0.5 / s], [0.0, 0.0], [0.5 / s, 1.5 / s]], atol=1e-5)
    with pytest.raises(ValueError):
        normalize_advantages(ret, torch.ones(3, 2), groups=["x", "y"])


def test_std_floor_keeps_small_deviations_small():
    # row 0: deviations (-1/30, 1/60, 1/60), sigma 0.0236 < 0.1 -> divided by 0.1; row 1: +-0.01 / 0.1
    floored = normalize_advantages(RETURNS, MASK, groups=["solver", "coder"], std_floor=0.1)
    close(floored, [[-1 / 3, 1 / 6, 1 / 6], [0.1, -0.1, 0.0]], atol=1e-5)
    # a floor below sigma changes nothing
    close(
        normalize_advantages(RETURNS, MASK, groups=["solver", "coder"], std_floor=0.001), PER_ROLE, atol=1e-4
    )


def test_equal_rewards_give_whitened_kl_noise_unless_floored():
    """Every action of the role scored the same: only the KL shaping differs between tokens."""
    torch.manual_seed(0)
    mask = torch.ones(8, 16)
    logp = torch.randn(8, 16) * 0.05 - 2.0
    ref = logp + torch.randn(8, 16) * 0.05  # a policy a little away from the reference
    rewards = torch.full((8,), 0.1)
    plain = reinforce_pp_advantages(rewards, mask, logp, ref, ["verifier"] * 8, beta=0.01)
    floored = reinforce_pp_advantages(rewards, mask, logp, ref, ["verifier"] * 8, beta=0.01, std_floor=0.05)
    assert plain.advantages.std() > 0.9  # unit-size advantages out of ~1e-3 differences in return
    assert floored.advantages.abs().max() < 0.1


def test_equal_returns_give_exactly_zero_advantages():
    """A role whose returns are all equal (every action scored 0.1, no KL yet) gets 0, not rounding residue.

    The mean of many 0.1s in float32 is not 0.1; divided by a 0.05 floor, the residue (~1e-9) became advantages
    of ~1e-8 and gradient norms of ~1e-7, which AdamW still turns into a step of a few percent of ``lr``.
    """
    mask = torch.ones(8, 37)
    mask[::3, 20:] = 0  # rows of different lengths, as real replies are
    returns = torch.full((8, 37), 0.1)
    for floor in (0.0, 0.05):
        for groups in (None, ["verifier"] * 8):
            out = normalize_advantages(returns, mask, groups=groups, std_floor=floor)
            assert torch.equal(out, torch.zeros_like(out)), (floor, groups)
    # one role constant, the other not: only the constant one is zeroed
    returns[1::2] = torch.linspace(0.0, 1.0, 37)
    out = normalize_advantages(returns, mask, groups=["a", "b"] * 4, std_floor=0.05)
    assert torch.equal(out[::2], torch.zeros_like(out[::2])) and out[1::2].abs().max() > 0.5
    assert masked_mean(out[1::2], mask[1::2]).abs() < 1e-6


def test_reinforce_pp_composes_the_pieces():
    got = reinforce_pp_advantages(REWARDS, MASK, LOGP, REF, ["solver", "coder"], beta=BETA, per_role=False)
    close(got.kl, [[0.5, 0.0, 0.2], [-0.2, -0.2, 0.0]])
    close(got.token_rewards, [[-0.05, 0.0, 0.98], [0.02, -0.48, 0.0]])
    close(got.returns, RETURNS, atol=1e-6)
    close(got.advantages, ACROSS, atol=1e-5)
    per_role = reinforce_pp_advantages(
        REWARDS, MASK, LOGP, REF, ["solver", "coder"], beta=BETA, per_role=True
    )
    close(per_role.advantages, PER_ROLE, atol=1e-4)
    # gamma = 0.5 returns [[0.195, 0.49, 0.98], [-0.22, -0.48]] -> whitened over the 5 tokens
    half = reinforce_pp_advantages(REWARDS, MASK, LOGP, REF, beta=BETA, gamma=0.5, per_role=False)
    close(half.returns, [[0.195, 0.49, 0.98], [-0.22, -0.48, 0.0]], atol=1e-6)
    # mean = (0.195 + 0.49 + 0.98 - 0.22 - 0.48)/5 = 0.193
    assert abs(masked_mean(half.advantages, MASK).item()) < 1e-6
    close(half.advantages[0, 0] / half.advantages[1, 1], (0.195 - 0.193) / (-0.48 - 0.193), atol=1e-5)
    with pytest.raises(ValueError):
        reinforce_pp_advantages(REWARDS, MASK, LOGP, REF, None, per_role=True)


def test_outcome_rewards_at_zero_success_give_zero_advantages():
    # 0% team success: every outcome is 0; policy == reference (start of training): KL = 0 -> every advantage 0
    outcomes = torch.zeros(2)
    got = reinforce_pp_advantages(outcomes, MASK, LOGP, LOGP.clone(), ["solver", "coder"], beta=0.01)
    assert torch.equal(got.advantages, torch.zeros(2, 3))
    assert torch.equal(reinforce_pp_advantages(outcomes, MASK, per_role=False).advantages, torch.zeros(2, 3))


def test_group_baseline_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, 2.0])
    groups = ["p", "p", "q", "q", "r"]
    # group means: p 0.5, q 0.5, r 2.0 -> centred [0.5, -0.5, 0, 0, 0] (a group of one gets 0)
    close(group_centered_rewards(rewards, groups), [0.5, -0.5, 0.0, 0.0, 0.0])
    # / sample std (Bessel): p sqrt((0.25 + 0.25)/1) = 0.70711 -> +-0.70711; q std 0 -> 0; r -> 0
    close(group_centered_rewards(rewards, groups, std_norm=True), [0.70711, -0.70711, 0, 0, 0], atol=1e-4)
    # a tied group of 0.1s is exactly 0, not rounding residue (which std_norm would blow up by 1e6)
    tied = group_centered_rewards(torch.full((7,), 0.1), ["t"] * 7, std_norm=True)
    assert torch.equal(tied, torch.zeros(7))
    mask = torch.tensor([[1, 1], [1, 0], [1, 1], [0, 0], [1, 1]])
    close(
        group_baseline_advantages(rewards, groups, mask),
        [[0.5, 0.5], [-0.5, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]],
    )


# ---------------------------------------------------------------- policy loss


def test_ppo_clip_above_and_below_one_for_both_signs():
    # four tokens: ratios 1.5, 1.5, 0.5, 0.5 with advantages +1, -1, +1, -1; eps = 0.2 -> clip range [0.8, 1.2]
    ratio = torch.tensor([[1.5, 1.5, 0.5, 0.5]])
    old = torch.zeros(1, 4)
    logp = ratio.log().requires_grad_()
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    loss, stats = policy_loss(logp, old, adv, torch.ones(1, 4))
    # per token -min(ratio*A, clip(ratio)*A):
    #   1.5, +1: min(1.5, 1.2) = 1.2    -> -1.2 (clipped: no more push up)
    #   1.5, -1: min(-1.5, -1.2) = -1.5 -> 1.5  (unclipped: pulled back down)
    #   0.5, +1: min(0.5, 0.8) = 0.5    -> -0.5 (unclipped: pushed back up)
    #   0.5, -1: min(-0.5, -0.8) = -0.8 -> 0.8  (clipped: no more push down)
    # mean over 4 tokens: (-1.2 + 1.5 - 0.5 + 0.8) / 4 = 0.15
    close(loss, 0.15)
    assert stats["clip_frac"] == pytest.approx(0.5)
    assert stats["ratio_mean"] == pytest.approx(1.0)
    assert stats["ratio_max"] == pytest.approx(1.5)
    # approx_kl = mean(ratio - 1 - log ratio) = (2*(0.5 - ln 1.5) + 2*(-0.5 - ln 0.5)) / 4
    assert stats["approx_kl"] == pytest.approx((0.5 - math.log(1.5) - 0.5 - math.log(0.5)) / 2, abs=1e-6)
    loss.backward()
    # d/dlogp of -A*ratio is -A*ratio (unclipped), 0 where clipped; / 4 tokens
    close(logp.grad, [[0.0, 1.5 / 4, -0.5 / 4, 0.0]])
    # inside the range nothing is clipped
    _, stats = policy_loss(
        torch.tensor([[math.log(1.1)]]), torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1)
    )
    assert stats["clip_frac"] == 0.0


def test_asymmetric_clip_high():
    # ratio 1.25 with A = +1: clipped at 1.2 by default, not with clip_eps_high = 0.28
    logp, old, adv, m = (
        torch.tensor([[math.log(1.25)]]),
        torch.zeros(1, 1),
        torch.ones(1, 1),
        torch.ones(1, 1),
    )
    close(policy_loss(logp, old, adv, m)[0], -1.2)
    close(policy_loss(logp, old, adv, m, clip_eps_high=0.28)[0], -1.25)


def test_reinforce_loss_by_hand():
    logp = torch.tensor([[-1.0, -2.0, -7.0]], requires_grad=True)
    adv = torch.tensor([[1.0, -1.0, 5.0]])
    m = torch.tensor([[1, 1, 0]])
    loss, _ = policy_loss(logp, logp.detach(), adv, m, kind="reinforce")
    # -A*logp = [1, -2, (masked)] -> mean over 2 tokens = -0.5
    close(loss, -0.5)
    loss.backward()
    close(logp.grad, [[-0.5, 0.5, 0.0]])  # -A / 2 tokens
    with pytest.raises(ValueError):
        policy_loss(logp, logp, adv, m, kind="dpo")


@pytest.mark.parametrize("kind", ["ppo", "reinforce"])
def test_loss_invariant_to_sharding_with_global_token_count(kind):
    g = torch.Generator().manual_seed(0)
    b, t = 6, 5
    logp = (-torch.rand(b, t, generator=g) * 3).requires_grad_()
    old = logp.detach() + 0.3 * torch.randn(b, t, generator=g)
    adv = torch.randn(b, t, generator=g)
    lengths = torch.tensor([5, 1, 3, 4, 2, 5])
    mask = torch.arange(t)[None, :] < lengths[:, None]
    full, _ = policy_loss(logp, old, adv, mask, kind=kind)
    (grad_full,) = torch.autograd.grad(full, logp)
    n = mask.sum()
    shards = [slice(0, 2), slice(2, 3), slice(3, 6)]
    parts = [policy_loss(logp[s], old[s], adv[s], mask[s], kind=kind, num_tokens=n)[0] for s in shards]
    total = sum(parts)
    (grad_sharded,) = torch.autograd.grad(total, logp)
    close(total, full.item(), atol=1e-6)
    close(grad_sharded, grad_full, atol=1e-7)
    # a per-shard mean (the default count) is NOT the same loss: long and short shards weigh alike
    local = sum(policy_loss(logp[s], old[s], adv[s], mask[s], kind=kind)[0] for s in shards) / len(shards)
    assert abs(local.item() - full.item()) > 1e-4


def test_truncated_rows_get_zero_loss_weight():
    completion_mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    truncated = torch.tensor([False, True, False])
    lm = loss_mask(completion_mask, truncated)
    assert lm.tolist() == [[True, True, True], [False, False, False], [True, False, False]]
    close(loss_mask(completion_mask.float(), truncated), [[1, 1, 1], [0, 0, 0], [1, 0, 0]])
    logp = torch.randn(3, 3, requires_grad=True)
    adv = torch.tensor([[1.0, 2.0, 3.0], [100.0, 100.0, 0.0], [-1.0, 0.0, 0.0]])
    loss, stats = policy_loss(logp, logp.detach(), adv, lm)
    # ratio = 1 everywhere, so per token -A; the truncated row's 100s are ignored: (-1 - 2 - 3 + 1) / 4 = -1.25
    close(loss, -1.25)
    assert stats["tokens"] == 4
    loss.backward()
    assert torch.equal(logp.grad[1], torch.zeros(3))


# ---------------------------------------------------------------- estimator registry


def test_registry_names_the_estimators_and_refuses_bad_choices_with_the_fix():
    assert {"reinforce_pp", "reinforce_pp_baseline", "grpo"} <= set(ESTIMATORS)
    with pytest.raises(ValueError, match="not a registered estimator.*reinforce_pp"):
        get_estimator("ppo_typo")
    with pytest.raises(ValueError, match="reward: outcome"):
        get_estimator("outcome_only")  # removed: a reward choice, not an estimator
    # an old config's "grpo" (no group_size) fails loudly and names the estimator it used to mean
    with pytest.raises(ValueError, match="group_size >= 2.*reinforce_pp_baseline"):
        get_estimator("grpo", group_size=1, kl_in="loss", kl_beta=0.01)
    with pytest.raises(ValueError, match="kl_in: loss"):
        get_estimator("grpo", group_size=4, kl_in="reward", kl_beta=0.01)
    assert (
        get_estimator("grpo", group_size=4, kl_in="reward", kl_beta=0.0).name == "grpo"
    )  # no KL at all: fine
    with pytest.raises(ValueError, match="already registered"):
        register_estimator("grpo")(lambda batch, settings: None)


def test_a_registered_estimator_is_selectable_by_name():
    @register_estimator("test_constant_one")
    def constant(batch: EstimatorBatch, settings: EstimatorSettings):
        ones = batch.completion_mask.float()
        return reinforce_pp_advantages(batch.rewards, batch.completion_mask, per_role=False)._replace(
            advantages=ones
        )

    try:
        spec = get_estimator("test_constant_one")
        got = spec.fn(EstimatorBatch(REWARDS, MASK), EstimatorSettings())
        close(got.advantages, [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    finally:
        del ESTIMATORS["test_constant_one"]


def test_reinforce_pp_baseline_by_hand():
    # two replies to one task (group "t/solver/0"), one token each, no KL:
    # centred by the group mean 0.5: [+0.5, -0.5]; / Bessel std sqrt(0.5) -> [+0.70711, -0.70711];
    # REINFORCE++ whitening over the role's tokens: mean 0, population var 0.5 -> [+1, -1]
    # a third reply, another task: a group of one -> 0, then whitened with the others (mean 0, var 1/3):
    # [0.70711, -0.70711, 0] / sqrt(1/3) -> [1.22474, -1.22474, 0]
    rewards = torch.tensor([1.0, 0.0, 0.3])
    mask = torch.ones(3, 1, dtype=torch.bool)
    batch = EstimatorBatch(
        rewards, mask, roles=["solver"] * 3, groups=["t/solver/0", "t/solver/0", "u/solver/0"]
    )
    got = get_estimator("reinforce_pp_baseline").fn(batch, EstimatorSettings(beta=0.0))
    close(got.advantages, [[1.22474], [-1.22474], [0.0]], atol=1e-4)
    pair = EstimatorBatch(rewards[:2], mask[:2], roles=["solver"] * 2, groups=["t/solver/0"] * 2)
    close(
        get_estimator("reinforce_pp_baseline").fn(pair, EstimatorSettings(beta=0.0)).advantages,
        [[1.0], [-1.0]],
    )


def test_grpo_normalises_within_each_agents_group_by_hand():
    # solver group (task t, turn 0): rewards 1, 0, 0.5, 0.5 -> mean 0.5, Bessel std sqrt((.25+.25+0+0)/3) = 0.40825
    #   -> advantages +1.22474, -1.22474, 0, 0 on EVERY token of each action (no whitening over tokens)
    # coder group (task t, turn 0): rewards 0.2, 0.2 -> all equal -> exactly 0 (not 0/eps)
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, 0.2, 0.2])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    groups = ["t/solver/0"] * 4 + ["t/coder/0"] * 2
    logp = torch.full((6, 3), -1.0)
    ref = torch.full((6, 3), -1.5)
    batch = EstimatorBatch(rewards, mask, logp, ref, roles=[g.split("/")[1] for g in groups], groups=groups)
    got = get_estimator("grpo", group_size=4, kl_in="loss", kl_beta=0.1).fn(
        batch, EstimatorSettings(beta=0.0)
    )
    a = 1.0 / math.sqrt(0.5 / 3) * 0.5  # 0.5 / 0.40825 = 1.22474
    close(
        got.advantages,
        [[a, a, a], [-a, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]],
        atol=1e-4,
    )
    assert torch.equal(got.advantages[4:], torch.zeros(2, 3))
    # the raw reward sits on each action's last token in `returns` (for logs); the KL is measured, not paid
    close(got.returns[0], [1.0, 1.0, 1.0])
    close(got.kl[0], [0.5, 0.5, 0.5])


# ---------------------------------------------------------------- KL in the loss


def test_policy_loss_with_kl_in_the_loss_by_hand():
    # one row, two tokens, on-policy (ratio 1): policy term -A per token = [-1, +0.5] for A = [1, -0.5]
    # d = logp - ref = [0.5, -0.2]: k3 = exp(-d) - 1 + d = [0.60653 - 1 + 0.5, 1.22140 - 1 - 0.2]
    #                                                  = [0.10653, 0.02140]
    # loss = mean over 2 tokens of (-A + 0.1 * k3) = (-1 + 0.5 + 0.1 * 0.12793) / 2 = -0.24360
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    ref = torch.tensor([[-1.5, -1.8]])
    adv = torch.tensor([[1.0, -0.5]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    loss, stats = policy_loss(logp, logp.detach(), adv, mask, ref_logp=ref, kl_beta=0.1)
    close(loss.detach(), -0.24360, atol=1e-5)
    close(torch.tensor(stats["kl_loss"]), (0.10653 + 0.02140) / 2, atol=1e-5)
    # d(k3)/d(logp) = 1 - exp(-d) = [0.39347, -0.22140]; the policy term's d/dlogp at ratio 1 is -A
    loss.backward()
    close(logp.grad, [[(-1.0 + 0.1 * 0.39347) / 2, (0.5 + 0.1 * -0.22140) / 2]], atol=1e-5)
    # without a reference (kl_in: reward) the loss is the policy term alone
    plain, stats = policy_loss(logp.detach(), logp.detach(), adv, mask)
    close(plain, -0.25)
    assert "kl_loss" not in stats


def test_kl_in_switch_moves_the_kl_from_the_reward_to_the_loss():
    from mappa_train.config import TrainConfig
    from mappa_train.update import estimate, kl_beta_in_loss

    # REWARDS [1, -0.5], LOGP/REF as above, beta 0.1, k1 = LOGP - REF = [[0.5, 0, 0.2], [-0.2, -0.2, pad]]
    batch = EstimatorBatch(REWARDS, MASK, LOGP, REF, roles=["solver", "solver"], groups=["a", "b"])
    in_reward = TrainConfig.from_dict({}, ["kl_beta=0.1", "kl_in=reward", "normalize_per_role=false"])
    in_loss = TrainConfig.from_dict({}, ["kl_beta=0.1", "kl_in=loss", "normalize_per_role=false"])
    shaped = estimate(batch, in_reward).token_rewards
    close(shaped, [[-0.05, 0.0, 1.0 - 0.02], [0.02, -0.5 + 0.02, 0.0]])
    plain = estimate(batch, in_loss)
    close(plain.token_rewards, [[0.0, 0.0, 1.0], [0.0, -0.5, 0.0]])  # no KL in the reward ...
    close(plain.kl, [[0.5, 0.0, 0.2], [-0.2, -0.2, 0.0]])  # ... still measured for the logs
    assert kl_beta_in_loss(in_loss) == 0.1 and kl_beta_in_loss(in_reward) == 0.0  # ... and paid in the loss
