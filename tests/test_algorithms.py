"""Tests for rlengine.algorithms: hand-computed values, edge cases and gradient behaviour."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

import rlengine.algorithms as algorithms
from rlengine.algorithms import (
    ADVANTAGES,
    AGGREGATIONS,
    KL_KINDS,
    KL_PLACEMENTS,
    POLICY_LOSSES,
    PRESETS,
    aggregate_loss,
    apply_preset,
    bapo_adapt_bounds,
    compute_advantages,
    compute_policy_loss,
    entropy_from_logits,
    kl_penalty,
    overlong_reward_penalty,
    sequence_weights,
    tis_weights,
)
from rlengine.algorithms import advantages as advantages_module
from rlengine.algorithms import kl as kl_module
from rlengine.algorithms import losses as losses_module
from rlengine.config import AlgorithmConfig, ConfigError, load_config, to_dict
from rlengine.errors import require_choice

# The loss-specific defaults, written out by hand (the registry's default_clips are checked against this).
LOSS_BOUNDS = {"ppo": (0.2, 0.2), "gspo": (3e-4, 4e-4), "cispo": (1.0, 3.0), "bapo": (0.6, 1.2)}


def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def _loss(name, lp, old, adv, mask, agg="token_mean", **kw):
    low, high = LOSS_BOUNDS[name]
    kw.setdefault("clip_low", low)
    kw.setdefault("clip_high", high)
    return compute_policy_loss(name, lp, old, adv, mask, agg, **kw)


def _grad(name, log_ratios, adv, agg="token_mean", mask=None, **kw):
    """Gradient of the loss w.r.t. logprobs for given per-token log-ratios."""
    old = torch.full_like(log_ratios, -1.0)
    lp = (old + log_ratios).clone().requires_grad_(True)
    mask = torch.ones_like(log_ratios) if mask is None else mask
    loss, metrics = _loss(name, lp, old, adv, mask, agg, **kw)
    loss.backward()
    return loss, lp.grad, metrics


# ----------------------------------------------------------------------------- advantages

R = torch.tensor([1.0, 0.0, 0.0, 2.0, 4.0])
G = torch.tensor([0, 0, 0, 1, 1])


def test_grpo_dr_grpo_rloo_hand_values():
    s0 = math.sqrt(1 / 3)  # unbiased std of [1, 0, 0]
    s1 = math.sqrt(2.0)  # unbiased std of [2, 4]
    grpo = [(2 / 3) / s0, (-1 / 3) / s0, (-1 / 3) / s0, -1 / s1, 1 / s1]
    torch.testing.assert_close(compute_advantages("grpo", R, G, eps=0.0), torch.tensor(grpo))
    torch.testing.assert_close(compute_advantages("grpo", R, G), torch.tensor(grpo), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        compute_advantages("dr_grpo", R, G), torch.tensor([2 / 3, -1 / 3, -1 / 3, -1.0, 1.0])
    )
    torch.testing.assert_close(compute_advantages("rloo", R, G), torch.tensor([1.0, -0.5, -0.5, -2.0, 2.0]))


def test_reinforce_pp_hand_values():
    vals = R.tolist()
    mu, sd = statistics.mean(vals), statistics.stdev(vals)
    expected = torch.tensor([(v - mu) / sd for v in vals])
    torch.testing.assert_close(compute_advantages("reinforce_pp", R, G, eps=0.0), expected)
    centered = [2 / 3, -1 / 3, -1 / 3, -1.0, 1.0]
    mu, sd = statistics.mean(centered), statistics.stdev(centered)
    expected = torch.tensor([(v - mu) / sd for v in centered])
    torch.testing.assert_close(compute_advantages("reinforce_pp_baseline", R, G, eps=0.0), expected)


@pytest.mark.parametrize("name", ADVANTAGES)
def test_group_ids_need_not_be_contiguous(name):
    shuffled_ids = torch.tensor([7, 7, 7, -3, -3])
    torch.testing.assert_close(compute_advantages(name, R, shuffled_ids), compute_advantages(name, R, G))
    perm = torch.tensor([3, 0, 4, 1, 2])
    out = compute_advantages(name, R[perm], G[perm])
    torch.testing.assert_close(out, compute_advantages(name, R, G)[perm])


GROUP_RELATIVE = ("grpo", "dr_grpo", "rloo")
BATCH_WHITENED = ("reinforce_pp", "reinforce_pp_baseline")


def test_advantage_name_groups():
    assert set(GROUP_RELATIVE) | set(BATCH_WHITENED) == set(ADVANTAGES)


@pytest.mark.parametrize("name", GROUP_RELATIVE)
def test_all_equal_group_is_exactly_zero(name):
    rewards = torch.tensor([0.1, 0.1, 0.1, 1.0, 0.0, 0.3, 0.3])
    groups = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    adv = compute_advantages(name, rewards, groups)
    assert _finite(adv)
    assert adv[[0, 1, 2, 5, 6]].eq(0).all()
    assert adv[3] > 0 and adv[4] < 0


def _whiten_by_hand(values, lengths=None):
    """(v - mean) / stdev over the token-expanded list: each value repeated `length` times."""
    lengths = [1] * len(values) if lengths is None else lengths
    tokens = [v for v, n in zip(values, lengths) for _ in range(n)]
    mu, sd = statistics.mean(tokens), statistics.stdev(tokens)
    return torch.tensor([(v - mu) / sd for v in values])


def test_reinforce_pp_does_not_zero_after_whitening():
    # The case: zeroing the all-ones group after whitening gave a batch mean of -0.36.
    rewards = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    adv = compute_advantages("reinforce_pp", rewards, groups, eps=0.0)
    # mean 5/8; unbiased var (5 * 0.375^2 + 3 * 0.625^2) / 7 = 1.875 / 7
    sd = math.sqrt(1.875 / 7)
    torch.testing.assert_close(adv, torch.tensor([0.375 / sd] * 5 + [-0.625 / sd] * 3))
    assert adv[0].item() == pytest.approx(0.724569, rel=1e-5)
    assert adv.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert adv[:4].ne(0).all()
    # Baseline: group 0 centres to 0, group 1 to [0.75, -0.25 x3]; the batch mean is already 0.
    adv = compute_advantages("reinforce_pp_baseline", rewards, groups, eps=0.0)
    sd = math.sqrt((0.75**2 + 3 * 0.25**2) / 7)
    torch.testing.assert_close(adv, torch.tensor([0.0] * 4 + [0.75 / sd] + [-0.25 / sd] * 3))
    assert adv.mean().item() == pytest.approx(0.0, abs=1e-6)


def test_reinforce_pp_token_weighted_whitening():
    rewards, groups, lengths = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0, 0, 1]), [3, 1, 2]
    # Tokens [1, 1, 1, 0, 2, 2]: mean 7/6, unbiased var (3(1/6)^2 + (7/6)^2 + 2(5/6)^2) / 5 = 17/30.
    sd = math.sqrt(17 / 30)
    expected = torch.tensor([(1 - 7 / 6) / sd, (0 - 7 / 6) / sd, (2 - 7 / 6) / sd])
    adv = compute_advantages("reinforce_pp", rewards, groups, eps=0.0, lengths=torch.tensor(lengths))
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(adv, _whiten_by_hand([1.0, 0.0, 2.0], lengths))
    torch.testing.assert_close(adv, torch.tensor([-0.221404, -1.549826, 1.107019]), rtol=1e-5, atol=1e-5)
    # (R - mean) / (std + eps): eps enters the denominator.
    adv_eps = compute_advantages("reinforce_pp", rewards, groups, eps=0.5, lengths=lengths)
    torch.testing.assert_close(adv_eps, torch.tensor([1 - 7 / 6, -7 / 6, 2 - 7 / 6]) / (sd + 0.5))
    # Without lengths every response counts once, which gives different values.
    unweighted = compute_advantages("reinforce_pp", rewards, groups, eps=0.0)
    torch.testing.assert_close(unweighted, _whiten_by_hand([1.0, 0.0, 2.0]))
    assert not torch.allclose(unweighted, adv)
    torch.testing.assert_close(
        compute_advantages("reinforce_pp", rewards, groups, eps=0.0, lengths=[1, 1, 1]), unweighted
    )
    # Baseline: group 0 centres to [0.5, -0.5]; the singleton keeps R = 2; then token whitening.
    adv = compute_advantages("reinforce_pp_baseline", rewards, groups, eps=0.0, lengths=lengths)
    torch.testing.assert_close(adv, _whiten_by_hand([0.5, -0.5, 2.0], lengths))
    # Tokens [.5, .5, .5, -.5, 2, 2]: mean 5/6, var (3(1/3)^2 + (4/3)^2 + 2(7/6)^2) / 5 = 0.7666...
    sd = math.sqrt((3 / 9 + 16 / 9 + 2 * 49 / 36) / 5)
    torch.testing.assert_close(adv, torch.tensor([(0.5 - 5 / 6) / sd, (-0.5 - 5 / 6) / sd, (2 - 5 / 6) / sd]))


@pytest.mark.parametrize("name", GROUP_RELATIVE)
def test_group_relative_estimators_ignore_lengths(name):
    torch.testing.assert_close(
        compute_advantages(name, R, G, lengths=[7, 1, 3, 2, 9]), compute_advantages(name, R, G)
    )


@pytest.mark.parametrize("name", ADVANTAGES)
def test_lengths_validation(name):
    with pytest.raises(ValueError, match="lengths"):
        compute_advantages(name, R, G, lengths=[1, 2, 3])
    with pytest.raises(ValueError, match="lengths"):
        compute_advantages(name, R, G, lengths=[1, 2, -3, 4, 5])


@pytest.mark.parametrize("name", ADVANTAGES)
def test_singleton_groups(name):
    rewards = torch.tensor([1.0, 0.0, 3.0])
    adv = compute_advantages(name, rewards, torch.tensor([0, 0, 1]), eps=0.0)
    assert _finite(adv)
    if name == "reinforce_pp":  # batch baseline: the singleton keeps its whitened value
        torch.testing.assert_close(adv, _whiten_by_hand([1.0, 0.0, 3.0]))
    elif name == "reinforce_pp_baseline":  # no group baseline: the singleton keeps R, as in verl
        torch.testing.assert_close(adv, _whiten_by_hand([0.5, -0.5, 3.0]))
        assert adv[2].item() > 1.0
    else:
        assert adv[2].item() == 0.0
        assert adv[0] > 0 > adv[1]


@pytest.mark.parametrize("name", ADVANTAGES)
@pytest.mark.parametrize(
    "rewards,groups",
    [([0.5], [0]), ([0.7, 0.7, 0.7, 0.7], [0, 0, 1, 1]), ([0.1] * 3, [0, 1, 2]), ([2.0, 2.0], [0, 1])],
)
def test_degenerate_batches_give_zero(name, rewards, groups):
    adv = compute_advantages(name, torch.tensor(rewards), torch.tensor(groups))
    assert adv.dtype == torch.float32 and adv.eq(0).all()
    adv = compute_advantages(name, torch.tensor(rewards), torch.tensor(groups), lengths=[5] * len(rewards))
    assert adv.eq(0).all()


def test_advantage_input_handling():
    assert compute_advantages("grpo", torch.zeros(0), torch.zeros(0, dtype=torch.long)).shape == (0,)
    bf16 = compute_advantages("grpo", R.to(torch.bfloat16), G)
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, compute_advantages("grpo", R, G))
    torch.testing.assert_close(
        compute_advantages("rloo", R.tolist(), G.tolist()), compute_advantages("rloo", R, G)
    )
    with pytest.raises(ValueError, match="grpo, dr_grpo, rloo"):
        compute_advantages("grp", R, G)
    with pytest.raises(ValueError, match="same length"):
        compute_advantages("grpo", R, G[:3])
    with pytest.raises(ValueError, match="NaN"):
        compute_advantages("grpo", torch.tensor([1.0, float("nan")]), torch.tensor([0, 0]))


def test_overlong_reward_penalty():
    lengths = torch.tensor([0, 6, 7, 8, 10, 11])
    torch.testing.assert_close(
        overlong_reward_penalty(lengths, 10, 4), torch.tensor([0.0, 0.0, -0.25, -0.5, -1.0, -1.0])
    )
    torch.testing.assert_close(overlong_reward_penalty([3, 10, 11], 10, 0), torch.tensor([0.0, 0.0, -1.0]))
    torch.testing.assert_close(overlong_reward_penalty([0, 5, 10], 10, 10), torch.tensor([0.0, -0.5, -1.0]))
    with pytest.raises(ValueError, match="overlong_cache"):
        overlong_reward_penalty([1], 10, 11)


# ----------------------------------------------------------------------------- aggregation

LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
AGG_EXPECTED = {
    "token_mean": 10 / 4,
    "seq_mean_token_mean": (2.0 + 4.0) / 2,
    "seq_mean_token_sum": (6.0 + 4.0) / 2,
    "seq_mean_token_sum_norm": 10 / (2 * 3),
}


@pytest.mark.parametrize("agg", AGGREGATIONS)
def test_aggregate_hand_values(agg):
    assert aggregate_loss(LOSS, MASK, agg).item() == pytest.approx(AGG_EXPECTED[agg])
    assert aggregate_loss(LOSS, MASK.bool(), agg).item() == pytest.approx(AGG_EXPECTED[agg])


def test_aggregate_norm_uses_max_response_length():
    assert aggregate_loss(
        LOSS, MASK, "seq_mean_token_sum_norm", max_response_length=5
    ).item() == pytest.approx(1.0)


@pytest.mark.parametrize("agg", AGGREGATIONS)
def test_aggregate_all_masked_row_with_garbage(agg):
    loss = torch.cat([LOSS, torch.tensor([[float("nan"), float("inf"), -float("inf")]])]).requires_grad_(True)
    mask = torch.cat([MASK, torch.zeros(1, 3)])
    out = aggregate_loss(loss, mask, agg)
    expected = 10 / (3 * 3) if agg == "seq_mean_token_sum_norm" else AGG_EXPECTED[agg]
    assert out.item() == pytest.approx(expected)
    out.backward()
    assert _finite(loss.grad) and loss.grad[2].eq(0).all()


@pytest.mark.parametrize("agg", AGGREGATIONS)
@pytest.mark.parametrize("shape", [(2, 3), (2, 0), (0, 3)])
def test_aggregate_empty(agg, shape):
    loss = torch.randn(shape).requires_grad_(True)
    out = aggregate_loss(loss, torch.zeros(shape), agg)
    assert out.item() == 0.0
    out.backward()
    assert _finite(loss.grad)


def test_aggregate_errors():
    with pytest.raises(ValueError, match="token_mean"):
        aggregate_loss(LOSS, MASK, "mean")
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        aggregate_loss(LOSS, MASK[:1], "token_mean")


SEQ_WEIGHTS_EXPECTED = {
    "token_mean": [3.0, 0.0, 2.0, 1.0],
    "seq_mean_token_mean": [1.0, 0.0, 1.0, 1.0],
    "seq_mean_token_sum": [1.0, 0.0, 1.0, 1.0],
    "seq_mean_token_sum_norm": [1.0, 1.0, 1.0, 1.0],
}


@pytest.mark.parametrize("agg", AGGREGATIONS)
def test_sequence_weights_hand_values(agg):
    out = sequence_weights(torch.tensor([3, 0, 2, 1]), agg)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor(SEQ_WEIGHTS_EXPECTED[agg]))
    # The denominator of aggregate_loss is their sum (times L = 3 for the _norm variant).
    numerator = 2.0 + 4.0 if agg == "seq_mean_token_mean" else 10.0  # row means, else the token sum
    denominator = sequence_weights(MASK.sum(-1), agg).sum().item() * (3 if agg.endswith("_norm") else 1)
    assert denominator == {"token_mean": 4, "seq_mean_token_sum_norm": 6}.get(agg, 2)
    assert aggregate_loss(LOSS, MASK, agg).item() == pytest.approx(numerator / denominator)


def test_sequence_weights_unknown_agg():
    with pytest.raises(ValueError, match="token_mean.*did you mean 'token_mean'"):
        sequence_weights(torch.tensor([1, 2]), "token_meen")


@pytest.mark.parametrize("agg", AGGREGATIONS)
def test_micro_batches_weighted_by_sequence_weights_equal_one_batch(agg):
    torch.manual_seed(0)
    counts = torch.tensor([4, 0, 2, 3, 1, 4, 0])
    loss = torch.randn(7, 4)
    mask = (torch.arange(4) < counts.unsqueeze(-1)).to(torch.float32)
    parts = [slice(0, 1), slice(1, 2), slice(2, 5), slice(5, 7)]  # uneven, one all-empty part
    total = aggregate_loss(loss, mask, agg, max_response_length=4)
    all_weight = sequence_weights(counts, agg).sum()
    accumulated = sum(
        aggregate_loss(loss[p], mask[p], agg, max_response_length=4)
        * sequence_weights(counts[p], agg).sum()
        / all_weight
        for p in parts
    )
    assert accumulated.item() == pytest.approx(total.item(), rel=1e-6, abs=1e-7)
    # The weighting matters: a plain mean over micro-batches gives a different value.
    naive = sum(aggregate_loss(loss[p], mask[p], agg, max_response_length=4) for p in parts) / len(parts)
    assert abs(naive.item() - total.item()) > 1e-2


# ----------------------------------------------------------------------------- policy losses

LR = torch.log(torch.tensor([[1.5, 0.5, 1.0]]))  # per-token log ratios


def test_ppo_hand_values():
    loss, _, m = _grad("ppo", LR, torch.tensor([1.0]))
    assert loss.item() == pytest.approx(-(1.2 + 0.5 + 1.0) / 3, abs=1e-6)
    assert m["clipfrac"] == pytest.approx(1 / 3)
    assert m["ratio/mean"] == pytest.approx(1.0, abs=1e-6) and m["ratio/max"] == pytest.approx(1.5)
    kl = sum(r - 1 - math.log(r) for r in (1.5, 0.5, 1.0)) / 3
    assert m["approx_kl"] == pytest.approx(kl, rel=1e-5)
    assert all(isinstance(v, float) for v in m.values())
    loss, _, m = _grad("ppo", LR, torch.tensor([-1.0]))
    assert loss.item() == pytest.approx((1.5 + 0.8 + 1.0) / 3, abs=1e-6)
    assert m["clipfrac"] == pytest.approx(1 / 3)


def test_ppo_asymmetric_clip_and_token_advantages():
    lr = torch.log(torch.tensor([[1.25, 1.25]]))
    loss, grad, m = _grad("ppo", lr, torch.tensor([[1.0, -1.0]]), clip_low=0.2, clip_high=0.28)
    # token 0: A>0, r=1.25 < 1.28 unclipped; token 1: A<0, r=1.25 > 1.2 -> -min(-1.25, -1.2) = 1.25
    assert loss.item() == pytest.approx((-1.25 + 1.25) / 2, abs=1e-6)
    assert grad[0, 0].item() == pytest.approx(-1.25 / 2, rel=1e-5)
    assert grad[0, 1].item() == pytest.approx(1.25 / 2, rel=1e-5)
    assert m["clipfrac"] == 0.0


def test_ppo_gradient_clipping_behaviour():
    # A > 0 and r > 1 + eps: zero gradient; r < 1 - eps: the unclipped side keeps a gradient.
    _, grad, _ = _grad("ppo", LR, torch.tensor([1.0]))
    assert grad[0, 0].item() == 0.0
    assert grad[0, 1].item() == pytest.approx(-0.5 / 3, rel=1e-5)
    assert grad[0, 2].item() == pytest.approx(-1.0 / 3, rel=1e-5)
    # A < 0 and r < 1 - eps: zero gradient; r > 1 + eps keeps its gradient.
    _, grad, _ = _grad("ppo", LR, torch.tensor([-1.0]))
    assert grad[0, 1].item() == 0.0
    assert grad[0, 0].item() == pytest.approx(1.5 / 3, rel=1e-5)


def test_cispo_hand_values_and_every_token_keeps_gradient():
    old = torch.full((1, 3), -1.0)
    lp = (old + LR).clone().requires_grad_(True)
    loss, m = compute_policy_loss(
        "cispo", lp, old, torch.tensor([1.0]), torch.ones(1, 3), "token_mean", clip_low=1.0, clip_high=0.2
    )
    weights = torch.tensor([1.2, 0.5, 1.0])  # min(r, 1.2), no lower bound
    assert loss.item() == pytest.approx(-(weights * lp.detach()[0]).sum().item() / 3, rel=1e-5)
    loss.backward()
    torch.testing.assert_close(lp.grad[0], -weights / 3)
    assert m["clipfrac"] == pytest.approx(1 / 3)
    _, ppo_grad, _ = _grad("ppo", LR, torch.tensor([1.0]))
    assert ppo_grad[0, 0].item() == 0.0 and lp.grad[0, 0].item() != 0.0


def test_cispo_default_caps_is_weight_at_four():
    # Default clip_high 3.0 (Tinker's cispo): weight min(r, 4); clip_low 1.0: no lower bound.
    lr = torch.log(torch.tensor([[5.0, 0.5, 3.5]]))
    loss, grad, m = _grad("cispo", lr, torch.tensor([2.0]))
    torch.testing.assert_close(grad[0], -2.0 * torch.tensor([4.0, 0.5, 3.5]) / 3)
    assert m["clipfrac"] == pytest.approx(1 / 3)


def test_dual_clip():
    lr = torch.log(torch.tensor([[5.0, 2.0]]))
    adv = torch.tensor([-1.0])
    loss, grad, m = _grad("ppo", lr, adv, dual_clip=3.0)
    assert loss.item() == pytest.approx((3.0 + 2.0) / 2, rel=1e-5)  # token 0 capped at c*|A|
    assert grad[0, 0].item() == 0.0 and grad[0, 1].item() == pytest.approx(1.0, rel=1e-5)
    assert m["clipfrac/dual"] == pytest.approx(0.5)
    loss, grad, _ = _grad("ppo", lr, adv)
    assert loss.item() == pytest.approx((5.0 + 2.0) / 2, rel=1e-5)
    assert grad[0, 0].item() == pytest.approx(2.5, rel=1e-5)
    _, grad, _ = _grad("ppo", lr, torch.tensor([1.0]), dual_clip=3.0)  # A > 0: dual clip inactive
    assert grad.eq(0).all()  # both r > 1.2: plain clipping


def test_bapo_uses_ratio_bounds_and_default_dual_clip():
    lr = torch.log(torch.tensor([[1.5, 0.5, 5.0]]))
    adv = torch.tensor([[1.0, -1.0, -1.0]])
    loss, grad, m = _grad("bapo", lr, adv)  # bounds [0.6, 1.2], dual clip 3
    assert loss.item() == pytest.approx((-1.2 + 0.6 + 3.0) / 3, rel=1e-5)
    assert grad.eq(0).all()
    assert m["clipfrac"] == pytest.approx(1.0)
    loss, _, _ = _grad("bapo", lr, adv, clip_low=0.4, clip_high=2.0, dual_clip=10.0)
    assert loss.item() == pytest.approx((-1.5 + 0.5 + 5.0) / 3, rel=1e-5)
    with pytest.raises(ValueError, match="ratio bounds"):
        _grad("bapo", lr, adv, clip_low=0.2, clip_high=0.2)


def test_gspo_clips_on_sequence_ratio():
    # Token ratios e^0.5 and e^-0.5 average to s = 1: not clipped, although each token is far
    # outside [1 - 3e-4, 1 + 4e-4]; each token gets gradient -A * s / 2.
    lr = torch.tensor([[0.5, -0.5]])
    loss, grad, m = _grad("gspo", lr, torch.tensor([1.0]), agg="seq_mean_token_mean")
    assert loss.item() == pytest.approx(-1.0, abs=1e-6)
    torch.testing.assert_close(grad, torch.tensor([[-0.5, -0.5]]))
    assert m["clipfrac"] == 0.0 and m["ratio/max"] == pytest.approx(1.0)
    # Token-level ppo with the same epsilons clips token 0 (A > 0, r > 1 + eps).
    _, ppo_grad, _ = _grad("ppo", lr, torch.tensor([1.0]), clip_low=3e-4, clip_high=4e-4)
    assert ppo_grad[0, 0].item() == 0.0
    # Mean log-ratio 0.2: s = e^0.2 > 1 + 4e-4, so A > 0 is clipped for the whole sequence...
    lr = torch.tensor([[0.1, 0.3]])
    loss, grad, m = _grad("gspo", lr, torch.tensor([1.0]), agg="seq_mean_token_mean")
    assert loss.item() == pytest.approx(-(1 + 4e-4), rel=1e-6)
    assert grad.eq(0).all() and m["clipfrac"] == 1.0
    # ...while A < 0 keeps the gradient s / |y| on every token.
    loss, grad, _ = _grad("gspo", lr, torch.tensor([-1.0]), agg="seq_mean_token_mean")
    torch.testing.assert_close(grad, torch.full((1, 2), math.exp(0.2) / 2))


def _verl_gspo(lp, old, adv, mask, eps_low, eps_high, agg):
    """GSPO as verl computes it: unclamped token log-ratios averaged, log seq ratio clamped at 10."""
    length = mask.sum(-1, keepdim=True).clamp(min=1)
    seq = ((lp - old) * mask).sum(-1, keepdim=True) / length
    log_s = (lp - lp.detach() + seq.detach()).clamp(max=10.0)
    s = torch.exp(log_s)
    a = adv.unsqueeze(-1)
    per_token = torch.maximum(-a * s, -a * s.clamp(1 - eps_low, 1 + eps_high))
    return aggregate_loss(per_token, mask, agg)


@pytest.mark.parametrize("agg", AGGREGATIONS)
def test_gspo_extreme_ratios_match_verl(agg):
    # row 0: token log-ratios 50, -30, 0 average to 20/3 unclamped (clamping tokens to +-20 first
    # would give 0); row 1: mean 30 is clamped to 10 (token 2 is masked); row 2: A > 0, clipped.
    lr = torch.tensor([[50.0, -30.0, 0.0], [40.0, 20.0, 5.0], [25.0, 0.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    adv = torch.tensor([-1.0, -2.0, 0.5])
    loss, grad, m = _grad("gspo", lr, adv, agg, mask)
    old = torch.full_like(lr, -1.0)
    lp = (old + lr).clone().requires_grad_(True)
    ref = _verl_gspo(lp, old, adv, mask, 3e-4, 4e-4, agg)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(grad, lp.grad * mask, rtol=1e-5, atol=1e-6)
    # By hand: per-token losses e^(20/3), 2 e^10 and -0.5 (1 + 4e-4); only row 0 has a gradient
    # (row 1 is past the clamp, row 2 is clipped), each token -A * s_0 times its aggregation weight.
    s0, s1, c2 = math.exp(20 / 3), math.exp(10.0), -0.5 * (1 + 4e-4)
    by_hand = {
        "token_mean": ((3 * s0 + 2 * 2 * s1 + 3 * c2) / 8, s0 / 8),
        "seq_mean_token_mean": ((s0 + 2 * s1 + c2) / 3, s0 / 9),
        "seq_mean_token_sum": ((3 * s0 + 4 * s1 + 3 * c2) / 3, s0 / 3),
        "seq_mean_token_sum_norm": ((3 * s0 + 4 * s1 + 3 * c2) / 9, s0 / 9),
    }
    expected_loss, expected_grad = by_hand[agg]
    assert loss.item() == pytest.approx(expected_loss, rel=1e-5)
    torch.testing.assert_close(grad[0], torch.full((3,), expected_grad), rtol=1e-5, atol=0.0)
    assert grad[1:].eq(0).all()
    assert m["ratio/max"] == pytest.approx(s1, rel=1e-5)
    assert m["clipfrac"] == pytest.approx(3 / 8)


def test_gspo_ignores_masked_tokens_in_sequence_ratio():
    lr = torch.tensor([[0.0, 0.0, 30.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    _, grad, m = _grad("gspo", lr, torch.tensor([1.0]), agg="seq_mean_token_mean", mask=mask)
    torch.testing.assert_close(grad, torch.tensor([[-0.5, -0.5, 0.0]]))
    assert m["ratio/max"] == pytest.approx(1.0)


@pytest.mark.parametrize("name", POLICY_LOSSES)
@pytest.mark.parametrize("agg", AGGREGATIONS)
def test_flipped_advantage_flips_gradient(name, agg):
    lr = torch.tensor([[0.0001, -0.0001, 0.0], [0.0, 0.0001, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv = torch.tensor([0.7, -1.3])
    _, g_pos, _ = _grad(name, lr, adv, agg, mask)
    _, g_neg, _ = _grad(name, lr, -adv, agg, mask)
    assert (g_pos * mask).abs().sum() > 0
    torch.testing.assert_close(g_neg, -g_pos)
    # Minimising the loss raises the logprobs of tokens with A > 0.
    assert (g_pos[0, :3] < 0).all() and (g_pos[1, :2] > 0).all()


@pytest.mark.parametrize("name", POLICY_LOSSES)
@pytest.mark.parametrize("agg", AGGREGATIONS)
def test_all_masked_row_contributes_nothing(name, agg):
    torch.manual_seed(0)
    old = -torch.rand(3, 4) - 0.1
    lp = old + 0.05 * torch.randn(3, 4)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0] * 4, [1.0, 1.0, 0.0, 0.0]])
    adv = torch.tensor([1.0, -2.0, -0.5])
    lp_bad, old_bad, adv_bad = lp.clone(), old.clone(), adv.clone()
    lp_bad[1] = float("nan")
    old_bad[1] = -float("inf")
    lp_bad[0, 3] = float("inf")
    adv_bad[1] = float("nan")
    lp_bad.requires_grad_(True)
    loss, m = _loss(name, lp_bad, old_bad, adv_bad, mask, agg)
    loss.backward()
    assert _finite(loss) and _finite(lp_bad.grad) and all(math.isfinite(v) for v in m.values())
    assert lp_bad.grad[1].eq(0).all() and lp_bad.grad[0, 3].item() == 0.0
    keep = torch.tensor([0, 2])
    ref, _ = _loss(name, lp[keep], old[keep], adv[keep], mask[keep], agg, max_response_length=4)
    if agg == "seq_mean_token_sum_norm":  # constant denominator B * L counts the empty row
        assert loss.item() == pytest.approx(ref.item() * 2 / 3, rel=1e-5, abs=1e-7)
    else:
        assert loss.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("name", POLICY_LOSSES)
@pytest.mark.parametrize("agg", AGGREGATIONS)
@pytest.mark.parametrize("shape", [(2, 3), (2, 0), (1, 1)])
def test_empty_mask_and_zero_length(name, agg, shape):
    lp = torch.randn(shape).requires_grad_(True)
    loss, m = _loss(name, lp, torch.randn(shape), torch.ones(shape[0]), torch.zeros(shape), agg)
    assert loss.item() == 0.0
    loss.backward()
    assert _finite(lp.grad) and lp.grad.eq(0).all()
    assert m["clipfrac"] == 0.0 and m["approx_kl"] == 0.0 and m["ratio/mean"] == 1.0


@pytest.mark.parametrize("name", POLICY_LOSSES)
@pytest.mark.parametrize("agg", AGGREGATIONS)
def test_extreme_ratios_stay_finite(name, agg):
    lr = torch.tensor([[50.0, -50.0, 0.0], [-50.0, 50.0, 1e-3]])
    for adv in (torch.tensor([1.0, -1.0]), torch.tensor([-3.0, 2.0])):
        for dual in (None, 3.0) if name != "cispo" else (None,):
            loss, grad, m = _grad(name, lr, adv, agg, dual_clip=dual)
            assert _finite(loss) and _finite(grad)
            assert all(math.isfinite(v) for v in m.values())


def test_batch_of_one_and_bf16():
    lr = torch.tensor([[0.1, -0.2]])
    loss32, _, m32 = _grad("ppo", lr, torch.tensor([0.5]))
    old = torch.full((1, 2), -1.0)
    lp = (old + lr).to(torch.bfloat16).requires_grad_(True)
    loss16, m16 = compute_policy_loss(
        "ppo",
        lp,
        old.to(torch.bfloat16),
        torch.tensor([0.5], dtype=torch.bfloat16),
        torch.ones(1, 2),
        "token_mean",
    )
    assert loss16.dtype == torch.float32
    assert loss16.item() == pytest.approx(loss32.item(), abs=2e-2)
    loss16.backward()
    assert lp.grad.dtype == torch.bfloat16 and _finite(lp.grad.float())


def test_token_weights_scale_loss_and_are_constants():
    lr = torch.tensor([[0.05, -0.05]])
    base, g_base, _ = _grad("ppo", lr, torch.tensor([1.0]))
    w = torch.full((1, 2), 2.0, requires_grad=True)
    loss, g, _ = _grad("ppo", lr, torch.tensor([1.0]), token_weights=w)
    assert loss.item() == pytest.approx(2 * base.item(), rel=1e-6)
    torch.testing.assert_close(g, 2 * g_base)
    assert w.grad is None


def test_policy_loss_errors():
    lp, mask = torch.zeros(1, 2), torch.ones(1, 2)
    adv = torch.ones(1)
    with pytest.raises(ValueError, match="ppo, gspo, cispo, bapo"):
        compute_policy_loss("grpo", lp, lp, adv, mask, "token_mean")
    with pytest.raises(ValueError, match="seq_mean_token_mean"):
        compute_policy_loss("ppo", lp, lp, adv, mask, "sum")
    with pytest.raises(ValueError, match="advantages"):
        compute_policy_loss("ppo", lp, lp, torch.ones(3), mask, "token_mean")
    with pytest.raises(ValueError, match="dual_clip"):
        compute_policy_loss("ppo", lp, lp, adv, mask, "token_mean", dual_clip=0.5)
    with pytest.raises(ValueError, match="dual_clip"):
        compute_policy_loss("cispo", lp, lp, adv, mask, "token_mean", dual_clip=3.0)
    with pytest.raises(ValueError, match="clip_low"):
        compute_policy_loss("ppo", lp, lp, adv, mask, "token_mean", clip_low=-0.1)


# ----------------------------------------------------------------------------- KL / entropy


def test_kl_hand_values():
    lp, ref = torch.log(torch.tensor([[0.5, 0.3]])), torch.log(torch.tensor([[0.25, 0.3]]))
    ln2 = math.log(2)
    expected = {"k1": ln2, "k2": 0.5 * ln2**2, "k3": 0.5 + ln2 - 1}
    for kind in KL_KINDS:
        out = kl_penalty(lp, ref, kind)
        assert out[0, 0].item() == pytest.approx(expected[kind], rel=1e-5)
        assert out[0, 1].item() == pytest.approx(0.0, abs=1e-7)


def test_kl_k3_clamp_and_extremes():
    # The k3 estimate itself is clamped to [-10, 10] (verl's low_var_kl), not d.
    assert kl_penalty(torch.tensor([[-15.0]]), torch.tensor([[-0.2]]), "k3").item() == 10.0  # was 22015
    lp = torch.tensor([[-60.0, 0.0, -1.0, -1.0, -3.0, 0.0, -2.0]], requires_grad=True)
    ref = torch.tensor([[-10.0, -50.0, -1.0, -0.5, 0.0, -12.0, 0.0]])  # d = 50, -50, 0, .5, 3, -12, 2
    k3 = kl_penalty(lp, ref, "k3")
    e = math.exp
    expected = [10.0, 10.0, 0.0, e(0.5) - 1.5, 10.0, 10.0, e(2) - 3]  # e^3 - 4 = 16.1, e^-12 + 11 = 11.0
    torch.testing.assert_close(k3, torch.tensor([expected]))
    k3.sum().backward()
    # d(k3)/d(lp) = 1 - e^d where not clamped; 0 where the estimate is clamped.
    torch.testing.assert_close(lp.grad, torch.tensor([[0.0, 0.0, 0.0, 1 - e(0.5), 0.0, 0.0, 1 - e(2)]]))
    lp.grad = None
    for kind in KL_KINDS:
        out = kl_penalty(lp, ref, kind)
        out.sum().backward()
        assert _finite(out) and _finite(lp.grad)
        if kind != "k1":
            assert (out >= 0).all()
        lp.grad = None
    assert kl_penalty(lp.to(torch.bfloat16), ref.to(torch.bfloat16), "k2").dtype == torch.float32
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_penalty(lp, ref, "k4")


def test_entropy_from_logits():
    probs = torch.tensor([0.5, 0.25, 0.25])
    assert entropy_from_logits(probs.log()).item() == pytest.approx(1.5 * math.log(2), rel=1e-6)
    assert entropy_from_logits(torch.zeros(4) + 1e4).item() == pytest.approx(math.log(4), rel=1e-6)
    logits = torch.randn(2, 3, 11)
    expected = torch.distributions.Categorical(logits=logits).entropy()
    torch.testing.assert_close(entropy_from_logits(logits), expected, rtol=1e-5, atol=1e-6)
    masked = torch.tensor(
        [[0.0, -float("inf"), -float("inf")], [1.0, 1.0, -float("inf")]], requires_grad=True
    )
    out = entropy_from_logits(masked.to(torch.bfloat16))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([0.0, math.log(2)]))
    entropy_from_logits(masked).sum().backward()
    assert _finite(masked.grad)


# ----------------------------------------------------------------------------- TIS / BAPO


def test_tis_weights():
    rollout = torch.tensor([[-1.0, -2.0, -0.5]])
    old = rollout + torch.log(torch.tensor([[1.5, 3.0, 0.5]]))
    old.requires_grad_(True)
    w = tis_weights(old, rollout, 2.0)
    torch.testing.assert_close(w, torch.tensor([[1.5, 2.0, 0.5]]))
    assert not w.requires_grad and w.dtype == torch.float32
    assert _finite(tis_weights(torch.tensor([[100.0]]), torch.tensor([[-100.0]]), 2.0))
    with pytest.raises(ValueError, match="cap"):
        tis_weights(old, rollout, 0.0)


def test_bapo_adapt_bounds():
    ones = torch.ones(1, 4)
    # Positive-dominated batch: bounds unchanged.
    assert bapo_adapt_bounds(ones, torch.tensor([[1.0, 1.0, 1.0, -1.0]]), ones) == (0.6, 1.2)
    # Negative-dominated with ratios 1: neither bound changes the share, both go to their max.
    low, high = bapo_adapt_bounds(ones, torch.tensor([[1.0, -1.0, -1.0, -1.0]]), ones)
    assert (low, high) == (pytest.approx(0.9), pytest.approx(3.0))  # the official README's maxima
    assert isinstance(low, float) and isinstance(high, float)
    # Positive token with r = 3: c_high widens until min(3, c_high) * 1 >= 1.5 (share 0.5).
    ratios = torch.tensor([[3.0, 1.0, 1.0, 1.0]])
    adv = torch.tensor([[1.0, -1.5, 0.0, 0.0]])
    assert bapo_adapt_bounds(ratios, adv, ones) == (pytest.approx(0.9), pytest.approx(1.5))
    # Masked-out negative tokens are ignored.
    mask = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    assert bapo_adapt_bounds(ratios, adv, mask) == (0.6, 1.2)
    # reduce_fn sees [pos, neg] and its result decides (e.g. global stats from other ranks).
    seen = []

    def add_remote_negative(stats):
        seen.append(stats.clone())
        return stats + torch.tensor([0.0, 100.0])

    assert bapo_adapt_bounds(ratios, adv, mask, reduce_fn=add_remote_negative) == (0.9, 3.0)
    torch.testing.assert_close(seen[0], torch.tensor([1.2, 0.0]))
    with pytest.raises(ValueError):
        bapo_adapt_bounds(ratios, adv, mask, c_low=0.0)


def test_bapo_share_readings_effective_never_balances_unclipped_does():
    """The two readings of BAPO's positive share on a negative-dominated batch, by hand."""
    share = losses_module.bapo_positive_share
    ones = torch.ones(1, 3)
    # Tokens (r, A) = (1.0, +1), (0.5, -1), (0.7, -1), start bounds (0.6, 1.2), target 0.5.
    ratios, adv = torch.tensor([[1.0, 0.5, 0.7]]), torch.tensor([[1.0, -1.0, -1.0]])
    # effective: pos = min(1.0, c_high) = 1, neg = max(0.5, c_low) + max(0.7, c_low).
    # (0.6, 1.2): 1 / (1 + 0.6 + 0.7) = 0.435. Raising c_low only grows neg: at 0.9,
    # 1 / (1 + 0.9 + 0.9) = 0.357; c_high cannot help (r = 1 < 1.2), so both end at their maxima.
    assert share(ratios, adv, ones, 0.6, 1.2) == pytest.approx(1 / 2.3)
    assert share(ratios, adv, ones, 0.9, 3.0) == pytest.approx(1 / 2.8)
    assert bapo_adapt_bounds(ratios, adv, ones) == (pytest.approx(0.9), pytest.approx(3.0))
    assert bapo_adapt_bounds(ratios, adv, ones, share="effective") == (pytest.approx(0.9), pytest.approx(3.0))
    # unclipped: the token with A < 0 and r = 0.5 < c_low = 0.6 is clipped (no gradient) and left out:
    # pos = 1, neg = 0.7, share 1 / 1.7 = 0.588 >= 0.5 already at the start bounds: (0.6, 1.2).
    assert share(ratios, adv, ones, 0.6, 1.2, share="unclipped") == pytest.approx(1 / 1.7)
    assert bapo_adapt_bounds(ratios, adv, ones, share="unclipped") == (0.6, 1.2)

    # Here the search has to move c_low: (1.0, +1), (0.62, -1), (0.72, -1).
    ratios = torch.tensor([[1.0, 0.62, 0.72]])
    # unclipped: (0.6, 1.2) keeps both negatives, 1 / (1 + 0.62 + 0.72) = 0.427 < 0.5; at c_low = 0.65
    # the 0.62 token drops out, 1 / (1 + 0.72) = 0.581: stop at (0.65, 1.2).
    assert share(ratios, adv, ones, 0.6, 1.2, share="unclipped") == pytest.approx(1 / 2.34)
    assert bapo_adapt_bounds(ratios, adv, ones, share="unclipped") == (pytest.approx(0.65), 1.2)
    # A coarser c_low step overshoots: 0.6 + 0.2 = 0.8 drops both negatives (share 1).
    assert bapo_adapt_bounds(ratios, adv, ones, share="unclipped", delta_low=0.2) == (pytest.approx(0.8), 1.2)
    # effective again runs both bounds to their maxima (share 1 / (1 + 0.9 + 0.9) at the end).
    assert bapo_adapt_bounds(ratios, adv, ones) == (pytest.approx(0.9), pytest.approx(3.0))

    # c_high in the unclipped reading: (1.5, +1) is clipped at c_high = 1.2 (pos 0, share 0); c_low
    # cannot help (r = 1 for the negative), then c_high 1.3, 1.4, 1.5 (step 0.1): at 1.5 the token
    # counts, 1.5 / (1.5 + 1) = 0.6. effective already counts min(1.5, 1.2) = 1.2: 1.2 / 2.2 = 0.545.
    ratios, adv, ones = torch.tensor([[1.5, 1.0]]), torch.tensor([[1.0, -1.0]]), torch.ones(1, 2)
    assert share(ratios, adv, ones, 0.6, 1.2, share="unclipped") == 0.0
    assert bapo_adapt_bounds(ratios, adv, ones, share="unclipped") == (pytest.approx(0.9), pytest.approx(1.5))
    assert bapo_adapt_bounds(ratios, adv, ones) == (0.6, 1.2)
    # delta_high sets the c_high step: 1.2 -> 1.45 (0.492) -> 1.7.
    assert bapo_adapt_bounds(ratios, adv, ones, share="unclipped", delta_high=0.25)[1] == pytest.approx(1.7)


