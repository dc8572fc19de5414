"""Advantage estimators (one scalar per response) and DAPO overlong reward shaping.

Every estimator is a registered function (:data:`ADVANTAGES`, ``rlengine/algorithms/registry.py``)
returning one float32 advantage per response; the learner broadcasts it over the response's
tokens. Formulas are in each estimator's docstring and in ``docs/algorithms.md``; the group
helpers (:func:`group_mean`, :func:`group_std`, ...) are public so plug-ins can reuse them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import Tensor

from rlengine.algorithms.registry import ADVANTAGES, advantage_estimator, register_advantage
from rlengine.errors import require_choice
from rlengine.plugins import is_plugin_spec

__all__ = [
    "ADVANTAGES",
    "compute_advantages",
    "group_constant",
    "group_mean",
    "group_size",
    "group_std",
    "group_sum",
    "overlong_reward_penalty",
    "whiten",
]


# --------------------------------------------------------------------------- helpers
#
# Public so that a plug-in estimator can reuse them. ``group_index`` is what an estimator gets:
# int64 ids 0..G-1 (``compute_advantages`` renumbers the caller's ids); each helper returns one
# value per response, ``[N]``.


def _group_reduce(values: Tensor, group_index: Tensor, how: str) -> Tensor:
    """Per-group ``sum``, ``amax`` or ``amin`` of a 1-D tensor, ``[G]``."""
    n_groups = int(group_index.max().item()) + 1 if group_index.numel() else 0
    if how == "sum":
        out = torch.zeros(n_groups, dtype=values.dtype, device=values.device)
        return out.index_add_(0, group_index, values)
    init = float("-inf") if how == "amax" else float("inf")
    out = torch.full((n_groups,), init, dtype=values.dtype, device=values.device)
    return out.scatter_reduce_(0, group_index, values, reduce=how, include_self=True)


def group_size(group_index: Tensor) -> Tensor:
    """``[N]`` float32: how many responses the group of each response has."""
    ones = torch.ones(group_index.shape, dtype=torch.float32, device=group_index.device)
    return _group_reduce(ones, group_index, "sum")[group_index]


def group_sum(values: Tensor, group_index: Tensor) -> Tensor:
    """``[N]``: the sum of ``values`` over each response's group, ``sum_g v``."""
    return _group_reduce(values, group_index, "sum")[group_index]


def group_mean(values: Tensor, group_index: Tensor) -> Tensor:
    """``[N]``: the mean of ``values`` over each response's group, ``mean_g v``."""
    ones = torch.ones_like(values)
    return (_group_reduce(values, group_index, "sum") / _group_reduce(ones, group_index, "sum"))[group_index]


def group_std(values: Tensor, group_index: Tensor) -> Tensor:
    """``[N]``: the unbiased (Bessel-corrected) standard deviation of ``values`` over each
    response's group, ``sqrt(sum_g (v - mean_g v)^2 / (G - 1))``; 0 for a group of one."""
    centered = values - group_mean(values, group_index)
    sq = _group_reduce(centered * centered, group_index, "sum")
    counts = _group_reduce(torch.ones_like(values), group_index, "sum")
    return torch.sqrt(sq / (counts - 1).clamp(min=1))[group_index]


def group_constant(values: Tensor, group_index: Tensor) -> Tensor:
    """``[N]`` bool: the response's group has all-equal values (a group of one always has)."""
    high = _group_reduce(values, group_index, "amax")
    return (high == _group_reduce(values, group_index, "amin"))[group_index]


