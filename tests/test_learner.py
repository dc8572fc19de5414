"""The real DeepSpeed learner (Ray actors, gloo): learning direction, planning, weight sync."""

from __future__ import annotations

import os
import random

import pytest
import torch

from rlengine.algorithms import compute_advantages
from rlengine.learner.batching import pack_micro_batches, plan_updates, split_over_ranks
from rlengine.samples import Sample
from tests.conftest import learner_group, local_learner

TARGET = 1234  # the token the reward asks for
PROMPT = [1, 523, 88, 2]


def test_pack_micro_batches_respects_budget() -> None:
    lengths = [5, 30, 7, 12, 40, 3]
    batches = pack_micro_batches(list(range(6)), lengths, token_budget=40)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for b in batches:
        assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 40


def test_plan_gives_every_rank_the_same_number_of_micro_batches() -> None:
    lengths = [random.Random(i).randint(1, 50) for i in range(13)]
    plan = plan_updates(lengths, ranks=3, mini_batch_size=5, ppo_epochs=2, token_budget=60, seed=0)
    assert len({len(p) for p in plan}) == 1 and len(plan[0]) == 2 * 3
    for step in range(len(plan[0])):
        assert len({len(p[step]) for p in plan}) == 1
    for epoch in range(2):
        seen = [i for p in plan for step in p[epoch * 3 : (epoch + 1) * 3] for micro in step for i in micro]
        assert sorted(seen) == list(range(13))
    shares = split_over_ranks(list(range(13)), lengths, 3)
    loads = [sum(lengths[i] for i in s) for s in shares]
    assert max(loads) - min(loads) <= max(lengths)


def reward_batch(
    seed: int, groups: int = 4, size: int = 4, length: int = 6
) -> tuple[list[Sample], torch.Tensor]:
    """Random responses; some contain the target token. Reward = 1 if it appears."""
    rng = random.Random(seed)
    samples, rewards, index = [], [], []
    for g in range(groups):
        for i in range(size):
            response = [rng.randint(3000, 9000) for _ in range(length)]
            if i % 2 == 0:
                response[rng.randrange(length)] = TARGET
            samples.append(Sample(PROMPT, response))
            rewards.append(1.0 if TARGET in response else 0.0)
            index.append(g)
    return samples, compute_advantages("grpo", torch.tensor(rewards), torch.tensor(index))


def uneven_batch() -> list[Sample]:
    """8 responses of unequal length (so the aggregation weights matter) with fixed advantages."""
    rng = random.Random(3)
    return [
        Sample(PROMPT, [rng.randint(3000, 9000) for _ in range(rng.randint(2, 12))], advantage=1.0 if i % 2 else -0.5)
        for i in range(8)
    ]


def target_logprob(learner) -> float:
    probe = [Sample(PROMPT + [5000] * k, [TARGET]) for k in range(3)]
    return sum(lp[0] for lp in learner.compute_logprobs(probe)) / 3


@pytest.mark.slow
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_grpo_steps_move_probability_the_way_the_reward_says(
    tiny_model_dir, sign: float
) -> None:
    """Rewarding the target token raises its probability; flipping the advantage lowers it.

    Run with both signs so a sign error anywhere (advantage, loss, optimizer) fails one case.
    """
    learner = local_learner(tiny_model_dir, "learner.lr=3.0e-3")
    try:
        before = target_logprob(learner)
        for step in range(4):
            samples, advantages = reward_batch(seed=step)
            for sample, adv in zip(samples, advantages.tolist()):
                sample.advantage = sign * adv
            metrics = learner.train(samples, seed=step)
            assert metrics["grad_norm"] > 0 and metrics["learner/skipped_steps"] == 0
        after = target_logprob(learner)
    finally:
        learner.shutdown()
    if sign > 0:
        assert after > before + 0.5, (before, after)
    else:
        assert after < before - 0.5, (before, after)