def test_bapo_unclipped_share_follows_the_loss_gradient():
    """``unclipped`` counts exactly the tokens the bapo loss gives a gradient, dual clip included;
    ``effective`` counts every token. Masked-out tokens never count; a bad reading is refused."""
    share = losses_module.bapo_positive_share
    # (r, A): (0.4, +1) unclipped for A > 0; (1.1, +1); (2.0, +1) clipped above 1.2; (0.5, -1) clipped
    # below 0.6; (1.5, -1) unclipped for A < 0; (5.0, -1) dual-clipped at c = 3.
    lr = torch.log(torch.tensor([[0.4, 1.1, 2.0, 0.5, 1.5, 5.0]]))
    adv = torch.tensor([[1.0, 1.0, 1.0, -1.0, -1.0, -1.0]])
    _, grad, _ = _grad("bapo", lr, adv)  # bounds [0.6, 1.2], dual clip 3
    assert (grad != 0).tolist() == [[True, True, False, False, True, False]]
    ratios, ones = torch.exp(lr), torch.ones(1, 6)
    # unclipped: pos = 0.4 + 1.1, neg = 1.5; with no dual clip the r = 5 token counts as well.
    assert share(ratios, adv, ones, 0.6, 1.2, share="unclipped", dual_clip=3.0) == pytest.approx(1.5 / 3.0)
    assert share(ratios, adv, ones, 0.6, 1.2, share="unclipped") == pytest.approx(1.5 / 8.0)
    # effective (the dual clip ignored, as in the authors' code): pos = min(r, 1.2) summed = 0.4 + 1.1
    # + 1.2 = 2.7; neg = max(r, 0.6) summed = 0.6 + 1.5 + 5.0 = 7.1.
    assert share(ratios, adv, ones, 0.6, 1.2, dual_clip=3.0) == pytest.approx(2.7 / (2.7 + 7.1))
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0, 0.0]])
    assert share(ratios, adv, mask, 0.6, 1.2, share="unclipped") == 1.0
    assert share(torch.ones(1, 2), torch.zeros(1), torch.ones(1, 2), 0.6, 1.2) == 1.0  # no signal
    assert isinstance(share(ratios, adv, ones, 0.6, 1.2), float)
    with pytest.raises(ValueError, match="effective"):
        share(ratios, adv, ones, 0.6, 1.2, share="clipped")
    with pytest.raises(ValueError, match="unclipped"):
        bapo_adapt_bounds(ratios, adv, ones, share="paper")