def whiten(values: Tensor, weights: Tensor, eps: float) -> Tensor:
    """Batch whitening ``(v - mean) / (std + eps)`` with ``weights`` as repeat counts, ``[N]``.

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


# --------------------------------------------------------------------------- estimators
#
# Each: float32 ``rewards [N]``, int64 ``group_index [N]`` (0..G-1), float32 ``lengths [N]`` (token
# counts, ones when the caller gave none), ``eps`` -> float32 ``[N]``. ``compute_advantages`` does
# the input checks, so these are the formulas alone.


@register_advantage("grpo", group_baseline=True)
def grpo(rewards: Tensor, group_index: Tensor, *, lengths: Tensor, eps: float) -> Tensor:
    """GRPO (DeepSeekMath, arXiv 2402.03300): ``(R_i - mean_g R) / (std_g R + eps)``.

    ``std_g`` is the unbiased standard deviation within the group. A group whose rewards are all
    equal (a group of one included) gets exactly 0. Shapes: ``[N]`` in, ``[N]`` out; ``lengths``
    is unused.
    """
    adv = (rewards - group_mean(rewards, group_index)) / (group_std(rewards, group_index) + eps)
    return torch.where(group_constant(rewards, group_index), torch.zeros_like(adv), adv)


@register_advantage("dr_grpo", group_baseline=True)
def dr_grpo(rewards: Tensor, group_index: Tensor, *, lengths: Tensor, eps: float) -> Tensor:
    """Dr. GRPO (arXiv 2503.20783): ``R_i - mean_g R`` (no std scaling).

    An all-equal group (or a group of one) gets exactly 0. ``[N]`` in, ``[N]`` out; ``lengths``
    and ``eps`` are unused.
    """
    adv = rewards - group_mean(rewards, group_index)
    return torch.where(group_constant(rewards, group_index), torch.zeros_like(adv), adv)


@register_advantage("rloo", group_baseline=True)
def rloo(rewards: Tensor, group_index: Tensor, *, lengths: Tensor, eps: float) -> Tensor:
    """RLOO (arXiv 2402.14740): ``R_i - (sum_g R - R_i) / (G - 1)``, the reward minus the mean of
    the other ``G - 1`` rewards of its group (equals ``G/(G-1) * (R_i - mean_g R)``).

    An all-equal group (or a group of one) gets exactly 0. ``[N]`` in, ``[N]`` out; ``lengths``
    and ``eps`` are unused.
    """
    others_mean = (group_sum(rewards, group_index) - rewards) / (group_size(group_index) - 1).clamp(min=1)
    adv = rewards - others_mean
    return torch.where(group_constant(rewards, group_index), torch.zeros_like(adv), adv)


@register_advantage("reinforce_pp")
def reinforce_pp(rewards: Tensor, group_index: Tensor, *, lengths: Tensor, eps: float) -> Tensor:
    """REINFORCE++ (arXiv 2501.03262): ``R_i`` whitened over all response tokens of the batch,
    ``(R_i - mean) / (std + eps)`` with mean and unbiased std counting each response once per
    token (``lengths``; gamma = 1 for outcome rewards), as verl's masked whitening.

    Nothing is zeroed afterwards (that would shift every other advantage). ``[N]`` in, ``[N]``
    out; ``group_index`` is unused.
    """
    return whiten(rewards, lengths, eps)


@register_advantage("reinforce_pp_baseline", group_baseline=True)
def reinforce_pp_baseline(rewards: Tensor, group_index: Tensor, *, lengths: Tensor, eps: float) -> Tensor:
    """REINFORCE++-baseline (arXiv 2501.03262): ``R_i - mean_g R`` (a group of one keeps ``R_i``,
    as in verl), then whitened over all response tokens as in ``reinforce_pp``. ``[N]`` in,
    ``[N]`` out.
    """
    single = group_size(group_index) < 2
    return whiten(torch.where(single, rewards, rewards - group_mean(rewards, group_index)), lengths, eps)


# --------------------------------------------------------------------------- entry point


def compute_advantages(
    name: str,
    rewards: Tensor | Sequence[float],
    group_index: Tensor | Sequence[int],
    *,
    eps: float = 1e-6,
    lengths: Tensor | Sequence[int] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> Tensor:
    """Per-response advantages from scalar rewards and group membership.

    ``name`` is a built-in estimator (:data:`ADVANTAGES`: ``grpo``, ``dr_grpo``, ``rloo``,
    ``reinforce_pp``, ``reinforce_pp_baseline``; each function's docstring gives its formula and
    paper) or a plug-in ``file.py:function``, a relative file looked up in ``base_dir`` (pass the
    YAML's directory, ``cfg.config_dir``) first, then the current directory. ``rewards`` is
    ``[N]`` (one scalar per response), ``group_index`` is ``[N]`` integers where responses to the
    same prompt share an id (ids may be any integers, in any order; the estimator sees them
    renumbered ``0..G-1``). Returns a float32 ``[N]`` tensor on the rewards' device.

    ``lengths`` (``[N]`` response token counts) weight the batch whitening of the reinforce_pp
    estimators; by default every response counts once. The group-relative estimators ignore it.

    Edge cases (never NaN or inf for finite rewards):

    * Under the group-relative estimators (grpo, dr_grpo, rloo) a group whose rewards are all
      equal gets advantage exactly 0, and a group of size 1 (no baseline) gets 0.
    * The batch-whitened estimators do not zero anything after whitening: zeroing shifts every
      other advantage (rewards ``[1,1,1,1 | 1,0,0,0]`` would then have a batch mean of -0.36). An
      all-equal group under ``reinforce_pp_baseline`` is centred to 0 first, so it gets the same
      (small) value as every other response at the batch mean.
    * If the whole batch is constant or has fewer than two tokens, batch whitening returns 0;
      ``N == 0`` returns an empty tensor.

    Raises ``ValueError`` for an unknown name or a plug-in that cannot be loaded, mismatched
    shapes, non-finite rewards, or an estimator that returns a wrong shape or NaN/inf.
    """
    if not (isinstance(name, str) and is_plugin_spec(name)):
        require_choice("advantage", name, ADVANTAGES)
    estimator = advantage_estimator(name, base_dir)
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
    adv = estimator.fn(r, inverse.to(torch.int64), lengths=weights, eps=eps)
    if not isinstance(adv, Tensor) or adv.shape != r.shape:
        shape = tuple(adv.shape) if isinstance(adv, Tensor) else type(adv).__name__
        raise ValueError(f"advantage estimator {estimator.name}: returned {shape} for {r.numel()} rewards")
    adv = adv.detach().to(torch.float32)
    if not bool(torch.isfinite(adv).all()):
        bad = torch.nonzero(~torch.isfinite(adv)).flatten()[:8].tolist()
        raise ValueError(f"advantage estimator {estimator.name}: returned NaN or inf (first indices: {bad})")
    return adv


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
