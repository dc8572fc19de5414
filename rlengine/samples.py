"""From scored groups to the learner's samples: scalar rewards, KL in the reward, advantages.

Pure functions (torch only: no Ray, no model), the counterpart of verl's ``apply_kl_penalty`` and
``compute_advantage``; the trainer calls them in this order::

    set_scalar_rewards(groups, combine, algorithm, max_tokens)   # weighted objectives (+ DAPO shaping)
    samples  = build_samples(groups, step, algorithm.mask_truncated)
    rewards  = episode_rewards(groups) - β · kl_in_reward(samples, ref_logprobs, kind)   # kl_placement: reward
    samples  = with_advantages(samples, advantages(algorithm, rewards, groups, samples))
    samples  = with_proximal_logprobs(samples, learner_logprobs) # stale ones, off_policy_correction: decoupled
    samples  = with_old_logprobs(samples, learner_logprobs)      # ppo_epochs > 1 or mini-batches

The logprobs those steps need come from the learner (the trainer asks for them); everything here
only does arithmetic on what it is given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from rlengine.algorithms import compute_advantages, kl_penalty, overlong_reward_penalty
from rlengine.episode import Group


@dataclass
class Sample:
    """One response as the learner trains on it.

    ``T = len(response_ids)``. Per-token lists are ``[T]``; the learner pads them into ``[B, T]``
    tensors (rlengine/learner/batching.py).
    """

    prompt_ids: list[int]
    """``[P]`` prompt tokens (the context, never in the loss)."""
    response_ids: list[int]
    """``[T]`` response tokens: model tokens and, in a multi-turn episode, tool tokens."""
    advantage: float = 0.0
    """A(y): one scalar, broadcast over the response's loss tokens."""
    rollout_logprobs: list[float] = field(default_factory=list)
    """``[T]`` vLLM's behaviour logprobs (empty when unknown). Used for TIS weights and the
    ``rollout/logprob_diff_*`` metrics."""
    old_logprobs: list[float] | None = None
    """``[T]`` log π_old for the PPO ratio. ``None``: on-policy, the learner uses its own current
    logprobs (ratio 1 on the first pass). Stale samples (carried over, replayed, prefetched) bring
    their behaviour logprobs here."""
    loss_mask: list[int] | None = None
    """``[T]`` 1 for tokens in the loss, 0 for tool tokens or a masked-out response; ``None`` =
    every response token."""
    stale: bool = False
    """Sampled by an older policy version than the one being trained (carried over, replayed,
    prefetched): what ``train/stale_fraction`` counts and the off-policy correction acts on."""
    source: str = "task"
    """The data source the sample comes from: ``task`` (the run's data) or a ``replay.sources``
    name (RECAP). Every source's loss term is aggregated over its own samples, so the update
    minimises Σ_k source_weight_k · L_k; with one source it is the plain loss."""
    source_weight: float = 1.0
    """λ_k of the sample's source (RECAP), the same for every sample of a source; 1 otherwise."""
    supervised: bool = False
    """The response is a reference completion (a supervised source): its loss is the NLL of the
    response tokens, not the policy loss; it has no advantage, old or rollout logprobs."""

    @property
    def loss_tokens(self) -> int:
        """Response tokens that enter the loss."""
        return len(self.response_ids) if self.loss_mask is None else int(sum(self.loss_mask))

    @property
    def length(self) -> int:
        """Prompt plus response tokens (what the forward pass costs)."""
        return len(self.prompt_ids) + len(self.response_ids)


def set_scalar_rewards(
    groups: list[Group],
    combine: Callable[[dict[str, list[float]]], list[float]],
    objectives: list[str],
    algorithm: Any,
    max_tokens: int,
) -> None:
    """Set every episode's ``reward``: ``combine`` (the reward-weighting stage) of its objective
    scores, plus DAPO's overlong shaping (arXiv 2503.14476) when ``algorithm.overlong_shaping``."""
    episodes = [e for g in groups for e in g.episodes]
    if not episodes:
        return
    scalars = combine({k: [e.scores[k] for e in episodes] for k in objectives})
    if algorithm.overlong_shaping:
        lengths = torch.tensor([len(e.token_ids) for e in episodes], dtype=torch.float32)
        penalty = overlong_reward_penalty(lengths, max_tokens, algorithm.overlong_cache)
        scalars = [s + float(p) for s, p in zip(scalars, penalty)]
    for episode, value in zip(episodes, scalars):
        episode.reward = value


def objective_weights(
    combine: Callable[[dict[str, list[float]]], list[float]], objectives: list[str]
) -> dict[str, float]:
    """w_k of every objective under ``combine``: the scalar of a response that scores 1 on
    objective k and 0 on the others."""
    unit = {k: [float(j == i) for j in range(len(objectives))] for i, k in enumerate(objectives)}
    return dict(zip(objectives, combine(unit)))


