"""Dynamic multi-objective reward weighting (arXiv 2509.11452): pure functions.

Objectives are maximised. A point is one vector of objective values (e.g. mean accuracy,
conciseness and format score on a validation slice).

- :func:`hypervolume`: the volume dominated by a set of points and bounded below by a reference
  point, HV(P) = vol(∪_{p∈P} [ref, p]). Exact, by slicing along the first objective (fine for
  the few objectives and few hundred points a Pareto buffer holds).
- :func:`hypervolume_contribution`: HVC = HV(P ∪ {v}) − HV(P).
- :func:`hypervolume_multiplier`: m = 0.5 + 1.5·tanh(HVC), the reward scale of the next step.
- :func:`scaled_reference` and :func:`scaled_contribution`: the same on objectives measured in
  units of a per-objective scale s_k (HVC in units of Π s_k), with the reference one unit below
  the first point, so that HVC is of order 1 when the front moves by about one unit.
- :func:`gdpo_advantages`: GDPO's advantages (arXiv 2601.05242), each objective normalised within
  its group, the weighted sum normalised over the batch.
- :func:`influence_scores`: s_k = Σ_j ⟨g_k, g_j⟩ from the gradients' Gram matrix.
- :func:`mirror_descent_weights`: w ← softmax(log w + η·s/λ).
- :func:`recap_weights`: RECAP's objective weights λ = K·softmax(s/T) from each objective's loss
  history (arXiv 2510.21978).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from rlengine.algorithms.advantages import compute_advantages, whiten

Point = Sequence[float]


def pareto_front(points: Sequence[Point]) -> list[tuple[float, ...]]:
    """The points no other point dominates (≥ in every objective, > in one); duplicates kept once."""
    unique = list(dict.fromkeys(tuple(float(x) for x in p) for p in points))
    return [p for p in unique if not any(q != p and all(a >= b for a, b in zip(q, p)) for q in unique)]


def hypervolume(points: Sequence[Point], reference: Point) -> float:
    """Volume dominated by ``points`` above ``reference`` (points not above it in every objective
    contribute only their part above it; a point at or below it in some objective adds nothing)."""
    ref = tuple(float(r) for r in reference)
    clipped = [tuple(max(float(x), r) for x, r in zip(p, ref)) for p in points]
    boxes = [p for p in pareto_front(clipped) if all(x > r for x, r in zip(p, ref))]
    return _hv(boxes, ref)


def _hv(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    if not points:
        return 0.0
    if len(ref) == 1:
        return max(p[0] for p in points) - ref[0]
    # Slice along the first objective: between consecutive first coordinates, the dominated region
    # is the (d-1)-dimensional hypervolume of the points that reach at least that far.
    levels = sorted({p[0] for p in points}, reverse=True)
    volume = 0.0
    for i, level in enumerate(levels):
        lower = levels[i + 1] if i + 1 < len(levels) else ref[0]
        reaching = [p[1:] for p in points if p[0] >= level]
        volume += (level - lower) * _hv(pareto_front(reaching), ref[1:])
    return volume


def hypervolume_contribution(buffer: Sequence[Point], point: Point, reference: Point) -> float:
    """HVC = HV(buffer ∪ {point}) − HV(buffer): how much ``point`` pushes the front out (≥ 0)."""
    return max(0.0, hypervolume([*buffer, point], reference) - hypervolume(buffer, reference))


def hypervolume_multiplier(contribution: float) -> float:
    """m = 0.5 + 1.5·tanh(HVC): 0.5 when the step added nothing to the front, up to 2."""
    return 0.5 + 1.5 * math.tanh(contribution)


def scaled_reference(first: Point, scales: Sequence[float]) -> list[float]:
    """The reference point of a scaled hypervolume: ``first`` one unit (``scales[k]``) below in
    every objective, so that the first point spans one unit box and a later point that improves
    only some objectives still adds volume."""
    if len(first) != len(scales) or any(s <= 0 for s in scales):
        raise ValueError(
            f"scaled_reference: need one scale > 0 per objective, got {list(scales)} for {list(first)}"
        )
    return [float(x) - float(s) for x, s in zip(first, scales)]


def scaled_contribution(
    buffer: Sequence[Point], point: Point, reference: Point, scales: Sequence[float]
) -> float:
    """HVC of ``point`` with every objective divided by its scale s_k first: the plain contribution
    divided by Π s_k (a point that beats the front by one scale unit in one objective, and ties it
    in the others, adds about one unit per unit of the others' extent)."""
    if len(reference) != len(scales) or any(s <= 0 for s in scales):
        raise ValueError(f"scaled_contribution: need one scale > 0 per objective, got {list(scales)}")

    def unit(p: Point) -> list[float]:
        return [float(x) / float(s) for x, s in zip(p, scales)]

    return hypervolume_contribution([unit(p) for p in buffer], unit(point), unit(reference))


def scaled_hypervolume(points: Sequence[Point], reference: Point, scales: Sequence[float]) -> float:
    """HV of ``points`` above ``reference`` in units of Π s_k (see :func:`scaled_contribution`)."""
    volume = hypervolume(points, reference)
    for s in scales:
        volume /= float(s)
    return volume


def gdpo_advantages(
    scores: Sequence[Sequence[float]],
    weights: Sequence[float],
    group_index: Sequence[int],
    *,
    eps: float = 1e-6,
    batch_normalize: bool = True,
) -> list[float]:
    """GDPO (arXiv 2601.05242): group reward-decoupled normalisation.

    ``scores[k][i]`` is objective k's score of response i, ``group_index[i]`` its prompt. For every
    objective, A_k = (r_k − mean_g r_k) / (std_g r_k + ε) within each group (GRPO's normalisation:
    unbiased std, an all-equal group gets 0); then S = Σ_k w_k A_k, and with ``batch_normalize``
    (the paper's last step, kept by TRL's ``normalize_then_sum``) Â = (S − mean S) / (std S + ε)
    over the batch, each response counted once (0 everywhere when S is constant). Returns one
    advantage per response.
    """
    if len(scores) != len(weights):
        raise ValueError(f"gdpo_advantages: {len(scores)} objectives but {len(weights)} weights")
    count = len(group_index)
    if count == 0:
        return []
    index = torch.as_tensor(list(group_index), dtype=torch.long)
    total = torch.zeros(count, dtype=torch.float32)
    for w, values in zip(weights, scores):
        if len(values) != count:
            raise ValueError(f"gdpo_advantages: {len(values)} scores for {count} responses")
        total += float(w) * compute_advantages(
            "grpo", torch.tensor(list(values), dtype=torch.float32), index, eps=eps
        )
    if batch_normalize:
        total = whiten(total, torch.ones(count), eps)
    return total.tolist()


def mirror_descent_weights(
    weights: Sequence[float], influence: Sequence[float], lr: float, lam: float
) -> list[float]:
    """One exponentiated-gradient step on the simplex: w_k ∝ w_k · exp(η·s_k/λ).

    ``influence`` s_k = Σ_j ⟨g_k, g_j⟩ (objective k's policy gradient against the sum of all);
    ``lr`` η is the policy's current learning rate and ``lam`` λ the temperature (≈ 1e-5 … 1e-4).
    Computed in log space (shifted by the maximum), so large η·s/λ do not overflow.
    """
    if len(weights) != len(influence):
        raise ValueError(f"{len(weights)} weights but {len(influence)} influence scores")
    if lam <= 0:
        raise ValueError(f"lambda must be > 0, got {lam}")
    logits = [math.log(max(w, 1e-300)) + lr * s / lam for w, s in zip(weights, influence)]
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    total = sum(exps)
    return [e / total for e in exps]


def influence_scores(gram: Sequence[Sequence[float]]) -> list[float]:
    """s_k = Σ_j ⟨g_k, g_j⟩ from the Gram matrix G_kj = ⟨g_k, g_j⟩ of the per-objective gradients."""
    return [float(sum(row)) for row in gram]


def recap_weights(losses: Sequence[Sequence[float]], window: int, temperature: float = 5.0) -> list[float]:
    """RECAP objective weights (arXiv 2510.21978) from each objective's recent losses.

    ``losses[k]`` is objective k's loss per step, oldest first (for an RL reward in [0, 1]:
    L = 1 − mean reward, so it is positive). Over the last 2W steps::

        μ_k = mean of the last W      μ̃_k = mean of the W before      σ_k = std of the last W
        c_k = μ_k / μ̃_k  (convergence)      i_k = σ_k / (μ_k + μ̃_k)  (instability)
        λ = K · softmax((c + i) / T)

    An objective whose loss fell fast (c < 1) and steadily gets less weight; one that stalls
    (c ≈ 1) or is volatile gets more. The weights sum to K, so all ones means "unchanged".
    With fewer than 2W steps of history every weight is 1. ε = 1e-8 guards the ratios (0/0 reads
    as c = 1); σ is the population standard deviation.
    """
    if window < 1 or temperature <= 0:
        raise ValueError(f"recap_weights: need window >= 1 and temperature > 0, got {window}, {temperature}")
    count = len(losses)
    if count == 0:
        return []
    if any(len(history) < 2 * window for history in losses):
        return [1.0] * count
    eps = 1e-8
    scores = []
    for history in losses:
        recent, before = list(history[-window:]), list(history[-2 * window : -window])
        mu, mu_before = sum(recent) / window, sum(before) / window
        sigma = math.sqrt(sum((x - mu) ** 2 for x in recent) / window)
        scores.append((mu + eps) / (mu_before + eps) + sigma / (mu + mu_before + eps))
    top = max(scores)
    exps = [math.exp((x - top) / temperature) for x in scores]
    return [count * e / sum(exps) for e in exps]
