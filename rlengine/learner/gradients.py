"""Per-objective policy gradients on a learner rank, for gradient-based reward weighting
(``reward_weighting.name: gradient``, arXiv 2509.11452).

For each objective k the gradient g_k of the update's own policy loss (the same ratio, TIS weights
and step clip bounds as :meth:`LearnerRank.policy_loss` and :meth:`LearnerRank.step_clip`; the KL
and entropy terms, which do not depend on the objective, are left out) under objective k's
advantages is taken on the chosen transformer blocks (``layers``: the last N, or a list of block
ids); the rank returns the Gram matrix G_kj = ⟨g_k, g_j⟩, summed over ranks. No optimizer state
changes: gradients are taken with ``torch.autograd.grad`` through the bare module, so nothing
reaches ``.grad`` or DeepSpeed's gradient buffers (the engine's forward hooks would start ZeRO's
gradient reduction).
"""

from __future__ import annotations

import re
import time
from typing import Any

import torch

from rlengine.algorithms import sequence_weights
from rlengine.samples import Sample

LearnerRank = Any
"""A :class:`rlengine.learner.rank.LearnerRank` (not imported: the rank imports this module)."""


def last_blocks(rank: LearnerRank, layers: int | list[int]) -> list[torch.nn.Parameter]:
    """Trainable parameters of the chosen transformer blocks: ``layers`` an int N, the last N
    blocks (0 = every parameter); a list, the blocks with those ids (0-based, as in the
    parameter names ``...layers.<id>...``)."""
    return chosen_parameters(list(rank.engine.module.model.named_parameters()), layers)


def chosen_parameters(
    named: list[tuple[str, torch.nn.Parameter]], layers: int | list[int]
) -> list[torch.nn.Parameter]:
    """The trainable parameters of ``named`` in the blocks ``layers`` chooses (see :func:`last_blocks`)."""
    named = [(n, p) for n, p in named if p.requires_grad]
    if isinstance(layers, int) and layers == 0:
        return [p for _, p in named]
    index = {n: int(m.group(1)) for n, _ in named if (m := re.search(r"\.layers\.(\d+)\.", n))}
    if not index:
        raise ValueError("reward_weighting.layers: the model has no '.layers.N.' parameters; use 0 (all)")
    count = max(index.values()) + 1
    if isinstance(layers, int):
        wanted = set(range(max(0, count - layers), count))
    else:
        missing = sorted(set(layers) - set(index.values()))
        if not layers or missing:
            raise ValueError(
                f"reward_weighting.layers: block ids {missing or layers} are not blocks of this model, "
                f"which has blocks 0..{count - 1}"
            )
        wanted = set(layers)
    return [p for n, p in named if index.get(n, -1) in wanted]


def objective_gradients(
    rank: LearnerRank,
    samples: list[Sample],
    micro_batches: list[list[int]],
    denominator: float,
    advantages: list[list[float]],
    layers: int | list[int],
) -> dict:
    """Gram matrix of the per-objective policy gradients g_k (``advantages[k]``: one per sample) on
    the ``layers`` blocks (:func:`last_blocks`), summed over ranks; with the current learning rate
    and the seconds taken. Every rank calls it with its micro-batches of the step (``denominator``: the step's
    aggregation denominator over all ranks)."""
    import torch.distributed as dist

    start = time.perf_counter()
    params = last_blocks(rank, layers)
    size = sum(int(getattr(p, "ds_numel", p.numel())) for p in params)
    flat = torch.zeros(len(advantages), size, device=rank.device, dtype=torch.float32)
    rank.engine.train()
    clip = rank.step_clip(samples, micro_batches)  # BAPO's adapted bounds, as the update uses
    # ZeRO-3 gathers and releases each block's parameters in module hooks that only a backward
    # pass reaching the first block completes, so there the gradient is taken for every parameter
    # and the chosen ones are kept
    wrt = last_blocks(rank, 0) if rank.opts.zero_stage == 3 else params
    for indices in micro_batches:
        _add_micro_batch(rank, samples, indices, denominator, advantages, clip, wrt, params, flat)
    dist.all_reduce(flat)  # each rank's loss is its share of the global one: the sum is the gradient
    gram = flat @ flat.T
    return {
        "gram": gram.tolist(),
        "lr": float(rank.scheduler.get_last_lr()[0]),
        "seconds": time.perf_counter() - start,
    }


def _add_micro_batch(
    rank: LearnerRank,
    samples: list[Sample],
    indices: list[int],
    denominator: float,
    advantages: list[list[float]],
    clip: tuple[float, float],
    wrt: list[torch.nn.Parameter],
    params: list[torch.nn.Parameter],
    flat: torch.Tensor,
) -> None:
    """Add one micro-batch's per-objective gradients (taken for ``wrt``, kept for ``params``) to
    the rows of ``flat``."""
    zero3 = rank.opts.zero_stage == 3
    batch = rank.micro_batch(samples, indices)
    share = float(sequence_weights(torch.tensor(batch.loss_counts), rank.algo.agg).sum()) / max(
        denominator, 1e-8
    )
    logprobs = None
    for k, per_sample in enumerate(advantages):
        if logprobs is None or zero3:  # ZeRO-3's backward hooks hold for one backward pass per forward
            # the module itself, not the engine: the engine's forward hooks start ZeRO's gradient reduction
            logprobs, _ = rank.response_logprobs(rank.engine.module, batch, with_entropy=False)
        adv = torch.tensor([per_sample[i] for i in indices] or [0.0], device=rank.device)
        loss, _ = rank.policy_loss(batch, logprobs, adv, clip)
        last = k == len(advantages) - 1
        grads = torch.autograd.grad(loss * share, wrt, retain_graph=not (last or zero3), allow_unused=True)
        kept = {id(p): g for p, g in zip(wrt, grads)}
        flat[k] += torch.cat(
            [
                (
                    kept[id(p)]
                    if kept[id(p)] is not None
                    else torch.zeros(p.ds_shape if hasattr(p, "ds_shape") else p.shape, device=rank.device)
                )
                .reshape(-1)
                .float()
                for p in params
            ]
        )
