"""KL-to-reference estimators and the entropy of the policy's token distribution.

Both return per-token values; aggregate them over the response mask with
:func:`rlengine.algorithms.losses.aggregate_loss`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlengine.errors import require_choice

KL_KINDS: tuple[str, ...] = ("k1", "k2", "k3")
KL_PLACEMENTS: tuple[str, ...] = ("loss", "reward")
K3_CLAMP = 10.0  # bound on the k3 estimate itself (verl's low_var_kl)
LOG_RATIO_LIMIT = 20.0  # d is clamped to this before exp, so exp never overflows


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, kind: str) -> Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref) from tokens sampled by the policy.

    With ``d = log pi_ref - log pi_theta`` (Schulman, "Approximating KL divergence", 2020;
    k3 is the estimator GRPO uses, arXiv 2402.03300 eq. 4):

    * ``k1 = -d``                 (unbiased, can be negative)
    * ``k2 = 0.5 * d**2``         (biased, always >= 0; its gradient is the KL's gradient)
    * ``k3 = exp(d) - d - 1``     (unbiased, always >= 0)

    For ``k3`` the estimate itself is clamped to ``[-10, 10]`` (after ``d`` is clamped to
    ``[-20, 20]`` so ``exp`` never overflows), as verl's ``low_var_kl`` does: one token far from
    the reference then adds at most 10, and its gradient is zero. (Clamping only ``d`` to 10
    would let one token add ``exp(10) - 11 ~ 2.2e4``.)
    Computed in float32 (bf16 inputs are fine). ``logprobs`` and ``ref_logprobs`` must have the
    same shape (typically ``[B, T]``); the result has that shape. Finite inputs give finite
    outputs; padded positions should be removed by the mask when aggregating.
    """
    require_choice("KL kind", kind, KL_KINDS)
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError(
            f"kl_penalty: logprobs {tuple(logprobs.shape)} and ref_logprobs "
            f"{tuple(ref_logprobs.shape)} must have the same shape"
        )
    d = ref_logprobs.to(torch.float32) - logprobs.to(torch.float32)
    if kind == "k1":
        return -d
    if kind == "k2":
        return 0.5 * d * d
    d = d.clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
    return (torch.exp(d) - d - 1.0).clamp(-K3_CLAMP, K3_CLAMP)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of ``softmax(logits)`` over the last dimension, per position.

    ``H = -sum_v p_v log p_v`` with ``log p = logits - logsumexp(logits)`` computed in float32,
    so large logits do not overflow and ``-inf`` logits (masked vocabulary entries) contribute
    exactly 0. Works on any shape ``[..., V]`` (e.g. ``[B, T, V]`` -> ``[B, T]``) and is
    differentiable (the entropy bonus maximises it). The entropy bonus is standard in PPO
    (arXiv 1707.06347); most GRPO-family recipes set its coefficient to 0.
    """
    z = logits.to(torch.float32)
    z = z - z.amax(dim=-1, keepdim=True).detach()  # exact shift: keeps precision for large logits
    logp = z - torch.logsumexp(z, dim=-1, keepdim=True)
    p = torch.exp(logp)
    # Replace log p where p == 0 *before* multiplying, so neither the value nor the gradient
    # sees 0 * -inf.
    logp = torch.where(p > 0, logp, torch.zeros_like(logp))
    return -(p * logp).sum(dim=-1)