@pytest.mark.slow
def test_weight_sync_engine_matches_learner(tiny_model_dir, rollout_pool, tmp_path) -> None:
    """After an update (which changes the tied embedding too), vLLM's logprobs for a fixed
    sequence equal the learner's: checks the reload path and the CPU lm_head re-pack."""
    learner = learner_group(tiny_model_dir, "learner.lr=5.0e-2")
    try:
        sequence = PROMPT + [TARGET, 777, 4242, TARGET, 31]
        probe = [Sample(sequence[:1], sequence[1:])]
        engine_before = torch.tensor(rollout_pool.prompt_logprobs([sequence])[0])
        learner_before = torch.tensor(learner.compute_logprobs(probe)[0])
        assert torch.allclose(engine_before, learner_before, atol=1e-3)
        for step in range(2):
            samples, advantages = reward_batch(seed=10 + step)
            for sample, adv in zip(samples, advantages.tolist()):
                sample.advantage = adv
            learner.train(samples, seed=step)
        learner_after = torch.tensor(learner.compute_logprobs(probe)[0])
        assert (learner_after - learner_before).abs().max() > 0.1  # the update really changed the policy
        path = str(tmp_path / "policy.safetensors")
        learner.export_weights(path)
        rollout_pool.sync_weights(path)
        engine_after = torch.tensor(rollout_pool.prompt_logprobs([sequence])[0])
        assert torch.allclose(engine_after, learner_after, atol=1e-3), (
            (engine_after - learner_after).abs().max()
        )
    finally:
        learner.shutdown()


@pytest.mark.slow
def test_non_finite_step_is_skipped_and_logged(tiny_model_dir) -> None:
    """A NaN loss drops that optimizer step (weights unchanged, counted); the next step trains."""
    learner = local_learner(tiny_model_dir, "learner.lr=1.0e-2")
    try:
        before = target_logprob(learner)
        samples, advantages = reward_batch(seed=0)
        for sample, adv in zip(samples, advantages.tolist()):
            sample.advantage = float("nan") if sample is samples[0] else adv
        metrics = learner.train(samples, seed=0)
        assert metrics["learner/skipped_steps"] == 1.0
        assert target_logprob(learner) == before  # weights untouched
        samples[0].advantage = 1.0
        metrics = learner.train(samples, seed=1)
        assert metrics["learner/skipped_steps"] == 0.0 and target_logprob(learner) != before
    finally:
        learner.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_mean"])
def test_micro_batch_packing_does_not_change_the_gradient(tiny_model_dir, agg: str) -> None:
    """One sequence per micro-batch or all in one: the same gradient (norm before clipping)."""
    samples = uneven_batch()
    norms = []
    for budget in (16, 4096):
        learner = local_learner(
            tiny_model_dir,
            f"algorithm.agg={agg}",
            f"learner.micro_batch_tokens={budget}",
            "learner.grad_clip=0.0",
        )
        try:
            norms.append(learner.train(samples, seed=0)["grad_norm"])
        finally:
            learner.shutdown()
    assert norms[0] > 0 and norms[0] == pytest.approx(norms[1], rel=1e-4), norms


@pytest.mark.slow
def test_two_ranks_and_zero3_give_the_same_gradient_as_one_rank(
    tiny_model_dir, ray_session, tmp_path
) -> None:
    """The DeepSpeed world over gloo: splitting the batch over 2 ranks (ZeRO-2 and ZeRO-3) gives the
    gradient norm and loss of 1 rank, and rank 0 exports the full (gathered) weights. lr=0 keeps the
    weights fixed so the export can be compared exactly (Adam's first step is sign-like, so weights
    after a real step differ wherever a gradient element is ~0). The ZeRO-3 ranks meet in a given
    folder, as ranks on several nodes do in the run directory."""
    from safetensors.torch import load_file

    samples = uneven_batch()
    results = []
    for ranks, zero in ((1, 2), (2, 2), (2, 3)):
        learner = learner_group(
            tiny_model_dir,
            "learner.micro_batch_tokens=32",
            "learner.grad_clip=0.0",
            f"learner.zero_stage={zero}",
            "learner.lr=0.0",
            "learner.sync_bucket_mb=1",
            num_ranks=ranks,
            rendezvous_dir=str(tmp_path) if zero == 3 else None,
        )
        assert (learner.rendezvous.parent == tmp_path) == (zero == 3)
        try:
            metrics = learner.train(samples, seed=0)
            path = f"/dev/shm/rlengine-test-export-{ranks}-{zero}.safetensors"
            exported_info = learner.export_weights(path)
            exported = load_file(path)
            os.unlink(path)
        finally:
            learner.shutdown()
        assert not learner.rendezvous.exists()
        results.append((metrics["grad_norm"], metrics["loss/policy"], exported))
        # 1 MB buckets: the 12.6 MB tied embedding alone, then the other parameters (< 1 MB) in a
        # second one (ZeRO-3 gathers one bucket at a time); the files are compared below
        assert exported_info["buckets"] == 2
    for norm, loss, exported in results[1:]:
        assert norm == pytest.approx(results[0][0], rel=1e-5) and loss == pytest.approx(
            results[0][1], rel=1e-5
        )
        assert exported.keys() == results[0][2].keys()
        for key, value in exported.items():
            assert torch.allclose(value, results[0][2][key], atol=1e-5), key
