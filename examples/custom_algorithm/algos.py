"""Two algorithm plug-ins: a length-weighted group baseline and a KL-Cov policy loss.

Named in config.yaml as ``algorithm.advantage: algos.py:opo_advantages`` and
``algorithm.loss: algos.py:kl_cov_loss``. ``rlengine config check`` imports this file, checks
both signatures and calls each function once on tiny tensors; the learner ranks load it again in
their own processes. Both are pure torch and reuse the public helpers of ``rlengine.algorithms``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlengine.algorithms import (
    PolicyLossOutput,
    clipped_surrogate,
    group_constant,
    group_sum,
    token_log_ratio,
)

# --------------------------------------------------------------------------- advantage estimator


def opo_advantages(rewards: Tensor, group_index: Tensor, *, lengths: Tensor, eps: float) -> Tensor:
    """OPO's optimal baseline (On-Policy RL with Optimal reward baseline, arXiv 2505.23585).

    ``A_i = R_i - b_g`` with the length-weighted group mean ``b_g = sum_j l_j R_j / sum_j l_j``
    over the responses ``j`` of response ``i``'s group. The variance-minimising baseline weights
    each reward by the squared norm of its sequence's score function; OPO takes that norm as
    proportional to the response length ``l``, so long responses (which carry more gradient) pull
    the baseline towards their reward. No std scaling (unlike ``grpo``).

    ``rewards`` float32 ``[N]``, ``group_index`` int64 ``[N]`` (0..G-1), ``lengths`` float32 ``[N]``
    token counts (an empty response counts as 1 token, so a group of empty responses falls back to
    the plain mean); returns float32 ``[N]``. A group whose rewards are all equal, and a group of
    one, gets exactly 0. ``eps`` is unused.
    """
    weights = lengths.clamp(min=1.0)
    baseline = group_sum(weights * rewards, group_index) / group_sum(weights, group_index)
    advantages = rewards - baseline
    return torch.where(group_constant(rewards, group_index), torch.zeros_like(advantages), advantages)


opo_advantages.group_baseline = True  # compares responses of one prompt: config check wants rollout.n >= 2


# --------------------------------------------------------------------------- policy loss

KL_COV_FRACTION = 2e-3
"""k: share of a micro-batch's loss tokens that get the KL penalty (the highest covariances); at
least one token. verl's default ``kl_cov_ratio`` is 2e-4; larger values hold back more tokens."""
KL_COV_COEF = 1.0
"""beta: weight of the penalty ``|log pi_theta - log pi_old|`` on the selected tokens."""


def kl_cov_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    lower: float,
    upper: float,
    dual_clip: float | None,
) -> PolicyLossOutput:
    """KL-Cov (The Entropy Mechanism of RL for Reasoning Language Models, arXiv 2505.22617).

    Entropy collapses because the tokens whose log-probability and advantage covary most get the
    largest updates. Per loss token ``t`` of the micro-batch::

        cov_t = (log pi(y_t) - mean log pi) * (A_t - mean A)       (means over the loss tokens)
        loss_t = ppo_t + beta * |log pi(y_t) - log pi_old(y_t)|  if cov_t is among the top k share
        loss_t = ppo_t                                           otherwise

    ``ppo_t`` is the built-in clipped surrogate between the ratio bounds ``lower`` / ``upper``
    (with ``dual_clip`` when given). The paper puts the penalty on the plain ``r * A`` surrogate;
    here it is added to the clipped one, so every other token keeps PPO's trust region. The
    penalty is 0 (and has no gradient) while the policy is unchanged, ``r = 1``: it acts from the
    second optimizer step on a rollout batch (``learner.mini_batch_size`` or ``ppo_epochs > 1``).

    All tensors float32 ``[B, T]``, 0 where ``mask`` is 0; returns the per-token loss with the
    ratio and clipped tokens of the surrogate for the logged metrics. Covariances are taken over
    the micro-batch the learner passes in.
    """
    surrogate = clipped_surrogate(
        torch.exp(token_log_ratio(logprobs, old_logprobs)), advantages, lower, upper, dual_clip
    )
    valid = mask > 0
    count = int(valid.sum())
    if count == 0 or KL_COV_COEF == 0:
        return surrogate
    with torch.no_grad():
        lp = logprobs.detach()
        lp_mean = lp[valid].mean()
        adv_mean = advantages[valid].mean()
        cov = torch.where(valid, (lp - lp_mean) * (advantages - adv_mean), float("-inf"))
        k = max(1, int(KL_COV_FRACTION * count))
        selected = torch.zeros(cov.numel(), dtype=torch.bool, device=cov.device)
        selected[cov.flatten().topk(k).indices] = True
        selected = selected.view_as(cov) & valid
    penalty = KL_COV_COEF * (logprobs - old_logprobs).abs()
    loss = surrogate.loss + torch.where(selected, penalty, torch.zeros_like(penalty))
    return PolicyLossOutput(loss, surrogate.ratio, surrogate.clipped, surrogate.dual_clipped)


kl_cov_loss.default_clips = (0.2, 0.28)  # clip_low / clip_high epsilons when the config leaves them null