def test_bapo_config_fields():
    """Separate steps for the two bounds (the authors' run script: 0.05 and 0.1), the share reading
    (default: the authors' code), and the old single ``bapo_step`` is gone."""
    algo = AlgorithmConfig()
    assert (algo.bapo_step_low, algo.bapo_step_high, algo.bapo_share) == (0.05, 0.1, "effective")
    assert (algo.bapo_max_low, algo.bapo_max_high, algo.bapo_target) == (0.9, 3.0, 0.5)
    assert not hasattr(algo, "bapo_step")
    cfg = load_config(
        None, ["algorithm.loss=bapo", "algorithm.bapo_share=unclipped", "algorithm.bapo_step_high=0.05"]
    )
    assert (cfg.algorithm.bapo_share, cfg.algorithm.bapo_step_high) == ("unclipped", 0.05)
    with pytest.raises(ConfigError, match="bapo_share"):
        load_config(None, ["algorithm.loss=bapo", "algorithm.bapo_share=clipped"])
    with pytest.raises(ConfigError, match="bapo_step"):
        load_config(None, ["algorithm.loss=bapo", "algorithm.bapo_step=0.05"])
    with pytest.raises(ConfigError, match="bapo_step_low"):
        load_config(None, ["algorithm.loss=bapo", "algorithm.bapo_step_low=0"])


