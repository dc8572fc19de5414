"""What the learner does with samples an older policy produced, and what it reports about them:
the decoupled objective's behaviour weights (AReaL, arXiv 2505.24298) and the staleness and
vLLM/learner-gap metrics of a micro-batch."""

from __future__ import annotations

from typing import Any

import torch

from rlengine.algorithms import tis_weights
from rlengine.learner.batching import MicroBatch
from rlengine.learner.metrics import Metrics


def off_policy_weights(batch: MicroBatch, algo: Any) -> torch.Tensor:
    """``[B, T]`` the decoupled objective's behaviour weights min(π_prox / π_behaviour, C) (AReaL,
    arXiv 2505.24298) with π_prox the samples' ``old_logprobs`` (recomputed by the trainer with the
    current weights) and π_behaviour vLLM's ``rollout_logprobs``; 1 where a sample has no behaviour
    logprobs or is not stale. Detached."""
    rows = (batch.stale & batch.has_rollout & batch.has_old).unsqueeze(-1)
    weights = tis_weights(batch.old_logprobs, batch.rollout_logprobs, algo.off_policy_cap)
    return torch.where(rows, weights, 1.0)


def add_off_policy_metrics(metrics: Metrics, batch: MicroBatch, logprobs: torch.Tensor, algo: Any) -> None:
    """``actor/stale_ratio_deviation`` (|π_θ/π_behaviour − 1| over stale tokens),
    ``actor/behaviour_weight_mean`` (decoupled correction) and ``rollout/logprob_diff_*`` (the
    vLLM/learner gap of on-policy samples, same weights) of one micro-batch; ``logprobs`` ``[B, T]``
    detached, under the current weights."""
    mask = batch.mask
    stale = mask * (batch.stale & batch.has_rollout).unsqueeze(-1)
    if batch.stale_tokens > 0:  # stale samples: how far the policy moved since vLLM sampled them
        stale_tokens = stale.sum().clamp(min=1)
        ratio = torch.exp((logprobs - batch.rollout_logprobs).clamp(-20.0, 20.0))
        metrics.add(
            "actor/stale_ratio_deviation",
            ((ratio - 1).abs() * stale).sum() / stale_tokens,
            batch.stale_tokens,
        )
        if algo.off_policy_correction == "decoupled":
            behaviour = off_policy_weights(batch, algo)
            metrics.add(
                "actor/behaviour_weight_mean",
                (behaviour * stale).sum() / stale_tokens,
                batch.stale_tokens,
            )
    if batch.rollout_tokens > 0:  # |vLLM - learner| logprob gap of on-policy samples (same weights)
        valid = (mask > 0) & batch.has_rollout.unsqueeze(-1) & ~batch.has_old.unsqueeze(-1)
        gap = torch.where(valid, (logprobs - batch.rollout_logprobs).abs(), 0.0)
        metrics.add("rollout/logprob_diff_mean", gap.sum() / batch.rollout_tokens, batch.rollout_tokens)
        metrics.max("rollout/logprob_diff_max", gap.max())
