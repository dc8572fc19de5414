"""Dynamic multi-objective reward weighting (arXiv 2509.11452): pure functions.

Objectives are maximised. A point is one vector of objective values (e.g. mean accuracy,
conciseness and format score on a validation slice).

- :func:`hypervolume`: the volume dominated by a set of points and bounded below by a reference
  point, HV(P) = vol(∪_{p∈P} [ref, p]). Exact, by slicing along the first objective (fine for
  the few objectives and few hundred points a Pareto buffer holds).
- :func:`hypervolume_contribution`: HVC = HV(P ∪ {v}) − HV(P).
- :func:`hypervolume_multiplier`: m = 0.5 + 1.5·tanh(HVC), the reward scale of the next step.
- :func:`influence_scores`: s_k = Σ_j ⟨g_k, g_j⟩ from the gradients' Gram matrix.
- :func:`mirror_descent_weights`: w ← softmax(log w + η·s/λ).
- :func:`recap_weights`: RECAP's objective weights λ = K·softmax(s/T) from each objective's loss
  history (arXiv 2510.21978).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