def test_cispo_accepts_any_clip_low_from_one_as_no_lower_bound():
    """verl writes CISPO's "no lower truncation" as ``clip_ratio_low: 10`` (a bound of 1 - 10 < 0):
    any clip_low >= 1 is accepted for cispo, gives the lower bound 0 and the loss of clip_low = 1."""
    lr = torch.log(torch.tensor([[0.01, 0.5, 1.0, 6.0]]))
    adv = torch.tensor([[1.0, -1.0, 1.0, -2.0]])
    loss_1, grad_1, m_1 = _grad("cispo", lr, adv, clip_low=1.0)
    for clip_low in (1.5, 10.0, 100.0):
        loss, grad, m = _grad("cispo", lr, adv, clip_low=clip_low)
        torch.testing.assert_close(loss, loss_1)
        torch.testing.assert_close(grad, grad_1)
        assert m == m_1
        assert POLICY_LOSSES["cispo"].bounds(clip_low, 3.0, None) == (0.0, 4.0, None)
    assert m_1["clipfrac"] == pytest.approx(0.25)  # only r = 6 > 4 is clipped; nothing from below
    cfg = load_config(None, ["algorithm.loss=cispo", "algorithm.clip_low=10"])
    assert (cfg.algorithm.clip_low, cfg.algorithm.clip_high) == (10.0, 3.0)
    cfg = load_config(None, ["algorithm.preset=cispo", "algorithm.clip_low=10", "algorithm.clip_high=0.2"])
    assert (cfg.algorithm.loss, cfg.algorithm.clip_low) == ("cispo", 10.0)
    # the epsilon losses that clip the surrogate still refuse it
    for name in ("ppo", "gspo"):
        with pytest.raises(ValueError, match="must be <= 1"):
            POLICY_LOSSES[name].bounds(10.0, 0.2, None)
        with pytest.raises(ConfigError, match="must be <= 1"):
            load_config(None, [f"algorithm.loss={name}", "algorithm.clip_low=10"])


