"""Advantage estimators (one scalar per response) and DAPO overlong reward shaping.

Every estimator returns one float32 advantage per response; the learner broadcasts it over
the response's tokens. Formulas are in ``docs/algorithms.md`` and in the
docstring of :func:`compute_advantages`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rlengine.errors import require_choice

ADVANTAGES: tuple[str, ...] = ("grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline")


def _group_reduce(values: Tensor, inverse: Tensor, n_groups: int, how: str) -> Tensor:
    """Per-group ``sum``, ``amax`` or ``amin`` of a 1-D tensor (``inverse`` maps item -> group)."""
    if how == "sum":
        return torch.zeros(n_groups, dtype=values.dtype, device=values.device).index_add_(0, inverse, values)
    init = float("-inf") if how == "amax" else float("inf")
    out = torch.full((n_groups,), init, dtype=values.dtype, device=values.device)
    return out.scatter_reduce_(0, inverse, values, reduce=how, include_self=True)


def _whiten(values: Tensor, weights: Tensor, eps: float) -> Tensor:
    """Batch whitening ``(v - mean) / (std + eps)`` with ``weights`` as repeat counts.

    With ``weights`` the response lengths this is verl's masked whitening over all response
    tokens: mean and unbiased variance are taken over every token, each response's value counted
    once per token. Returns zeros when fewer than two tokens are weighted or all values are
    equal, so it never produces NaN.
    """
    total = weights.sum()
    if total < 2 or bool(values.max() == values.min()):
        return torch.zeros_like(values)
    mean = (values * weights).sum() / total
    var = (weights * (values - mean) ** 2).sum() / (total - 1)
    return (values - mean) / (var.sqrt() + eps)


def compute_advantages(
    name: str,
    rewards: Tensor | Sequence[float],
    group_index: Tensor | Sequence[int],
    *,
    eps: float = 1e-6,
    lengths: Tensor | Sequence[int] | None = None,
) -> Tensor:
    """Per-response advantages from scalar rewards and group membership.

    ``rewards`` is ``[N]`` (one scalar per response), ``group_index`` is ``[N]`` integers where
    responses to the same prompt share an id (ids may be any integers, in any order). Returns a
    float32 ``[N]`` tensor on the rewards' device. With ``g`` the group of response ``i``:

    * ``grpo`` (DeepSeekMath, arXiv 2402.03300): ``(R_i - mean_g R) / (std_g R + eps)``, where
      ``std_g`` is the unbiased (Bessel-corrected) standard deviation within the group.
    * ``dr_grpo`` (Dr. GRPO, arXiv 2503.20783): ``R_i - mean_g R`` (no std scaling).
    * ``rloo`` (RLOO, arXiv 2402.14740): ``R_i - mean of the other G-1 rewards of the group``
      (equals ``G/(G-1) * (R_i - mean_g R)``).
    * ``reinforce_pp`` (REINFORCE++, arXiv 2501.03262): ``R_i`` whitened over all response
      tokens of the batch, ``(R_i - mean) / (std + eps)`` where mean and unbiased std count each
      response once per token (``lengths``; gamma = 1 for outcome rewards). This is verl's masked
      whitening of the token-level returns.
    * ``reinforce_pp_baseline`` (REINFORCE++-baseline, arXiv 2501.03262): ``R_i - mean_g R``
      (a group of one keeps ``R_i``, as in verl), then whitened over all tokens as above.

    ``lengths`` (``[N]`` response token counts) weight the batch whitening; by default every
    response counts once. The group-relative estimators ignore it.

    Edge cases (never NaN or inf for finite rewards):

    * Under the group-relative estimators a group of size >= 2 whose rewards are all equal gets
      advantage exactly 0, and a group of size 1 (no baseline) gets 0.
    * The batch-whitened estimators do not zero anything after whitening: zeroing shifts every
      other advantage (rewards ``[1,1,1,1 | 1,0,0,0]`` would then have a batch mean of -0.36). An
      all-equal group under ``reinforce_pp_baseline`` is centred to 0 first, so it gets the same
      (small) value as every other response at the batch mean.
    * If the whole batch is constant or has fewer than two tokens, batch whitening returns 0;
      ``N == 0`` returns an empty tensor.

    Raises ``ValueError`` for an unknown name, mismatched shapes or non-finite rewards.
    """
    require_choice("advantage", name, ADVANTAGES)
    rewards_t = torch.as_tensor(rewards)
    device = rewards_t.device
    r = rewards_t.detach().to(torch.float32)
    idx = torch.as_tensor(group_index, device=device)
    if r.dim() != 1 or idx.shape != r.shape:
        raise ValueError(
            f"rewards and group_index must both be 1-D of the same length, got shapes "
            f"{tuple(r.shape)} and {tuple(idx.shape)}"
        )
    if idx.dtype.is_floating_point or idx.dtype == torch.bool:
        raise ValueError(f"group_index must hold integers, got dtype {idx.dtype}")
    if r.numel() == 0:
        return r.clone()
    if not bool(torch.isfinite(r).all()):
        bad = torch.nonzero(~torch.isfinite(r)).flatten()[:8].tolist()
        raise ValueError(f"rewards contain NaN or inf (first indices: {bad})")

    weights = (
        torch.ones_like(r) if lengths is None else torch.as_tensor(lengths, device=device).to(torch.float32)
    )
    if weights.shape != r.shape or bool((weights < 0).any()):
        raise ValueError(f"lengths must be [N] non-negative token counts, got shape {tuple(weights.shape)}")
    _, inverse = torch.unique(idx, return_inverse=True)
    n_groups = int(inverse.max().item()) + 1
    counts = _group_reduce(torch.ones_like(r), inverse, n_groups, "sum")
    sums = _group_reduce(r, inverse, n_groups, "sum")
    equal = _group_reduce(r, inverse, n_groups, "amax") == _group_reduce(r, inverse, n_groups, "amin")
    count_i = counts[inverse]
    singleton = count_i < 2
    flat = equal[inverse] & ~singleton  # groups of size >= 2 with all-equal rewards
    centered = r - (sums / counts)[inverse]

    if name == "grpo":
        sq = _group_reduce(centered * centered, inverse, n_groups, "sum")
        std = torch.sqrt(sq / (counts - 1).clamp(min=1))[inverse]
        adv = centered / (std + eps)
    elif name == "dr_grpo":
        adv = centered
    elif name == "rloo":
        others_mean = (sums[inverse] - r) / (count_i - 1).clamp(min=1)
        adv = r - others_mean
    elif name == "reinforce_pp":
        return _whiten(r, weights, eps)
    else:  # reinforce_pp_baseline
        return _whiten(torch.where(singleton, r, centered), weights, eps)

    return torch.where(flat | singleton, torch.zeros_like(adv), adv)


def overlong_reward_penalty(
    lengths: Tensor | Sequence[int],
    max_length: int,
    cache_length: int,
) -> Tensor:
    """DAPO soft overlong punishment (DAPO, arXiv 2503.14476, "overlong reward shaping").

    For a response of length ``L`` with ``L_max = max_length`` and ``L_c = cache_length``::

        0                         if L <= L_max - L_c
        ((L_max - L_c) - L) / L_c if L_max - L_c < L <= L_max   (falls linearly from 0 to -1)
        -1                        if L > L_max

    ``cache_length == 0`` gives 0 up to ``L_max`` and -1 beyond. The value is added to the task
    reward. Returns float32 with the shape of ``lengths``. Raises ``ValueError`` unless
    ``max_length > 0`` and ``0 <= cache_length <= max_length``.
    """
    if max_length <= 0:
        raise ValueError(f"overlong shaping: max_length must be > 0, got {max_length}")
    if not 0 <= cache_length <= max_length:
        raise ValueError(
            f"overlong shaping: cache_length must be in [0, max_length={max_length}], got {cache_length} "
            "(set algorithm.overlong_cache to at most rollout.max_tokens)"
        )
    length = torch.as_tensor(lengths).to(torch.float32)
    start = float(max_length - cache_length)
    if cache_length == 0:
        ramp = torch.zeros_like(length)
    else:
        ramp = ((start - length) / float(cache_length)).clamp(min=-1.0, max=0.0)
    return torch.where(length > max_length, torch.full_like(length, -1.0), ramp)