def build_samples(groups: list[Group], step: int, mask_truncated: bool) -> list[Sample]:
    """One sample per episode, in order. Episodes sampled before policy version ``step`` are stale
    and bring their behaviour logprobs as ``old_logprobs``; tool tokens are masked out; with
    ``mask_truncated`` a response cut at ``rollout.max_tokens`` is masked out whole."""
    samples = []
    for group in groups:
        for episode in group.episodes:
            mask = episode.loss_mask
            if mask_truncated and episode.truncated:
                mask = [0] * len(mask)
            samples.append(
                Sample(
                    prompt_ids=group.prompt_ids,
                    response_ids=episode.token_ids,
                    rollout_logprobs=episode.logprobs,
                    old_logprobs=episode.logprobs if episode.policy_version < step else None,
                    loss_mask=None if all(mask) else mask,
                    stale=episode.policy_version < step,
                )
            )
    return samples


def episode_rewards(groups: list[Group]) -> Tensor:
    """``[N]`` float32 scalar rewards of every episode, in sample order."""
    return torch.tensor([e.reward for g in groups for e in g.episodes], dtype=torch.float32)


def group_ids(groups: list[Group]) -> Tensor:
    """``[N]`` the group (prompt) of every episode, in sample order."""
    return torch.tensor([gi for gi, g in enumerate(groups) for _ in g.episodes], dtype=torch.long)


def kl_in_reward(samples: list[Sample], ref_logprobs: list[list[float]], kind: str) -> Tensor:
    """``[N]`` Σ_t KL_t(π_behaviour || π_ref) of each response (``algorithm.kl_placement: reward``),
    estimated per token with ``kind`` (k1, k2, k3) from the behaviour and reference logprobs."""
    return torch.tensor(
        [
            float(kl_penalty(torch.tensor(s.rollout_logprobs), torch.tensor(ref), kind).sum())
            for s, ref in zip(samples, ref_logprobs)
        ],
        dtype=torch.float32,
    )


def advantages(algorithm: Any, rewards: Tensor, groups: list[Group], samples: Sequence[Sample]) -> Tensor:
    """``[N]`` advantages of ``rewards`` (one per sample) under ``algorithm.advantage``, with the
    groups as baselines and the loss-token counts as whitening weights."""
    lengths = torch.tensor([s.loss_tokens for s in samples], dtype=torch.long)
    return compute_advantages(
        algorithm.advantage, rewards, group_ids(groups), eps=algorithm.eps, lengths=lengths
    )


def objective_advantages(
    algorithm: Any, groups: list[Group], samples: Sequence[Sample], objectives: list[str]
) -> list[Tensor]:
    """Per objective k, every sample's advantage from objective k's scores alone (the same
    estimator and inputs as training)."""
    return [
        advantages(
            algorithm,
            torch.tensor([e.scores[k] for g in groups for e in g.episodes], dtype=torch.float32),
            groups,
            samples,
        )
        for k in objectives
    ]


def with_advantages(samples: list[Sample], values: Sequence[float] | Tensor) -> list[Sample]:
    """New samples carrying ``values`` as their advantages (the inputs are left as they are)."""
    values = values.tolist() if isinstance(values, Tensor) else list(values)
    if len(values) != len(samples):
        raise ValueError(f"{len(values)} advantages for {len(samples)} samples")
    return [dataclasses.replace(s, advantage=float(v)) for s, v in zip(samples, values)]


def needs_old_logprobs(sample: Sample) -> bool:
    """An on-policy policy-gradient sample without old logprobs (a supervised one has no ratio)."""
    return sample.old_logprobs is None and not sample.supervised


def with_old_logprobs(samples: list[Sample], logprobs: list[list[float]]) -> list[Sample]:
    """The on-policy samples (:func:`needs_old_logprobs`) get ``logprobs`` (one list per such
    sample, in order) as their ``old_logprobs``; stale and supervised ones keep theirs."""
    fresh = iter(logprobs)
    return [dataclasses.replace(s, old_logprobs=next(fresh)) if needs_old_logprobs(s) else s for s in samples]


def with_proximal_logprobs(samples: list[Sample], logprobs: list[list[float]]) -> list[Sample]:
    """The stale samples get ``logprobs`` (log π_prox under the current weights, one list per stale
    sample, in order) as their ``old_logprobs``: the decoupled objective's ratio π_θ / π_prox. Their
    behaviour logprobs stay in ``rollout_logprobs`` for the weight min(π_prox / π_behaviour, C)."""
    proximal = iter(logprobs)
    return [dataclasses.replace(s, old_logprobs=next(proximal)) if s.stale else s for s in samples]


def logprob_gap(samples: list[Sample], logprobs: list[list[float]]) -> dict[str, float]:
    """``rollout/logprob_diff_mean`` / ``_max``: |vLLM's behaviour logprob − the learner's| per
    loss token, for on-policy ``samples`` and the learner's ``logprobs`` of them under the same
    weights (the old-logprob pass before the update): the rollout/learner mismatch TIS corrects."""
    gaps = [
        abs(b - a)
        for s, lp in zip(samples, logprobs)
        if s.rollout_logprobs
        for a, b, m in zip(s.rollout_logprobs, lp, s.loss_mask or [1] * len(lp))
        if m
    ]
    if not gaps:
        return {}
    return {"rollout/logprob_diff_mean": sum(gaps) / len(gaps), "rollout/logprob_diff_max": max(gaps)}
