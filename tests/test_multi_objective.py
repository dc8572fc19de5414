"""Multi-objective weighting functions against hand-computed values (arXiv 2509.11452)."""

from __future__ import annotations

import math
import random

import pytest

from rlengine.algorithms.multi_objective import (
    gdpo_advantages,
    hypervolume,
    hypervolume_contribution,
    hypervolume_multiplier,
    influence_scores,
    mirror_descent_weights,
    pareto_front,
    scaled_contribution,
    scaled_hypervolume,
    scaled_reference,
)


def test_pareto_front_drops_dominated_points() -> None:
    assert sorted(pareto_front([(1, 3), (2, 2), (1, 1), (2, 2), (3, 1), (0, 3)])) == [(1, 3), (2, 2), (3, 1)]


def test_hypervolume_2d_by_hand() -> None:
    # staircase: 1x3 + 1x2 + 1x1 = 6; a dominated point changes nothing
    assert hypervolume([(1, 3), (2, 2), (3, 1)], (0, 0)) == pytest.approx(6.0)
    assert hypervolume([(1, 3), (2, 2), (3, 1), (1, 1)], (0, 0)) == pytest.approx(6.0)
    # reference (0.5, 0.5): 0.5x2.5 + 1x1.5 + 1x0.5 = 3.25
    assert hypervolume([(1, 3), (2, 2), (3, 1)], (0.5, 0.5)) == pytest.approx(3.25)
    # a point below the reference in one objective adds nothing
    assert hypervolume([(2, 0.2)], (0.5, 0.5)) == 0.0
    assert hypervolume([], (0, 0)) == 0.0


def test_hypervolume_3d_by_hand() -> None:
    assert hypervolume([(1, 2, 3)], (0, 0, 0)) == pytest.approx(6.0)
    # two boxes of volume 2 overlapping in a unit cube: 2 + 2 - 1
    assert hypervolume([(2, 1, 1), (1, 2, 1)], (0, 0, 0)) == pytest.approx(3.0)
    # three: 3 x 2 - 3 x 1 + 1 (inclusion-exclusion)
    assert hypervolume([(2, 1, 1), (1, 2, 1), (1, 1, 2)], (0, 0, 0)) == pytest.approx(4.0)
    # reference (0.5, 0.5, 0.5) on one box (1, 2, 3): 0.5 x 1.5 x 2.5
    assert hypervolume([(1, 2, 3)], (0.5, 0.5, 0.5)) == pytest.approx(1.875)


def test_hypervolume_matches_a_monte_carlo_estimate() -> None:
    rng = random.Random(0)
    points = [tuple(rng.random() for _ in range(3)) for _ in range(12)]
    samples = [tuple(rng.random() for _ in range(3)) for _ in range(40_000)]
    inside = sum(any(all(s <= p for s, p in zip(x, q)) for q in points) for x in samples) / len(samples)
    assert hypervolume(points, (0, 0, 0)) == pytest.approx(inside, abs=0.01)


def test_contribution_and_multiplier() -> None:
    buffer = [(1, 3), (3, 1)]  # HV 1x3 + 2x1 = 5
    assert hypervolume_contribution(buffer, (2, 2), (0, 0)) == pytest.approx(1.0)  # 6 - 5
    assert hypervolume_contribution(buffer, (1, 1), (0, 0)) == 0.0  # dominated
    assert hypervolume_multiplier(0.0) == 0.5
    assert hypervolume_multiplier(1.0) == pytest.approx(0.5 + 1.5 * math.tanh(1.0))
    assert hypervolume_multiplier(50.0) == pytest.approx(2.0)


def test_scaled_contribution_is_of_order_one_where_the_raw_one_is_tiny() -> None:
    """Three objectives in [0, 1] that each moved by 0.02 beyond the first point: the raw HVC is
    8e-6 (m ≈ 0.5 whatever happens); in units of scale 0.02, with the reference one unit below the
    first point, the same move is 2^3 - 1 = 7 units."""
    first, moved = (0.3, 0.5, 0.4), (0.32, 0.52, 0.42)
    assert hypervolume_contribution([], moved, first) == pytest.approx(0.02**3)
    scales = [0.02, 0.02, 0.02]
    reference = scaled_reference(first, scales)
    assert reference == pytest.approx([0.28, 0.48, 0.38])
    assert scaled_hypervolume([first], reference, scales) == pytest.approx(1.0)
    assert scaled_contribution([first], moved, reference, scales) == pytest.approx(7.0)
    assert hypervolume_multiplier(scaled_contribution([first], moved, reference, scales)) > 1.9
    # one objective one unit up, the others level: one more unit box; a step back: nothing
    assert scaled_contribution([first], (0.32, 0.5, 0.4), reference, scales) == pytest.approx(1.0)
    assert scaled_contribution([first], (0.29, 0.5, 0.4), reference, scales) == 0.0
    # half a unit up in one objective, half a unit down in another: 0.5 x 0.5 x 1 (the reference's
    # margin lets a trade-off count; with the first point as the reference it would add nothing)
    assert scaled_contribution([first], (0.31, 0.49, 0.4), reference, scales) == pytest.approx(0.25)
    assert hypervolume_contribution([first], (0.31, 0.49, 0.4), first) == 0.0
    with pytest.raises(ValueError, match="one scale > 0 per objective"):
        scaled_reference(first, [0.1, 0.0, 0.1])


