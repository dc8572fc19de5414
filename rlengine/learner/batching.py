"""How a rollout batch becomes the learner's work: mini-batches, ranks, micro-batches, tensors.

Pure functions (torch only, no DeepSpeed, no Ray). The driver plans once, so every rank runs the
same number of micro-batches per optimizer step (ZeRO collectives must line up):

* responses are split into mini-batches (``learner.mini_batch_size``; one optimizer step each);
* each mini-batch is spread over ranks, balanced by tokens;
* each rank's share is cut into micro-batches of at most ``learner.micro_batch_tokens`` tokens,
  sorted by length so padding is small. A micro-batch is either right-padded rows (no attention
  mask is needed: with causal attention a real token never sees the padding after it, and
  PyTorch's SDPA runs its causal flash kernel) or, with ``packed=True``, all sequences in one row
  with ``position_ids`` restarting at 0 per sequence (varlen attention, no padding at all).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from rlengine.algorithms.losses import sequence_weights
from rlengine.samples import Sample

Plan = list[list[list[list[int]]]]
"""``plan[rank][optimizer_step]`` = that rank's micro-batches (lists of sample indices; [] = padding)."""


def prompt_groups(samples: list[Sample]) -> list[int]:
    """A group id per sample, numbered in order of first appearance: samples with the same prompt
    share one."""
    ids: dict[tuple[int, ...], int] = {}
    return [ids.setdefault(tuple(s.prompt_ids), len(ids)) for s in samples]