@pytest.mark.slow
def test_learner_logs_the_bapo_positive_share_at_the_chosen_bounds(tiny_model_dir) -> None:
    """``actor/bapo_positive_share`` is the share at the logged bounds, in the configured reading
    (here ``unclipped``, with the loss's dual clip 3), next to ``actor/bapo_low`` / ``_high``."""
    from rlengine.learner.batching import step_denominators
    from rlengine.learner.rank import LearnerRank
    from rlengine.learner.spec import single_process_world
    from rlengine.samples import Sample
    from tests.conftest import learner_spec

    lengths, advantages = [5, 3, 4, 6], [1.0, -1.0, -1.0, -0.5]
    samples = [
        Sample(prompt_ids=[11 + i, 12, 13], response_ids=[20 + j for j in range(n)], advantage=a)
        for i, (n, a) in enumerate(zip(lengths, advantages))
    ]
    plan = [[[0, 1], [2, 3]]]
    with single_process_world():
        overrides = [
            "learner.grad_clip=0.0",
            "learner.lr=0.0",
            "algorithm.loss=bapo",
            "algorithm.bapo_share=unclipped",
        ]
        rank = LearnerRank(learner_spec(tiny_model_dir, *overrides))
        current = rank.compute_logprobs(samples, plan[0], "policy")
        shift = [0.1, -0.6, 0.3, -0.2]  # log(pi / pi_old) per sample: 1.105, 0.549, 1.350, 0.819
        for i, sample in enumerate(samples):
            sample.old_logprobs = [lp - shift[i] for lp in current[i]]
        metrics = rank.train(samples, plan, step_denominators(samples, [plan], "token_mean"))
    ratios = torch.tensor([[math.exp(shift[i]) for i in range(4) for _ in current[i]]])
    adv = torch.tensor([[advantages[i] for i in range(4) for _ in current[i]]])
    ones = torch.ones_like(ratios)
    low, high = bapo_adapt_bounds(ratios, adv, ones, share="unclipped", dual_clip=3.0)
    assert (low, high) != (0.6, 1.2)  # the search moved
    assert (metrics["actor/bapo_low"], metrics["actor/bapo_high"]) == pytest.approx((low, high), abs=1e-6)
    expected = losses_module.bapo_positive_share(
        ratios, adv, ones, low, high, share="unclipped", dual_clip=3.0
    )
    assert metrics["actor/bapo_positive_share"] == pytest.approx(expected, abs=1e-5)


