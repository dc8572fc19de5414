"""Replay stages (none / uniform / recent / recap): buffer rules, re-scalarisation, compact
checkpoint state, RECAP's sources and λ on the loss terms (the advantages untouched). The real-stack
runs (BAPO on replayed tokens, RECAP with two other domains, resume) are in tests/test_e2e.py."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from rlengine.config import AlgorithmConfig, load_config
from rlengine.data import make_arithmetic
from rlengine.episode import Episode, Group
from rlengine.errors import ConfigError
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
    assert replay({"name": "recap"}).config.ratio == 0.0
    unused = replay({"name": "recap"})
    unused.observe([group("z", 0, MIXED)], step=1)
    assert len(unused.buffer) == 0  # no self-replay: nothing is stored
    stage = replay({"name": "recap", "window": 2, "ratio": 0.25})
    groups = [group(str(i), 0, [(0.25 * i, 0.5), (1.0, 1.0 / 3.0)]) for i in range(4)]
    stage.observe(groups, step=1)
    assert len(stage.buffer) == 4
    state = stage.state_dict()
    assert (
        state["buffer"]["token_ids"].dtype.name == "int32"
        and state["buffer"]["logprobs"].dtype.name == "float32"
    )
    restored = replay({"name": "recap", "window": 2, "ratio": 0.25})
    restored.load_state_dict(state)
    for a, b in zip(stage.buffer.groups, restored.buffer.groups):
        assert (a.prompt, a.prompt_ids, a.policy_version) == (b.prompt, b.prompt_ids, b.policy_version)
        assert a.episodes == b.episodes  # segments (tokens, logprobs, versions), scores, reward, correct
    assert unpack_groups(pack_groups([], OBJECTIVES)) == []

    small = replay({"name": "uniform", "checkpoint_max_mb": 0.0005})  # ~520 bytes: the newest groups only
    small.observe(groups, step=1)
    with pytest.warns(UserWarning, match="keeps its newest"):
        kept = small.state_dict()
    ids = [row["id"] for row in json.loads(kept["buffer"]["rows"])]
    assert 0 < len(ids) < 4 and ids[-1] == "3"


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
    assert all(
        s.stale and s.old_logprobs == [-0.5] * 3 and s.rollout_logprobs == [-1.0] * 3
        for s in replayed_samples
    )
    assert second["train/stale_fraction"] == 0.5


# Replay on the real stack (BAPO on stale tokens, resume): tests/test_e2e.py.


class TwoObjectiveRewards:
    """``acc`` as :class:`tests.stubs.StubRewards` (response k passes when k < passes(id)); ``short``
    is 1 for the odd responses: summed per-objective GRPO advantages differ from GRPO on the sum."""

    def __init__(self, passes) -> None:
        from tests.stubs import StubRewards

        self.inner = StubRewards(passes)

    def score(self, items: list) -> object:
        result = self.inner.score(items)
        result.scores["short"] = [float(int(it.completion) % 2) for it in items]
        return result

    def close(self) -> None:
        pass


def recap_trainer(tmp_path: Path, *overrides: str, source_rows=None, passes=lambda pid: 2):
    from tests.stubs import stub_trainer

    cfg = load_config(
        None, ["trainer.batch_size=4", "rollout.n=4", "reward.functions=[math_verify]", *overrides]
    )
    rows = [{**r, "prompt": r["problem"], "prompt_ids": [5, 6]} for r in make_arithmetic(40, seed=0)]
    return stub_trainer(
        cfg,
        rows,
        tmp_path,
        objectives=("acc", "short"),
        reward_weights=(1.0, 0.5),
        rewards=TwoObjectiveRewards(passes),
        source_rows=source_rows,
    )


def test_recap_without_sources_trains_exactly_the_plain_update(tmp_path: Path) -> None:
    """RECAP leaves the advantages alone: with no source (one objective, λ = 1) every sample the
    learner gets equals the plain run's, field for field, where the old Σ_k λ_k · w_k · A(r_k)
    differs from GRPO on the weighted sum."""
    from rlengine.algorithms import compute_advantages

    passes = lambda pid: 1 + int(pid.split("/")[-1]) % 3  # noqa: E731
    plain = recap_trainer(tmp_path / "plain", "replay.name=none", passes=passes)
    recap = recap_trainer(tmp_path / "recap", "replay.name=recap", "replay.window=1", passes=passes)
    for _ in range(3):
        plain.step()
        metrics = recap.step()
    assert recap.learner.trained == plain.learner.trained
    assert metrics["replay/task/lambda"] == 1.0 and 0.0 < metrics["replay/task/loss"] < 1.0
    first = plain.learner.trained[0]  # 4 prompts x 4 responses, response k of prompt p in order
    scored = plain.rollouts.rewards.inner.prompt_ids[: len(first)]
    acc = torch.tensor([float(i % 4 < passes(pid)) for i, pid in enumerate(scored)])
    short = torch.tensor([float(i % 2) for i in range(len(first))])
    groups = torch.arange(len(first)) // 4
    summed = (2 / 3) * compute_advantages("grpo", acc, groups) + (1 / 3) * compute_advantages(
        "grpo", short, groups
    )
    assert not torch.allclose(summed, torch.tensor([s.advantage for s in first]), atol=1e-3)


def source_rows() -> dict[str, tuple[list[dict], list[dict]]]:
    rl = [
        {"id": f"gsm/{i}", "problem": f"q{i}", "answer": "1", "prompt": f"q{i}", "prompt_ids": [8, i]}
        for i in range(6)
    ]
    sft = [
        {
            "id": f"sft/{i}",
            "problem": f"p{i}",
            "answer": "r",
            "prompt": f"p{i}",
            "prompt_ids": [9],
            "response_ids": [4] * (i + 1),
        }
        for i in range(5)
    ]
    return {"gsm": (rl[:4], rl[4:]), "sft": (sft[:3], sft[3:])}


SOURCES = (
    "replay.sources=[{name: gsm, kind: rl, data: gsm8k_train, share: 0.5, heldout: 2},"
    " {name: sft, kind: supervised, data: gsm8k_train, answer_field: solution, share: 0.25, heldout: 2}]"
)


def test_recap_mixes_each_source_and_weighs_its_loss_term_by_lambda(tmp_path: Path) -> None:
    """Each step: the task's batch, round(share · B) groups of the RL source (rolled out, scored, GRPO
    advantages in their groups) and reference completions of the supervised source. L_k is measured
    on each objective's fresh data (the task: every group rolled out; the RL source: 1 − mean
    reward; the supervised one: the NLL from the learner), λ = recap_weights of the histories is
    on every sample, the held-out scores come at step 0, and a checkpoint continues the walks."""
    from rlengine.algorithms import compute_advantages
    from rlengine.algorithms.multi_objective import recap_weights

    def passes(pid: str) -> int:  # the source: 1 of 4; the task: 3 of 4 at step 1, then by prompt
        return (
            1
            if pid.startswith("gsm/")
            else (3 if len(t.learner.trained) == 0 else int(pid.split("/")[-1]) % 4)
        )

    overrides = ["replay.name=recap", "replay.window=1", "learner.ppo_epochs=2", SOURCES]
    t = recap_trainer(tmp_path / "a", *overrides, source_rows=source_rows(), passes=passes)
    first = t.step()
    samples = t.learner.trained[0]
    assert [s.source for s in samples] == ["task"] * 16 + ["gsm"] * 8 + ["sft"]
    gsm, sft = samples[16:24], samples[24]
    rewards = torch.tensor([2 / 3, 1 / 3, 0.0, 1 / 3] * 2)  # the run's weights (2/3 acc, 1/3 short)
    assert [s.advantage for s in gsm] == pytest.approx(
        compute_advantages("grpo", rewards, torch.arange(8) // 4).tolist()
    )
    assert (
        not any(s.supervised for s in samples[:24])
        and sft.supervised
        and sft.response_ids in [[4] * (i + 1) for i in range(3)]
    )
    assert (
        sft.prompt_ids == [9] and sft.advantage == 0.0 and sft.old_logprobs is None
    )  # no ratio: no old pass
    assert all(s.old_logprobs == [-0.5] * 3 for s in samples[:24])
    # the learner: held-out NLL (2 rows), this step's NLL (1 row), then the old logprobs of the 24 PG samples
    assert t.learner.logprob_calls == [(2, "policy"), (1, "policy"), (24, "policy")]
    assert first["replay/gsm/heldout_accuracy"] == 0.25 and first["replay/sft/heldout_nll"] == 0.5
    losses = (first["replay/task/loss"], first["replay/gsm/loss"], first["replay/sft/loss"])
    assert losses == pytest.approx((1 / 3, 2 / 3, 0.5))  # 1 - mean reward, 1 - mean reward, NLL
    tokens = sum(s.loss_tokens for s in samples)
    assert first["replay/sft/share"] == pytest.approx(len(sft.response_ids) / tokens) and first[
        "replay/task/share"
    ] == pytest.approx(48 / tokens)
    assert all(first[f"replay/{k}/lambda"] == 1.0 for k in ("task", "gsm", "sft"))  # fewer than 2W steps

    state = t.state_dict()
    resumed = recap_trainer(tmp_path / "b", *overrides, source_rows=source_rows(), passes=passes)
    resumed.learner.trained = t.learner.trained  # the same reward rule as the first run's step 2
    resumed.load_state_dict({**state, "step": 1})
    second = t.step()
    again = resumed.step()
    assert [s.prompt_ids for s in resumed.learner.trained[2]] == [s.prompt_ids for s in t.learner.trained[1]]
    assert {k: v for k, v in again.items() if k.startswith("replay/")} == {
        k: v for k, v in second.items() if k.startswith("replay/")
    }
    assert "replay/gsm/heldout_accuracy" not in second  # eval_every 5
    history = {k: [first[f"replay/{k}/loss"], second[f"replay/{k}/loss"]] for k in ("task", "gsm", "sft")}
    assert history["task"][1] != history["task"][0] and history["sft"] == [0.5, 0.5]
    lambdas = dict(zip(history, recap_weights(list(history.values()), window=1)))
    assert len(set(lambdas.values())) > 1 and sum(lambdas.values()) == pytest.approx(3.0)
    assert {k: second[f"replay/{k}/lambda"] for k in history} == pytest.approx(lambdas)
    assert {s.source: s.source_weight for s in t.learner.trained[1]} == pytest.approx(lambdas)
    assert [r["id"] for r in t.replay.datasets["gsm"].next_batch(2)] != []  # the walk goes on past an epoch