def planning_lengths(samples: list[Sample], groups: list[int] | None = None) -> list[int]:
    """Tokens each sample costs the learner: prompt + response, or with ``groups`` (the
    shared-prefix layout, :func:`prompt_groups`) its response plus its share of the prompt (the
    prompt is computed once for all its responses)."""
    if groups is None:
        return [s.length for s in samples]
    counts = Counter(groups)
    return [len(s.response_ids) + -(-len(s.prompt_ids) // counts[g]) for s, g in zip(samples, groups)]


def pack_micro_batches(
    indices: list[int],
    lengths: list[int],
    token_budget: int,
    *,
    packed: bool = False,
    groups: list[int] | None = None,
) -> list[list[int]]:
    """Greedy length-sorted packing so that each micro-batch costs at most ``token_budget`` tokens:
    ``rows * longest`` when padded, ``sum(lengths)`` when packed. A sample longer than the budget
    gets a micro-batch of its own.

    With ``groups`` (the shared-prefix layout: one row per prompt, rows padded to the longest),
    a group's responses stay together, groups are taken shortest first, and a micro-batch costs
    ``rows * longest row``. Sorting responses by length alone would scatter every group over all
    micro-batches: its prompt recomputed in each, and rows padded to the longest."""
    if groups is not None:
        return _pack_groups(indices, lengths, token_budget, groups)
    order = sorted(indices, key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = used = 0
    for i in order:
        cost = (len(current) + 1) * max(longest, lengths[i]) if not packed else used + lengths[i]
        if current and cost > token_budget:
            batches.append(current)
            current, longest, used = [], 0, 0
        current.append(i)
        longest, used = max(longest, lengths[i]), used + lengths[i]
    if current:
        batches.append(current)
    return batches


def _pack_groups(
    indices: list[int], lengths: list[int], token_budget: int, groups: list[int]
) -> list[list[int]]:
    members: dict[int, list[int]] = {}
    for i in sorted(indices, key=lambda i: lengths[i]):
        members.setdefault(groups[i], []).append(i)
    batches: list[list[int]] = []
    current: list[int] = []
    rows: dict[int, int] = {}  # group -> its row's length in the current micro-batch
    for group in sorted(members, key=lambda g: (sum(lengths[i] for i in members[g]), g)):
        for i in members[group]:
            trial = {**rows, group: rows.get(group, 0) + lengths[i]}
            if current and len(trial) * max(trial.values()) > token_budget:
                batches.append(current)
                current, trial = [], {group: lengths[i]}
            current.append(i)
            rows = trial
    if current:
        batches.append(current)
    return batches


def split_over_ranks(indices: list[int], lengths: list[int], ranks: int) -> list[list[int]]:
    """Longest-first assignment to the rank with the fewest tokens so far."""
    shares: list[list[int]] = [[] for _ in range(ranks)]
    load = [0] * ranks
    for i in sorted(indices, key=lambda i: -lengths[i]):
        r = load.index(min(load))
        shares[r].append(i)
        load[r] += lengths[i]
    return shares


def plan_updates(
    lengths: list[int],
    *,
    ranks: int,
    mini_batch_size: int | None,
    ppo_epochs: int,
    token_budget: int,
    seed: int,
    packed: bool = False,
    groups: list[int] | None = None,
) -> Plan:
    """The micro-batches of every rank for every optimizer step of ``ppo_epochs`` passes
    (``groups``: prompt group ids for the shared-prefix layout, see :func:`pack_micro_batches`)."""
    count = len(lengths)
    size = mini_batch_size or count
    rng = random.Random(seed)
    plan: Plan = [[] for _ in range(ranks)]
    for epoch in range(ppo_epochs):
        order = list(range(count))
        if epoch > 0 or mini_batch_size:
            rng.shuffle(order)
        for start in range(0, count, size):
            mini = order[start : start + size]
            per_rank = [
                pack_micro_batches(share, lengths, token_budget, packed=packed, groups=groups)
                if share
                else []
                for share in split_over_ranks(mini, lengths, ranks)
            ]
            steps = max(1, max(len(p) for p in per_rank))
            for r in range(ranks):
                plan[r].append(per_rank[r] + [[] for _ in range(steps - len(per_rank[r]))])
    return plan


def step_denominators(samples: list[Sample], plan: Plan, agg: str) -> list[float]:
    """The aggregation denominator of every optimizer step, summed over all ranks' micro-batches
    (see :func:`rlengine.algorithms.sequence_weights`)."""
    result = []
    for step in range(len(plan[0])):
        indices = [i for rank_plan in plan for micro in rank_plan[step] for i in micro]
        counts = torch.tensor([samples[i].loss_tokens for i in indices], dtype=torch.float32)
        result.append(float(sequence_weights(counts, agg).sum()))
    return result


def source_scales(samples: list[Sample], plan: Plan, agg: str) -> list[dict[str, float]]:
    """Per optimizer step, each data source's loss scale D / D_k: D the step's aggregation
    denominator, D_k the part of it from source k's samples (:attr:`Sample.source`).

    A row's loss is scaled by ``source_weight · D / D_k``, so the step's loss, aggregated as usual
    over all its rows, is Σ_k λ_k · L_k with every L_k aggregated (``agg``) over source k alone,
    RECAP's weighted sum of per-objective losses. With one source the scale is exactly 1.
    """
    result = []
    for step in range(len(plan[0])):
        indices = [i for rank_plan in plan for micro in rank_plan[step] for i in micro]
        counts = torch.tensor([samples[i].loss_tokens for i in indices], dtype=torch.float32)
        weights = sequence_weights(counts, agg).tolist()
        parts: dict[str, float] = {}
        for i, weight in zip(indices, weights):
            parts[samples[i].source] = parts.get(samples[i].source, 0.0) + weight
        total = sum(weights)
        result.append({k: total / v if v > 0 else 0.0 for k, v in parts.items()} if len(parts) > 1 else {})
    return result


def subset_share(counts: list[int], selected: list[bool], agg: str) -> float:
    """The selected rows' part of a micro-batch's aggregation denominator (``sequence_weights``).

    :func:`aggregate_loss` over the selected rows alone, times this, is their contribution to the
    aggregate over all rows: tokens for ``token_mean``, non-empty rows for ``seq_mean_*``, and 1 for
    ``seq_mean_token_sum_norm``, whose denominator counts every row whatever the mask."""
    every = torch.tensor(counts, dtype=torch.float32)
    chosen = every * torch.tensor(selected, dtype=torch.float32)
    total = float(sequence_weights(every, agg).sum())
    return float(sequence_weights(chosen, agg).sum()) / total if total > 0 else 0.0


def row_scales(samples: list[Sample], indices: list[int], scales: dict[str, float]) -> Tensor | None:
    """``[B]`` the loss scale ``source_weight · D / D_k`` of each row (:func:`source_scales`); None
    when every row's is 1 (the plain loss, untouched)."""
    values = [samples[i].source_weight * scales.get(samples[i].source, 1.0) for i in indices]
    return None if all(v == 1.0 for v in values) else torch.tensor(values, dtype=torch.float32)


@dataclass
class MicroBatch:
    """One micro-batch as tensors. The loss works on ``[B, T]`` response-token tensors (``B``
    samples, ``T`` the longest response); the model sees ``input_ids`` and computes logits only at
    ``positions`` (the ``N`` positions whose next token is a response token)."""

    input_ids: Tensor
    """``[B, width]`` right-padded rows, ``[1, total]`` when packed, ``[prompts, width]`` with a
    shared prefix."""
    position_ids: Tensor | None
    """``[1, total]`` restarting at 0 for each packed sequence, ``[rows, width]`` for shared-prefix
    rows; None when padded."""
    attention_mask: Tensor | None
    """``[rows, 1, width, width]`` boolean (True = may attend) for shared-prefix rows; else None
    (causal attention, or varlen detected from ``position_ids``)."""
    positions: Tensor
    """``[N]`` indices into ``input_ids.view(-1)`` of the positions predicting response tokens."""
    targets: Tensor
    """``[N]`` the response tokens."""
    rows: Tensor
    """``[N]`` sample of each response token (row of the ``[B, T]`` layout)."""
    cols: Tensor
    """``[N]`` index of each response token within its response."""
    mask: Tensor
    """``[B, T]`` 1 for tokens in the loss."""
    rollout_logprobs: Tensor
    """``[B, T]`` vLLM's behaviour logprobs (0 where unknown)."""
    old_logprobs: Tensor
    """``[B, T]`` given old logprobs (rows with ``has_old``)."""
    has_old: Tensor
    """``[B]`` whether the sample brought ``old_logprobs`` (else the current policy's are used)."""
    has_rollout: Tensor
    """``[B]`` whether the sample brought rollout logprobs."""
    stale: Tensor
    """``[B]`` whether an older policy sampled it (:attr:`Sample.stale`)."""
    advantages: Tensor
    """``[B]`` one advantage per sample."""
    lengths: list[int]
    """Response length of every sample."""
    loss_counts: list[int]
    """Response tokens of every sample that enter the loss (host-side, so no device sync is needed)."""
    rollout_tokens: int
    """Loss tokens of the on-policy samples (no ``old_logprobs``) that brought rollout logprobs
    (host-side): where the learner and vLLM held the same weights."""
    stale_tokens: int = 0
    """Loss tokens of the stale samples (host-side)."""
    supervised: Tensor | None = None
    """``[B]`` whether the response is a reference completion (NLL, not the policy loss); None when
    the micro-batch has none."""
    scale: Tensor | None = None
    """``[B]`` each row's loss scale for this optimizer step (:func:`source_scales`); None: all 1."""

    def to(self, device: torch.device) -> MicroBatch:
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            moved[f.name] = value.to(device, non_blocking=True) if isinstance(value, Tensor) else value
        return MicroBatch(**moved)

    def to_rows(self, flat: Tensor) -> Tensor:
        """``[N]`` per-token values -> ``[B, T]`` (zeros elsewhere), keeping the gradient."""
        out = flat.new_zeros(self.mask.shape)
        return out.index_put((self.rows, self.cols), flat)


def _padded_layout(samples: list[Sample], pad_id: int) -> tuple:
    """One right-padded row per sample."""
    seqs = [s.prompt_ids + s.response_ids for s in samples]
    width = max(len(q) for q in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for i, q in enumerate(seqs):
        input_ids[i, : len(q)] = torch.tensor(q, dtype=torch.long)
    predict = [_predicting(i * width, len(s.prompt_ids), len(s.response_ids)) for i, s in enumerate(samples)]
    return input_ids, None, None, predict


def _packed_layout(samples: list[Sample]) -> tuple:
    """All sequences in one row; position ids restart at 0 for each (varlen attention)."""
    seqs = [s.prompt_ids + s.response_ids for s in samples]
    input_ids = torch.tensor([[t for q in seqs for t in q]], dtype=torch.long)
    position_ids = torch.cat([torch.arange(len(q)) for q in seqs]).unsqueeze(0)
    starts = [0] + torch.tensor([len(q) for q in seqs[:-1]], dtype=torch.long).cumsum(0).tolist()
    predict = [
        _predicting(start, len(s.prompt_ids), len(s.response_ids)) for start, s in zip(starts, samples)
    ]
    return input_ids, position_ids, None, predict


def _shared_prefix_layout(samples: list[Sample], pad_id: int) -> tuple:
    """One row per distinct prompt: the prompt once, then each of its responses. A tree attention
    mask lets every response see the prompt and itself only, and position ids restart after the
    prompt for every response, so each response is computed exactly as if it were alone. A group's
    prompt is computed once instead of once per response."""
    row_of = prompt_groups(samples)  # one row per group, in the same order
    groups: dict[int, list[int]] = {}
    for i, row in enumerate(row_of):
        groups.setdefault(row, []).append(i)
    rows, predict = [], [torch.zeros(0, dtype=torch.long)] * len(samples)
    for members in groups.values():
        prompt = samples[members[0]].prompt_ids
        tokens, positions, segments = list(prompt), list(range(len(prompt))), [0] * len(prompt)
        for k, i in enumerate(members, start=1):
            response = samples[i].response_ids
            start = len(tokens)
            tokens += response
            positions += range(len(prompt), len(prompt) + len(response))
            segments += [k] * len(response)
            # the first response token is predicted at the prompt's last position, the rest in-segment
            predict[i] = torch.tensor([len(prompt) - 1] + list(range(start, start + len(response) - 1)))[
                : len(response)
            ]
        rows.append((tokens, positions, segments))
    width = max(len(t) for t, _, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    segment = torch.full((len(rows), width), -1, dtype=torch.long)  # -1 = padding
    for r, (tokens, positions, segments) in enumerate(rows):
        input_ids[r, : len(tokens)] = torch.tensor(tokens)
        position_ids[r, : len(tokens)] = torch.tensor(positions)
        segment[r, : len(tokens)] = torch.tensor(segments)
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    query, key = segment.unsqueeze(-1), segment.unsqueeze(-2)
    visible = causal & (key >= 0) & ((key == 0) | (key == query))
    visible |= torch.eye(width, dtype=torch.bool)  # padding attends to itself: no empty softmax rows
    predict = [p + row_of[i] * width for i, p in enumerate(predict)]
    return input_ids, position_ids, visible.unsqueeze(1), predict


def _predicting(start: int, n_prompt: int, n_response: int) -> Tensor:
    """Flat positions predicting a response laid out right after its prompt from ``start``."""
    return torch.arange(n_response) + start + n_prompt - 1


def make_micro_batch(
    samples: list[Sample], pad_id: int, *, packed: bool = False, shared_prefix: bool = False
) -> MicroBatch:
    """Tensors for ``samples`` (rlengine/samples.py: ``Sample``).

    Layout: right-padded rows (default), one packed row (``packed``), or one row per prompt with
    its responses behind it (``shared_prefix``)."""
    if shared_prefix:
        input_ids, position_ids, attention_mask, predict = _shared_prefix_layout(samples, pad_id)
    elif packed:
        input_ids, position_ids, attention_mask, predict = _packed_layout(samples)
    else:
        input_ids, position_ids, attention_mask, predict = _padded_layout(samples, pad_id)
    lengths = [len(s.response_ids) for s in samples]
    count, resp_width = len(samples), max(1, max(lengths))
    targets, rows, cols = [], [], []
    mask = torch.zeros((count, resp_width))
    rollout_lp = torch.zeros((count, resp_width))
    old_lp = torch.zeros((count, resp_width))
    has_old = torch.zeros(count, dtype=torch.bool)
    has_rollout = torch.zeros(count, dtype=torch.bool)
    for i, s in enumerate(samples):
        n_resp = lengths[i]
        if not n_resp:
            continue
        targets.append(torch.tensor(s.response_ids, dtype=torch.long))
        rows.append(torch.full((n_resp,), i, dtype=torch.long))
        cols.append(torch.arange(n_resp))
        mask[i, :n_resp] = 1.0 if s.loss_mask is None else torch.tensor(s.loss_mask, dtype=torch.float32)
        if s.rollout_logprobs:
            rollout_lp[i, :n_resp] = torch.tensor(s.rollout_logprobs, dtype=torch.float32)
            has_rollout[i] = True
        if s.old_logprobs is not None:
            old_lp[i, :n_resp] = torch.tensor(s.old_logprobs, dtype=torch.float32)
            has_old[i] = True
    empty = torch.zeros(0, dtype=torch.long)
    return MicroBatch(
        input_ids=input_ids,
        position_ids=position_ids,
        attention_mask=attention_mask,
        positions=torch.cat(predict) if predict else empty,
        targets=torch.cat(targets) if targets else empty,
        rows=torch.cat(rows) if rows else empty,
        cols=torch.cat(cols) if cols else empty,
        mask=mask,
        rollout_logprobs=rollout_lp,
        old_logprobs=old_lp,
        has_old=has_old,
        has_rollout=has_rollout,
        stale=torch.tensor([s.stale for s in samples], dtype=torch.bool),
        advantages=torch.tensor([s.advantage for s in samples], dtype=torch.float32),
        lengths=lengths,
        loss_counts=[s.loss_tokens for s in samples],
        rollout_tokens=sum(s.loss_tokens for s in samples if s.rollout_logprobs and s.old_logprobs is None),
        stale_tokens=sum(s.loss_tokens for s in samples if s.stale),
        supervised=torch.tensor([s.supervised for s in samples])
        if any(s.supervised for s in samples)
        else None,
    )