# ----------------------------------------------------------------------------- presets and config

# What each preset sets: only the keys that differ from AlgorithmConfig's defaults, plus the stage
# sections the recipe needs.
EXPECTED_PRESETS = {
    "grpo": ({"agg": "seq_mean_token_mean", "kl_coef": 0.04}, {}),
    "dr_grpo": ({"advantage": "dr_grpo", "agg": "seq_mean_token_sum_norm"}, {}),
    "dapo": (
        {"clip_low": 0.2, "clip_high": 0.28, "overlong_shaping": True, "overlong_cache": 4096},
        {"filter": {"name": "nonzero_variance"}},
    ),
    "gspo": ({"loss": "gspo", "clip_low": 3e-4, "clip_high": 4e-4, "agg": "seq_mean_token_mean"}, {}),
    "rloo": ({"advantage": "rloo"}, {}),
    "reinforce_pp": ({"advantage": "reinforce_pp", "kl_coef": 1e-3, "kl_kind": "k2"}, {}),
    "cispo": ({"loss": "cispo", "clip_low": 1.0, "clip_high": 3.0}, {}),
}
SMALL_ROLLOUT = ["rollout.max_tokens=256", "algorithm.overlong_cache=64"]


def _algo_defaults() -> dict:
    return to_dict(AlgorithmConfig())


