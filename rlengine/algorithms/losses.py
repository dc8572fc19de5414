"""Policy losses of the GRPO family, loss aggregation, TIS weights and BAPO bound adaptation.

Each loss is a registered per-token function (:data:`POLICY_LOSSES`,
``rlengine/algorithms/registry.py``) with its clip defaults declared in its decorator;
:func:`compute_policy_loss` does the checks, token weights, aggregation and metrics around it.

All functions are pure torch, compute in float32 (bf16 inputs are fine) and never produce
NaN/inf from masked-out positions: a position whose mask is 0 may hold any value.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import torch
from torch import Tensor

from rlengine.algorithms.registry import (
    POLICY_LOSSES,
    PolicyLossOutput,
    as_output,
    policy_loss,
    register_policy_loss,
)
from rlengine.errors import require_choice
from rlengine.plugins import is_plugin_spec

AGGREGATIONS: tuple[str, ...] = (
    "token_mean",
    "seq_mean_token_mean",
    "seq_mean_token_sum",
    "seq_mean_token_sum_norm",
)
LOG_RATIO_CLAMP = 20.0  # PPO: |log r| is clamped to this before exp (r in [2e-9, 4.9e8]), as verl
GSPO_LOG_RATIO_MAX = 10.0  # GSPO: the log sequence ratio is clamped at this, as verl
BAPO_DUAL_CLIP = 3.0


def sequence_weights(token_counts: Tensor, agg: str) -> Tensor:
    """Each sequence's share of the aggregation denominator, from its loss-token count.

    The denominator :func:`aggregate_loss` divides by is the sum of these over the batch (times
    the constant ``L`` for ``seq_mean_token_sum_norm``): tokens for ``token_mean``; every row for
    ``seq_mean_token_sum_norm``; non-empty rows otherwise. The learner uses it to give each
    micro-batch its share of a mini-batch's loss, so accumulation equals one big batch.
    """
    require_choice("agg", agg, AGGREGATIONS)
    counts = token_counts.to(torch.float32)
    if agg == "token_mean":
        return counts
    if agg == "seq_mean_token_sum_norm":
        return torch.ones_like(counts)
    return (counts > 0).to(torch.float32)


def aggregate_loss(
    per_token_loss: Tensor,
    mask: Tensor,
    agg: str,
    max_response_length: int | None = None,
) -> Tensor:
    """Reduce a ``[B, T]`` per-token loss to a scalar over the tokens where ``mask != 0``.

    With ``m`` the mask (0/1, or non-negative weights) and ``l`` the loss:

    * ``token_mean`` (DAPO, arXiv 2503.14476): ``sum(l*m) / sum(m)`` over the whole batch.
    * ``seq_mean_token_mean`` (GRPO, arXiv 2402.03300): mean over sequences of
      ``sum_t(l*m) / sum_t(m)``.
    * ``seq_mean_token_sum``: mean over sequences of ``sum_t(l*m)``.
    * ``seq_mean_token_sum_norm`` (Dr. GRPO, arXiv 2503.20783): ``sum(l*m) / (B * L)`` with the
      constant ``L = max_response_length`` (default ``T``).

    A row whose mask is all zero contributes nothing: it is left out of the sequence count of
    the two ``seq_mean_*`` means, and adds 0 to the numerator of the others (``B`` in the
    ``_norm`` denominator is the number of rows, a constant by design). An empty batch or an
    all-zero mask gives 0 (still attached to the graph). Masked positions may hold inf/NaN.
    """
    require_choice("agg", agg, AGGREGATIONS)
    if per_token_loss.dim() != 2 or per_token_loss.shape != mask.shape:
        raise ValueError(
            f"aggregate_loss: per_token_loss {tuple(per_token_loss.shape)} and mask "
            f"{tuple(mask.shape)} must both be [B, T]"
        )
    m = mask.to(torch.float32)
    loss = per_token_loss.to(torch.float32)
    weighted = torch.where(m != 0, loss, torch.zeros_like(loss)) * m
    row_cnt = m.sum(dim=-1)
    denominator = sequence_weights(row_cnt, agg).sum()
    if agg == "seq_mean_token_sum_norm":
        length = max(per_token_loss.shape[1], 1) if max_response_length is None else int(max_response_length)
        if length <= 0:
            raise ValueError(f"aggregate_loss: max_response_length must be > 0, got {length}")
        return weighted.sum() / (denominator.clamp(min=1) * float(max(length, 1)))
    if agg == "token_mean":
        return weighted.sum() / torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    row_sum = weighted.sum(dim=-1)
    if agg == "seq_mean_token_mean":
        row_sum = row_sum / torch.where(row_cnt > 0, row_cnt, torch.ones_like(row_cnt))
    return row_sum.sum() / denominator.clamp(min=1)


# --------------------------------------------------------------------------- per-token losses
#
# Each gets float32 ``[B, T]`` tensors that are 0 wherever ``mask`` (float32 0/1) is 0:
# ``logprobs`` (carries the gradient), ``old_logprobs`` (detached), ``advantages`` (broadcast over
# the tokens), plus the ratio bounds ``lower``/``upper`` and ``dual_clip`` (None: off) that
# :meth:`PolicyLoss.bounds` made from clip_low/clip_high. ``compute_policy_loss`` does the checks,
# token weights, aggregation and metrics.


def token_log_ratio(logprobs: Tensor, old_logprobs: Tensor) -> Tensor:
    """``log r = logprobs - old_logprobs`` clamped to ``[-20, 20]`` (verl's guard), ``[B, T]``."""
    return (logprobs - old_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


def clipped_surrogate(
    ratio: Tensor, advantages: Tensor, lower: float, upper: float, dual_clip: float | None = None
) -> PolicyLossOutput:
    """PPO's clipped surrogate on any ratio, per token (``[B, T]`` in and out).

    ``-min(r*A, clip(r, lower, upper)*A)``; with ``dual_clip = c`` (dual-clip PPO, arXiv
    1912.09729) tokens with ``A < 0`` use ``min(that, -c*A)``. ``clipped`` marks the tokens where
    the clipped branch or the dual clip is the one used, ``dual_clipped`` the latter.
    """
    unclipped = -advantages * ratio
    clipped_loss = -advantages * ratio.clamp(min=lower, max=upper)
    per_token = torch.maximum(unclipped, clipped_loss)
    clipped = clipped_loss > unclipped
    dual_active = torch.zeros_like(clipped)
    if dual_clip is not None:
        bound = -advantages * dual_clip
        dual_active = (advantages < 0) & (per_token > bound)
        per_token = torch.where(advantages < 0, torch.minimum(per_token, bound), per_token)
        clipped = clipped | dual_active
    return PolicyLossOutput(per_token, ratio, clipped, dual_active)


@register_policy_loss("ppo", default_clips=(0.2, 0.2))
def ppo(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    lower: float,
    upper: float,
    dual_clip: float | None,
) -> PolicyLossOutput:
    """PPO clipped loss (PPO arXiv 1707.06347; GRPO 2402.03300; DAPO clip-higher 2503.14476).

    Per token ``-min(r*A, clip(r, 1-clip_low, 1+clip_high)*A)`` with ``r = exp(logprobs -
    old_logprobs)`` (log-ratio clamped to +-20); optional dual clip for ``A < 0`` (see
    :func:`clipped_surrogate`). Default epsilons 0.2 / 0.2. All tensors ``[B, T]``.
    """
    return clipped_surrogate(
        torch.exp(token_log_ratio(logprobs, old_logprobs)), advantages, lower, upper, dual_clip
    )


@register_policy_loss("gspo", default_clips=(3e-4, 4e-4))
def gspo(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    lower: float,
    upper: float,
    dual_clip: float | None,
) -> PolicyLossOutput:
    """GSPO (arXiv 2507.18071): the clipped loss on the sequence ratio.

    ``s_i = exp(mean_t log r_it)`` over the masked tokens, in the GSPO-token form
    ``s_it = sg(s_i) * pi(y_t) / sg(pi(y_t))`` (same value and, with per-sequence advantages and
    ``seq_mean_token_mean``, the same gradient as sequence-level GSPO); the log sequence ratio is
    clamped at 10 (verl). clip_low/clip_high are its own epsilons (paper: 3e-4 / 4e-4), so
    clipping acts per sequence. All tensors ``[B, T]``; the returned ratio is ``s_it``.
    """
    count = mask.sum(dim=-1, keepdim=True).clamp(min=1)
    seq_log_ratio = (logprobs - old_logprobs).sum(dim=-1, keepdim=True) / count
    log_ratio = (seq_log_ratio.detach() + logprobs - logprobs.detach()).clamp(max=GSPO_LOG_RATIO_MAX)
    return clipped_surrogate(torch.exp(log_ratio), advantages, lower, upper, dual_clip)


@register_policy_loss("cispo", default_clips=(1.0, 3.0), dual_clip=False)
def cispo(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    lower: float,
    upper: float,
    dual_clip: float | None,
) -> PolicyLossOutput:
    """CISPO (MiniMax-M1, arXiv 2506.13585): ``-sg(clip(r, 1-clip_low, 1+clip_high)) * A * logprobs``.

    Every token keeps a gradient ``-w*A``. Any ``clip_low >= 1`` means no lower bound (the paper
    sets epsilon_low "to a large value"; verl writes ``clip_ratio_low: 10``): the bound is then
    0 and a ratio is never below it. Defaults: no lower bound (clip_low 1.0) and the IS weight
    capped at 4.0 (clip_high 3.0), the default of Thinking Machines' Tinker ``cispo`` loss; the
    paper tunes epsilon_high without publishing a value. No dual clip. All tensors ``[B, T]``;
    ``clipped`` marks tokens whose weight was clipped.
    """
    ratio = torch.exp(token_log_ratio(logprobs, old_logprobs)).detach()
    weight = ratio.clamp(min=lower, max=upper)
    return PolicyLossOutput(-weight * advantages * logprobs, ratio, (ratio < lower) | (ratio > upper))


@register_policy_loss("bapo", default_clips=(0.6, 1.2), clip_mode="ratio", default_dual_clip=BAPO_DUAL_CLIP)
def bapo(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    lower: float,
    upper: float,
    dual_clip: float | None,
) -> PolicyLossOutput:
    """BAPO (arXiv 2510.18927): ``ppo`` whose clip_low/clip_high are the ratio bounds
    ``c_low, c_high`` themselves (default 0.6 and 1.2, BAPO's starting bounds, adapted per batch
    by :func:`bapo_adapt_bounds`), with dual clip ``c = 3`` for ``A < 0`` unless ``dual_clip`` is
    given. All tensors ``[B, T]``.
    """
    return clipped_surrogate(
        torch.exp(token_log_ratio(logprobs, old_logprobs)), advantages, lower, upper, dual_clip
    )


# --------------------------------------------------------------------------- entry point


def compute_policy_loss(
    name: str,
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    agg: str,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    max_response_length: int | None = None,
    token_weights: Tensor | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Clipped policy-gradient loss (to minimise) and its metrics.

    ``name`` is a built-in loss (:data:`POLICY_LOSSES`: ``ppo``, ``gspo``, ``cispo``, ``bapo``;
    each function's docstring gives its formula and paper) or a plug-in ``file.py:function``, a
    relative file looked up in ``base_dir`` (the YAML's directory) first, then the current
    directory. ``logprobs`` (current policy, carries the gradient), ``old_logprobs`` (behaviour
    policy) and ``mask`` are ``[B, T]``; ``advantages`` is ``[B]`` (broadcast over tokens) or
    ``[B, T]``. ``clip_low`` / ``clip_high`` are epsilons around 1 (ppo, gspo, cispo: bounds
    ``1 - clip_low``, ``1 + clip_high``) or the ratio bounds themselves (bapo), as the loss's
    ``clip_mode`` says (:meth:`PolicyLoss.bounds`); bapo's dual clip defaults to 3.

    ``token_weights`` (``[B, T]``, e.g. :func:`tis_weights`) multiply the per-token loss as
    constants. The result is reduced with :func:`aggregate_loss` (``agg``,
    ``max_response_length``). Metrics (python floats, over masked tokens): ``clipfrac`` (tokens
    whose loss was clipped: ppo/gspo/bapo where the clipped branch or the dual clip is the one
    used, cispo where the IS weight was clipped), ``clipfrac/dual``, ``approx_kl``
    (mean of ``r - 1 - log r``, the k3 estimate of KL(old || new) from the token ratios),
    ``ratio/mean`` and ``ratio/max`` (of the ratio the loss uses; 1.0 when no token is masked in).
    Raises ``ValueError`` for unknown names, bad bounds, mismatched shapes or a loss function
    that returns a wrong shape.
    """
    if not (isinstance(name, str) and is_plugin_spec(name)):
        require_choice("policy loss", name, POLICY_LOSSES)
    loss_fn = policy_loss(name, base_dir)
    require_choice("agg", agg, AGGREGATIONS)
    lower, upper, dual = loss_fn.bounds(clip_low, clip_high, dual_clip)
    if logprobs.dim() != 2 or old_logprobs.shape != logprobs.shape or mask.shape != logprobs.shape:
        raise ValueError(
            f"compute_policy_loss: logprobs {tuple(logprobs.shape)}, old_logprobs "
            f"{tuple(old_logprobs.shape)} and mask {tuple(mask.shape)} must all be [B, T]"
        )
    if advantages.shape not in (logprobs.shape[:1], logprobs.shape):
        raise ValueError(
            f"compute_policy_loss: advantages {tuple(advantages.shape)} must be [B] or [B, T] "
            f"with [B, T] = {list(logprobs.shape)}"
        )
    if token_weights is not None and token_weights.shape != logprobs.shape:
        raise ValueError(
            f"compute_policy_loss: token_weights {tuple(token_weights.shape)} must be {tuple(logprobs.shape)}"
        )
    valid = mask != 0
    zeros = torch.zeros(logprobs.shape, dtype=torch.float32, device=logprobs.device)
    lp = torch.where(valid, logprobs.to(torch.float32), zeros)
    old = torch.where(valid, old_logprobs.detach().to(torch.float32), zeros)
    adv = advantages.detach().to(torch.float32)
    adv = torch.where(valid, adv.unsqueeze(-1).expand_as(lp) if adv.dim() == 1 else adv, zeros)
    log_ratio = token_log_ratio(lp, old)

    out = loss_fn.fn(lp, old, adv, valid.to(torch.float32), lower=lower, upper=upper, dual_clip=dual)
    try:
        parts = as_output(out)
    except ValueError as e:
        raise ValueError(f"policy loss {loss_fn.name}: {e}") from None
    for key in ("loss", "ratio", "clipped", "dual_clipped"):
        value = getattr(parts, key)
        if value is not None and (not isinstance(value, Tensor) or value.shape != lp.shape):
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"policy loss {loss_fn.name}: returned {key} {shape}; expected {list(lp.shape)}")
    per_token = parts.loss.to(torch.float32)
    ratio = torch.exp(log_ratio) if parts.ratio is None else parts.ratio
    clipped = torch.zeros_like(valid) if parts.clipped is None else parts.clipped.bool()
    dual_active = torch.zeros_like(valid) if parts.dual_clipped is None else parts.dual_clipped.bool()

    if token_weights is not None:
        per_token = per_token * torch.where(valid, token_weights.detach().to(torch.float32), zeros)
    loss = aggregate_loss(per_token, mask, agg, max_response_length)

    with torch.no_grad():  # one device-to-host copy for all metrics (a GPU sync costs per call)
        count = valid.sum()
        n = count.clamp(min=1).to(torch.float32)
        approx_kl = torch.where(valid, torch.exp(log_ratio) - 1.0 - log_ratio, zeros)
        ratio = ratio.detach().to(torch.float32)
        values = torch.stack(
            [
                (clipped & valid).sum() / n,
                (dual_active & valid).sum() / n,
                approx_kl.sum() / n,
                torch.where(count > 0, torch.where(valid, ratio, zeros).sum() / n, 1.0),
                torch.where(count > 0, torch.where(valid, ratio, zeros).amax(), 1.0)
                if ratio.numel()
                else n.new_tensor(1.0),
            ]
        ).tolist()
        metrics = dict(zip(("clipfrac", "clipfrac/dual", "approx_kl", "ratio/mean", "ratio/max"), values))
    return loss, metrics


def tis_weights(old_logprobs: Tensor, rollout_logprobs: Tensor, cap: float) -> Tensor:
    """Truncated importance-sampling weights ``min(exp(old - rollout), cap)``, detached.

    Corrects the mismatch between the rollout engine's sampling probabilities (vLLM) and the
    learner's ``pi_old`` (Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You
    Off-Policy RL Training", truncated IS with ``C = 2``). Pass the result as ``token_weights``
    to :func:`compute_policy_loss`. Float32 ``[B, T]``; ``cap`` must be finite and > 0.
    """
    if not math.isfinite(cap) or cap <= 0:
        raise ValueError(f"tis_weights: cap must be a finite number > 0, got {cap}")
    if old_logprobs.shape != rollout_logprobs.shape:
        raise ValueError(
            f"tis_weights: old_logprobs {tuple(old_logprobs.shape)} and rollout_logprobs "
            f"{tuple(rollout_logprobs.shape)} must have the same shape"
        )
    diff = old_logprobs.detach().to(torch.float32) - rollout_logprobs.detach().to(torch.float32)
    return torch.exp(diff.clamp(max=math.log(cap)))


BAPO_SHARES: tuple[str, ...] = ("effective", "unclipped")
"""How :func:`bapo_positive_share` counts a token's contribution (``algorithm.bapo_share``)."""


def _bapo_inputs(ratios: Tensor, advantages: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Float32 ``(ratios, advantages, mask)``, all ``[B, T]``, with masked-out positions at ratio 1
    and advantage 0 (so they count for nothing); raises ``ValueError`` on mismatched shapes."""
    if ratios.shape != mask.shape or advantages.shape not in (mask.shape[:1], mask.shape):
        raise ValueError(
            f"bapo: ratios {tuple(ratios.shape)}, advantages {tuple(advantages.shape)} "
            f"and mask {tuple(mask.shape)} do not match"
        )
    m = mask.detach().to(torch.float32)
    r = torch.where(m != 0, ratios.detach().to(torch.float32), torch.ones_like(m))
    adv = advantages.detach().to(torch.float32)
    adv = adv.unsqueeze(-1).expand_as(r) if adv.dim() == 1 else adv
    return r, torch.where(m != 0, adv, torch.zeros_like(adv)), m


def _bapo_positive_share(
    ratios: Tensor,
    adv: Tensor,
    mask: Tensor,
    c_low: float,
    c_high: float,
    reduce_fn: Callable[[Tensor], Tensor] | None,
    share: str = "effective",
    dual_clip: float | None = None,
) -> float:
    """``pos / (pos + neg)`` on prepared inputs (:func:`_bapo_inputs`); 1.0 when both are 0.

    ``effective``: every token, at its effective ratio ``min(r, c_high)`` (``A >= 0``) or
    ``max(r, c_low)`` (``A < 0``). ``unclipped``: only the tokens PPO's clip leaves a gradient,
    ``r <= c_high`` for ``A >= 0`` and ``c_low <= r`` (and ``r <= dual_clip``) for ``A < 0``, at
    their own ratio ``r``."""
    positive = adv >= 0
    if share == "effective":
        contrib = torch.where(positive, ratios.clamp(max=c_high), ratios.clamp(min=c_low)) * adv * mask
    else:
        kept = torch.where(positive, ratios <= c_high, ratios >= c_low)
        if dual_clip is not None:
            kept = kept & (positive | (ratios <= dual_clip))
        contrib = torch.where(kept, ratios * adv * mask, torch.zeros_like(ratios))
    stats = torch.stack([contrib.clamp(min=0).sum(), (-contrib).clamp(min=0).sum()])
    if reduce_fn is not None:
        stats = reduce_fn(stats)
    pos, neg = float(stats[0]), float(stats[1])
    return 1.0 if pos + neg <= 0 else pos / (pos + neg)


def bapo_positive_share(
    ratios: Tensor,
    advantages: Tensor,
    mask: Tensor,
    c_low: float,
    c_high: float,
    *,
    share: str = "effective",
    dual_clip: float | None = None,
    reduce_fn: Callable[[Tensor], Tensor] | None = None,
) -> float:
    """BAPO's positive share ``rho = pos / (pos + neg)`` at the ratio bounds ``[c_low, c_high]``.

    ``ratios`` (``pi_theta / pi_behaviour``) and ``mask`` are ``[B, T]``, ``advantages`` ``[B]`` or
    ``[B, T]``; masked-out tokens count for nothing. Two readings (``share``)::

        effective (the authors' policy_loss.py):
            pos = sum_{A >= 0} min(r, c_high) * A        neg = sum_{A < 0} |max(r, c_low) * A|
        unclipped (the tokens that keep a gradient under PPO's clip):
            pos = sum_{A >= 0, r <= c_high} r * A        neg = sum_{A < 0, c_low <= r} |r * A|

    In ``unclipped`` a negative token with ``r > dual_clip`` (when given; bapo's loss uses 3) is
    left out too: the dual clip takes its gradient. 1.0 when ``pos + neg == 0`` (no signal).
    ``reduce_fn`` maps the 2-vector ``[pos, neg]`` to its global value (e.g. an all-reduce sum).
    A python float; logged by the learner as ``actor/bapo_positive_share``.
    """
    require_choice("bapo share", share, BAPO_SHARES)
    r, adv, m = _bapo_inputs(ratios, advantages, mask)
    with torch.no_grad():
        return _bapo_positive_share(r, adv, m, float(c_low), float(c_high), reduce_fn, share, dual_clip)


def bapo_adapt_bounds(
    ratios: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    c_low: float = 0.6,
    c_high: float = 1.2,
    rho0: float = 0.5,
    delta_low: float = 0.05,
    delta_high: float = 0.1,
    c_low_max: float = 0.9,
    c_high_max: float = 3.0,
    share: str = "effective",
    dual_clip: float | None = None,
    reduce_fn: Callable[[Tensor], Tensor] | None = None,
) -> tuple[float, float]:
    """Adapt BAPO's ratio bounds so positive-advantage tokens carry enough of the loss.

    BAPO (arXiv 2510.18927). ``ratios`` are ``pi_theta / pi_behaviour`` ``[B, T]``, advantages
    ``[B]`` or ``[B, T]``. While the positive share :func:`bapo_positive_share` (reading
    ``share``, ``effective`` or ``unclipped``) is below ``rho0``: raise ``c_low`` by ``delta_low``
    up to ``c_low_max``; once it is there, raise ``c_high`` by ``delta_high`` up to
    ``c_high_max``. Returns the final ``(c_low, c_high)`` as floats (log them); pass them to
    ``compute_policy_loss("bapo", ..., clip_low=c_low, clip_high=c_high)``. No signal
    (``pos + neg == 0``) leaves the bounds as they are. ``reduce_fn`` (optional) maps the
    2-vector ``[pos, neg]`` to its global value (e.g. an all-reduce sum) so that every
    data-parallel rank picks the same bounds; ``dual_clip`` only matters for ``unclipped``.

    Defaults: steps 0.05 / 0.1 (the authors' ``run_bapo_example.sh``; their
    ``bapo_trainer.yaml`` uses 0.05 / 0.05) and maxima 0.9 / 3.0 (their README, "as used in the
    paper"; the yaml has 0.8 / 2.0, the run script 0.95 / 2.0). ``rho0`` is a share in (0, 1);
    the authors' code compares ``pos / neg`` with its target instead (yaml 1, i.e. a share of
    0.5; run script 0.5, a share of 1/3).

    The readings differ in what moving ``c_low`` does. ``effective`` (the authors' code) lifts
    low-ratio negative tokens to ``c_low``, which can only lower the share: on a
    negative-dominated batch ``c_low`` always runs to ``c_low_max`` before ``c_high`` widens.
    ``unclipped`` drops negative tokens below ``c_low`` (as PPO's clip does), so raising it raises
    the share, the README's "filtering excessive low-probability negative tokens".
    """
    for key, val in (
        ("c_low", c_low),
        ("c_high", c_high),
        ("delta_low", delta_low),
        ("delta_high", delta_high),
        ("rho0", rho0),
    ):
        if not math.isfinite(val):
            raise ValueError(f"bapo_adapt_bounds: {key} must be finite, got {val}")
    if not 0 < c_low <= 1 <= c_high:
        raise ValueError(f"bapo_adapt_bounds: need 0 < c_low <= 1 <= c_high, got {c_low}, {c_high}")
    require_choice("bapo share", share, BAPO_SHARES)
    r, adv, m = _bapo_inputs(ratios, advantages, mask)
    with torch.no_grad():
        low, high = float(c_low), float(c_high)

        def measure() -> float:
            return _bapo_positive_share(r, adv, m, low, high, reduce_fn, share, dual_clip)

        rho = measure()
        while delta_low > 0 and rho < rho0 and low < c_low_max:
            low = min(round(low + delta_low, 10), c_low_max)
            rho = measure()
        while delta_high > 0 and rho < rho0 and high < c_high_max:
            high = min(round(high + delta_high, 10), c_high_max)
            rho = measure()
    return low, high
