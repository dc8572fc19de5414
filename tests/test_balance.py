"""Load balancing over rollout engines (rlengine/rollout/balance.py): pure logic. The real pool
applies it in tests/test_scale_out.py (two engines, results in request order)."""

from __future__ import annotations

import pytest

from rlengine.rollout import balance


def test_longest_first_evens_out_unequal_prompts_better_than_a_contiguous_split():
    costs = [10.0, 10.0, 10.0, 10.0, 1.0, 1.0, 1.0, 1.0]
    plan = balance.assign(costs, [1.0, 1.0])
    assert sorted(i for part in plan for i in part) == list(range(8))
    assert balance.finish_times(costs, [1.0, 1.0], plan) == [22.0, 22.0]
    even = balance.contiguous(8, 2)
    assert even == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert max(balance.finish_times(costs, [1.0, 1.0], even)) == 40.0


def test_a_twice_as_fast_engine_gets_twice_the_work():
    costs = [1.0] * 12
    plan = balance.assign(costs, [2.0, 1.0])
    assert [len(part) for part in plan] == [8, 4]
    assert balance.finish_times(costs, [2.0, 1.0], plan) == [4.0, 4.0]


def test_equal_engines_and_prompts_split_evenly_and_deterministically():
    plan = balance.assign([3.0] * 7, [1.0, 1.0, 1.0])
    assert plan == balance.assign([3.0] * 7, [1.0, 1.0, 1.0])
    assert sorted(len(p) for p in plan) == [2, 2, 3]
    assert all(part == sorted(part) for part in plan)


def test_fewer_prompts_than_engines_leaves_engines_idle_and_bad_speeds_are_named():
    assert balance.assign([5.0], [1.0, 1.0]) == [[0], []]
    assert balance.contiguous(1, 2) == [[0], []]
    assert balance.contiguous(0, 2) == [[], []]
    with pytest.raises(ValueError, match="speeds must be positive"):
        balance.assign([1.0], [1.0, 0.0])


def test_costs_and_speed_average():
    assert balance.prompt_costs([10, 20], n=4, expected_response_tokens=5) == [60.0, 100.0]
    assert balance.updated_speed(None, 100, 2.0) == 50.0
    assert balance.updated_speed(50.0, 300, 2.0, momentum=0.5) == 100.0


def test_the_longest_prompt_is_placed_first():
    """Placing short prompts first would leave the long one to tip an engine over (6 vs 4)."""
    costs = [1.0, 1.0, 1.0, 1.0, 4.0]
    plan = balance.assign(costs, [1.0, 1.0])
    assert plan == [[4], [0, 1, 2, 3]]
    assert max(balance.finish_times(costs, [1.0, 1.0], plan)) == 4.0