def test_require_choice_lives_in_errors():
    assert require_choice("advantage", "rloo", ADVANTAGES) == "rloo"
    with pytest.raises(ValueError) as info:
        require_choice("advantage", "grp", ADVANTAGES)
    assert str(info.value) == (
        "unknown advantage 'grp'; allowed: grpo, dr_grpo, rloo, reinforce_pp, reinforce_pp_baseline"
        " (did you mean 'grpo'?)"
    )
    with pytest.raises(ValueError) as info:  # nothing close: no hint
        require_choice("agg", 3, AGGREGATIONS)
    assert str(info.value).endswith("seq_mean_token_sum_norm") and "did you mean" not in str(info.value)
    for module in (advantages_module, kl_module, losses_module):
        assert module.require_choice is require_choice
    assert not hasattr(algorithms, "ALGORITHM_KEYS")
    assert not hasattr(algorithms, "require_choice")


def test_preset_table():
    assert set(PRESETS) == set(EXPECTED_PRESETS)
    for name, (values, stages) in EXPECTED_PRESETS.items():
        p = PRESETS[name]
        assert p.values == values and p.stages == stages, name
        assert "arXiv" in p.paper and p.description
    assert "nonzero_variance" in PRESETS["dapo"].description
    assert "Tinker" in PRESETS["cispo"].description and "4.0" in PRESETS["cispo"].description


