"""Replay stages (none / uniform / recap): buffer rules, re-scalarisation, RECAP advantages,
compact checkpoint state. The real-stack run (BAPO on replayed tokens, resume) is in tests/test_e2e.py."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from rlengine.config import AlgorithmConfig, load_config
from rlengine.episode import Episode, Group
from rlengine.errors import ConfigError
from rlengine.samples import Sample
from rlengine.stages import StageContext, build_stage, build_stage_config
from rlengine.stages.replay import ReplayBuffer, pack_groups, unpack_groups

OBJECTIVES = ["acc", "short"]


def group(tag: str, version: int, scores: list[tuple[float, float]]) -> Group:
    episodes = [
        Episode.single(
            f"{tag}{i}",
            [7, i, 9],
            [-0.5, -1.25, -0.125],
            "stop",
            version,
            scores=dict(zip(OBJECTIVES, s)),
            correct=s[0] > 0.5,
        )
        for i, s in enumerate(scores)
    ]
    for e in episodes:
        e.reward = sum(e.scores.values())
    return Group({"id": tag, "prompt": tag, "answer": "1", "prompt_ids": [1, 2]}, [1, 2], episodes)


MIXED = [(1.0, 0.0), (0.0, 0.0)]  # informative: the rewards differ
FLAT = [(1.0, 1.0), (1.0, 1.0)]


def replay(raw: dict, **context):
    defaults = dict(
        rows=[], seed=0, objectives=list(OBJECTIVES), reward_weights=[1.0, 1.0], algorithm=AlgorithmConfig()
    )
    return build_stage("replay", build_stage_config("replay", raw), StageContext(**{**defaults, **context}))


def test_buffer_capacity_fifo_eviction_and_staleness() -> None:
    buffer = ReplayBuffer(capacity=3)
    buffer.add([group(str(i), version=i, scores=MIXED) for i in range(5)])
    assert [g.prompt["id"] for g in buffer.groups] == ["2", "3", "4"]  # the oldest are evicted first
    buffer.drop_stale(step=6, max_staleness=3)
    assert [g.prompt["id"] for g in buffer.groups] == ["3", "4"]  # 6 - 2 > 3
    sample = buffer.sample(5, random.Random(0))
    assert sorted(g.prompt["id"] for g in sample) == ["3", "4"]  # distinct, no more than held


def test_uniform_reserve_mix_observe_and_store_rule() -> None:
    stage = replay({"name": "uniform", "ratio": 0.5, "max_staleness": 2, "capacity": 10})
    assert stage.reserve(batch_size=4, step=0) == 0  # empty buffer: the whole batch is fresh
    fresh = [group("a", 0, MIXED), group("b", 0, FLAT), group("c", 0, MIXED)]
    assert stage.mix(fresh, 0) == fresh
    metrics = stage.observe(fresh, step=1)
    assert metrics == {
        "replay/size": 2.0,
        "replay/used": 0.0,
        "replay/mean_staleness": 0.0,
        "replay/max_staleness": 0.0,
    }
    assert stage.reserve(batch_size=4, step=1) == 2
    new = [group("d", 1, MIXED), group("e", 1, MIXED)]
    batch = stage.mix(new, 1)
    assert batch[:2] == new and sorted(g.prompt["id"] for g in batch[2:]) == ["a", "c"]
    metrics = stage.observe(batch, step=2)  # only the fresh groups are stored, not the replayed ones
    assert metrics["replay/used"] == 2.0 and metrics["replay/mean_staleness"] == 1.0
    assert [g.prompt["id"] for g in stage.buffer.groups] == ["a", "c", "d", "e"]
    assert stage.reserve(batch_size=4, step=3) == 2 and len(stage.buffer) == 2  # a, c are 3 versions old
    everything = replay({"name": "uniform", "store": "all"})
    everything.observe([group("f", 0, FLAT)], step=1)
    assert len(everything.buffer) == 1
    with pytest.raises(ConfigError, match=r"^replay.ratio: expected float in \[0, 1\), got 1.0$"):
        replay({"name": "uniform", "ratio": 1.0})


def test_state_is_compact_arrays_and_round_trips_exactly() -> None:
    stage = replay({"name": "recap", "window": 2})
    groups = [group(str(i), 0, [(0.25 * i, 0.5), (1.0, 1.0 / 3.0)]) for i in range(4)]
    stage.observe(groups, step=1)
    assert len(stage.buffer) == 4
    state = stage.state_dict()
    assert (
        state["buffer"]["token_ids"].dtype.name == "int32"
        and state["buffer"]["logprobs"].dtype.name == "float32"
    )
    restored = replay({"name": "recap", "window": 2})
    restored.load_state_dict(state)
    for a, b in zip(stage.buffer.groups, restored.buffer.groups):
        assert (a.prompt, a.prompt_ids, a.policy_version) == (b.prompt, b.prompt_ids, b.policy_version)
        assert a.episodes == b.episodes  # segments (tokens, logprobs, versions), scores, reward, correct
    assert {k: list(v) for k, v in restored.losses.items()} == {k: list(v) for k, v in stage.losses.items()}
    assert unpack_groups(pack_groups([], OBJECTIVES)) == []

    small = replay({"name": "uniform", "checkpoint_max_mb": 0.0005})  # ~520 bytes: the newest groups only
    small.observe(groups, step=1)
    with pytest.warns(UserWarning, match="keeps its newest"):
        kept = small.state_dict()
    ids = [row["id"] for row in json.loads(kept["buffer"]["rows"])]
    assert 0 < len(ids) < 4 and ids[-1] == "3"


def test_recap_sets_weighted_per_objective_advantages() -> None:
    from rlengine.algorithms import compute_advantages
    from rlengine.algorithms.multi_objective import recap_weights

    stage = replay({"name": "recap", "window": 1}, objective_weights=lambda: {"acc": 1.0, "short": 0.5})
    batch = [
        group("a", 0, [(1.0, 0.0), (0.0, 1.0), (1.0, 1.0)]),
        group("b", 0, [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)]),
    ]
    stage.observe([group("x", 0, [(0.2, 0.9)])], step=1)  # losses: acc 0.8, short 0.1
    stage.observe([group("y", 0, [(0.6, 0.8)])], step=2)  # losses: acc 0.4, short 0.2
    lambdas = recap_weights([[0.8, 0.4], [0.1, 0.2]], window=1)
    assert lambdas[1] > lambdas[0]  # short's loss doubled: it gets the weight
    samples = [Sample([1, 2], e.token_ids, advantage=9.0) for g in batch for e in g.episodes]
    values, metrics = stage.before_update(batch, samples)
    index = torch.tensor([0, 0, 0, 1, 1, 1])
    per = [
        compute_advantages("grpo", torch.tensor([e.scores[k] for g in batch for e in g.episodes]), index)
        for k in OBJECTIVES
    ]
    expected = lambdas[0] * 1.0 * per[0] + lambdas[1] * 0.5 * per[1]
    assert values == pytest.approx(expected.tolist())
    assert [s.advantage for s in samples] == [9.0] * 6  # the hook returns advantages; samples stay as they were
    assert metrics == pytest.approx({"replay/weight/acc": lambdas[0], "replay/weight/short": lambdas[1]})


def test_recap_rejects_reward_terms_outside_the_objectives() -> None:
    with pytest.raises(ConfigError, match="overlong_shaping"):
        load_config(
            None, ["replay.name=recap", "algorithm.overlong_shaping=true", "algorithm.overlong_cache=4"]
        )


def test_trainer_rolls_out_fewer_prompts_and_rescalarises_replayed_groups(tmp_path: Path) -> None:
    from tests.test_filter import filter_trainer

    t = filter_trainer(
        tmp_path,
        lambda pid: 1 + int(pid.split("/")[-1]) % 3,
        "replay.name=uniform",
        "replay.ratio=0.5",
        "replay.store=all",
    )
    first = t.step()
    assert t.pool.calls == [4] and first["replay/used"] == 0.0 and first["replay/size"] > 0
    t.reward_weighting.weights["acc"] = 3.0  # the weights move between steps
    replayed: list[Group] = []
    mix = t.replay.mix

    def recording_mix(groups: list[Group], step: int) -> list[Group]:
        batch = mix(groups, step)
        replayed.extend(batch[len(groups) :])
        return batch

    t.replay.mix = recording_mix
    second = t.step()
    assert t.pool.calls == [4, 2]  # half of the batch of 4 comes from the buffer
    assert second["replay/used"] == 2.0 and second["rollouts/generated"] == 2 * 4
    assert len(t.learner.trained[-1]) == 4 * 4  # still a full batch of groups
    assert len(replayed) == 2 and all(g.policy_version == 0 for g in replayed)
    assert any(e.scores["acc"] > 0 for g in replayed for e in g.episodes)
    for g in replayed:  # re-scalarised with the current weight
        assert [e.reward for e in g.episodes] == [3.0 * e.scores["acc"] for e in g.episodes]
    replayed_samples = t.learner.trained[-1][-2 * 4 :]  # stale: π_prox recomputed (-0.5), behaviour kept (-1)
    assert all(s.stale and s.old_logprobs == [-0.5] * 3 and s.rollout_logprobs == [-1.0] * 3 for s in replayed_samples)
    assert second["train/stale_fraction"] == 0.5


# Replay on the real stack (BAPO on stale tokens, resume): tests/test_e2e.py.