def test_gdpo_advantages_by_hand() -> None:
    # group 0: a = (1, 0), b = (0, 1). The unbiased std of (1, 0) is 1/√2, so A_a = ±0.5·√2 = ±1/√2
    # and A_b = ∓1/√2; weights (0.75, 0.25): S = ±(0.75 - 0.25)/√2. Group 1 is constant: S = (0, 0).
    half = 0.5 / math.sqrt(2)
    raw = gdpo_advantages(
        [[1, 0, 1, 1], [0, 1, 0, 0]], [0.75, 0.25], [0, 0, 1, 1], eps=0.0, batch_normalize=False
    )
    assert raw == pytest.approx([half, -half, 0.0, 0.0], rel=1e-6)
    # over the batch: mean 0, unbiased std sqrt(2·half² / 3)
    normalised = gdpo_advantages([[1, 0, 1, 1], [0, 1, 0, 0]], [0.75, 0.25], [0, 0, 1, 1], eps=0.0)
    assert normalised == pytest.approx([x / math.sqrt(2 * half**2 / 3) for x in raw], rel=1e-6)
    assert gdpo_advantages([[1, 1]], [1.0], [0, 0]) == [0.0, 0.0]  # nothing varies: no signal, no NaN
    assert gdpo_advantages([[]], [1.0], []) == []
    with pytest.raises(ValueError, match="2 objectives but 1 weights"):
        gdpo_advantages([[1], [0]], [1.0], [0])


def test_mirror_descent_step_by_hand() -> None:
    # w = (0.5, 0.5), s = (1, -1), eta / lambda = 1: w ∝ 0.5 e^1, 0.5 e^-1
    w = mirror_descent_weights([0.5, 0.5], [1.0, -1.0], lr=1e-5, lam=1e-5)
    assert w == pytest.approx([math.e / (math.e + 1 / math.e), (1 / math.e) / (math.e + 1 / math.e)])
    # no influence, no change
    assert mirror_descent_weights([0.2, 0.3, 0.5], [0.0, 0.0, 0.0], lr=1e-3, lam=1e-4) == pytest.approx(
        [0.2, 0.3, 0.5]
    )


def test_mirror_descent_stays_on_the_simplex() -> None:
    rng = random.Random(1)
    weights = [1 / 3] * 3
    for _ in range(200):
        weights = mirror_descent_weights(
            weights, [rng.uniform(-1e3, 1e3) for _ in range(3)], lr=1e-5, lam=1e-5
        )
        assert sum(weights) == pytest.approx(1.0) and all(w >= 0 for w in weights)
    with pytest.raises(ValueError, match="lambda"):
        mirror_descent_weights([1.0], [0.0], lr=1e-5, lam=0)


def test_influence_scores_are_row_sums_of_the_gram_matrix() -> None:
    g = [[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]]
    gram = [[sum(a * b for a, b in zip(x, y)) for y in g] for x in g]
    # row sums: <g0, g0+g1+g2> = <(1,0),(1,1)> = 1; <g1,(1,1)> = 2; <g2,(1,1)> = -1
    assert influence_scores(gram) == [1.0, 2.0, -1.0]


def test_recap_weights_match_a_hand_computed_history() -> None:
    from rlengine.algorithms.multi_objective import recap_weights

    # W = 2. Objective a: the loss halved (mu 0.5, mu_before 1.0, sigma 0) -> c 0.5, i 0, s 0.5.
    # Objective b: the loss rose and wobbles (mu 0.5, mu_before 0.4, sigma 0.1) -> c 1.25,
    # i 0.1 / 0.9, s 1.3611. lambda = 2 * softmax(s / 5) = (0.914101, 1.085899).
    history = [[9.0, 1.0, 1.0, 0.5, 0.5], [9.0, 0.4, 0.4, 0.4, 0.6]]  # only the last 2W count
    weights = recap_weights(history, window=2, temperature=5.0)
    assert weights == pytest.approx([0.914101, 1.085899], abs=1e-6)
    assert sum(weights) == pytest.approx(2.0)
    assert recap_weights([[1.0, 1.0, 1.0], [0.5] * 4], window=2) == [1.0, 1.0]  # not 2W steps yet
    assert recap_weights([[0.0] * 4, [0.0] * 4], window=2) == pytest.approx([1.0, 1.0])  # 0/0 reads as c = 1
    sharper = recap_weights(history, window=2, temperature=0.5)
    assert sharper[1] > weights[1]  # a lower temperature moves more weight to the lagging objective
    with pytest.raises(ValueError, match="window >= 1"):
        recap_weights(history, window=0)