@pytest.mark.parametrize("preset", list(EXPECTED_PRESETS))
def test_preset_keys_are_algorithm_fields_and_differ_from_defaults(preset):
    defaults = _algo_defaults()
    values = PRESETS[preset].values
    assert values and set(values) <= set(defaults) - {"preset"}
    redundant = {k for k, v in values.items() if defaults[k] == v}
    assert redundant == set()
    assert apply_preset(preset, {}) == values  # nothing but the preset's own keys


@pytest.mark.parametrize("preset", list(EXPECTED_PRESETS))
def test_preset_through_load_config(preset):
    cfg = load_config(None, [f"algorithm.preset={preset}", *SMALL_ROLLOUT])
    expected = {**_algo_defaults(), **PRESETS[preset].values, "preset": preset, "overlong_cache": 64}
    low, high = LOSS_BOUNDS[expected["loss"]]
    expected["clip_low"] = low if expected["clip_low"] is None else expected["clip_low"]
    expected["clip_high"] = high if expected["clip_high"] is None else expected["clip_high"]
    assert to_dict(cfg.algorithm) == expected
    assert cfg.filter.name == ("nonzero_variance" if preset == "dapo" else "none")
    # The resulting values are accepted by the functions they configure.
    v = cfg.algorithm
    assert v.kl_kind in KL_KINDS and v.kl_placement in KL_PLACEMENTS
    adv = compute_advantages(v.advantage, torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.tensor([0, 0, 1, 1]))
    lp = torch.zeros(4, 3, requires_grad=True)
    loss, _ = compute_policy_loss(
        v.loss, lp, torch.zeros(4, 3), adv, torch.ones(4, 3), v.agg,
        clip_low=v.clip_low, clip_high=v.clip_high, dual_clip=v.dual_clip,
    )  # fmt: skip
    loss.backward()
    assert _finite(lp.grad) and lp.grad.abs().sum() > 0


def test_dapo_preset_in_config():
    cfg = load_config(None, ["algorithm.preset=dapo", *SMALL_ROLLOUT])
    a = cfg.algorithm
    assert (a.clip_low, a.clip_high, a.overlong_shaping, a.overlong_cache) == (0.2, 0.28, True, 64)
    assert (a.advantage, a.loss, a.agg, a.kl_coef) == ("grpo", "ppo", "token_mean", 0.0)
    assert cfg.filter.name == "nonzero_variance"
    # An explicit filter.name wins over the preset's stage section.
    cfg = load_config(None, ["algorithm.preset=dapo", *SMALL_ROLLOUT, "filter.name=none"])
    assert cfg.filter.name == "none"
    cfg = load_config(None, ["algorithm.preset=dapo", *SMALL_ROLLOUT, "filter.name=balanced"])
    assert cfg.filter.name == "balanced"
    # A section without a name tunes the preset's filter.
    cfg = load_config(None, ["algorithm.preset=dapo", *SMALL_ROLLOUT, "filter.max_rounds=8"])
    assert (cfg.filter.name, cfg.filter.max_rounds) == ("nonzero_variance", 8)
    # Explicit algorithm keys win over the preset (an explicit false too).
    cfg = load_config(
        None,
        [
            "algorithm.preset=dapo",
            *SMALL_ROLLOUT,
            "algorithm.clip_high=0.3",
            "algorithm.overlong_shaping=false",
        ],
    )
    assert (cfg.algorithm.clip_low, cfg.algorithm.clip_high) == (0.2, 0.3)
    assert cfg.algorithm.overlong_shaping is False
    assert PRESETS["dapo"].values["clip_high"] == 0.28  # preset untouched
    # The paper's overlong_cache (4096) does not fit short rollouts unless overridden.
    with pytest.raises(ConfigError, match="overlong_cache"):
        load_config(None, ["algorithm.preset=dapo", "rollout.max_tokens=256"])
    with pytest.raises(ConfigError, match=r"algorithm\.preset: .*valid presets: .*did you mean 'dapo'"):
        load_config(None, ["algorithm.preset=dapoo"])


def test_apply_preset_overrides():
    v = apply_preset("dapo", {"clip_high": 0.3, "tis_cap": 2.0, "kl_coef": 0.01})
    assert v == {
        "clip_low": 0.2,
        "clip_high": 0.3,
        "overlong_shaping": True,
        "overlong_cache": 4096,
        "tis_cap": 2.0,
        "kl_coef": 0.01,
    }
    assert apply_preset("grpo", {"dual_clip": None})["dual_clip"] is None
    with pytest.raises(ValueError, match=r"valid presets: .*grpo.*did you mean 'dapo'"):
        apply_preset("dapoo", {})


def test_default_clips_per_loss():
    assert {name: loss.default_clips for name, loss in POLICY_LOSSES.items()} == LOSS_BOUNDS
    assert AlgorithmConfig().clip_low is None and AlgorithmConfig().clip_high is None
    for loss, bounds in LOSS_BOUNDS.items():
        a = load_config(None, [f"algorithm.loss={loss}"]).algorithm
        assert (a.clip_low, a.clip_high) == bounds, loss
    a = load_config(None, ["algorithm.loss=gspo"]).algorithm
    assert (a.clip_low, a.clip_high) == (3e-4, 4e-4)
    # An explicit clip wins; the other one still comes from the loss.
    a = load_config(None, ["algorithm.loss=gspo", "algorithm.clip_high=0.01"]).algorithm
    assert (a.clip_low, a.clip_high) == (3e-4, 0.01)
    a = load_config(None, ["algorithm.loss=cispo", "algorithm.clip_low=0.5"]).algorithm
    assert (a.clip_low, a.clip_high) == (0.5, 3.0)
    a = load_config(None, ["algorithm.preset=cispo"]).algorithm
    assert (a.loss, a.clip_low, a.clip_high) == ("cispo", 1.0, 3.0)
