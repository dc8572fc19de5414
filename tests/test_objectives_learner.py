"""Every algorithm preset, and the KL / TIS / multi-epoch options, through the real learner."""

from __future__ import annotations

import math

import pytest
import torch

from rlengine.algorithms import PRESETS, compute_advantages
from rlengine.config import load_config
from rlengine.trainer import learner_options
from tests.test_learner import reward_batch, target_logprob

pytestmark = pytest.mark.slow


def run_preset(tiny_model_dir: str, *overrides: str, steps: int = 3) -> tuple[float, float, list[dict]]:
    """Train a few steps on the target-token reward; return (before, after, metrics)."""
    from rlengine.learner import LearnerGroup

    cfg = load_config(
        None,
        [
            "rollout.max_tokens=16",
            "algorithm.overlong_cache=4",
            "learner.lr=3.0e-3",
            "learner.micro_batch_tokens=128",
            *overrides,
        ],
    )
    learner = LearnerGroup(tiny_model_dir, learner_options(cfg), num_ranks=1, use_gpu=False)
    history = []
    try:
        before = target_logprob(learner)
        for step in range(steps):
            samples, _ = reward_batch(seed=step)
            rewards = torch.tensor([1.0 if 1234 in s["response_ids"] else 0.0 for s in samples])
            index = torch.arange(len(samples)) // 4
            advantages = compute_advantages(cfg.algorithm.advantage, rewards, index)
            for sample, adv in zip(samples, advantages.tolist()):
                sample["advantage"] = adv
                sample["rollout_logprobs"] = [-11.0] * len(sample["response_ids"])
            if cfg.learner.ppo_epochs > 1 or cfg.learner.mini_batch_size:
                for sample, lp in zip(samples, learner.compute_logprobs(samples)):
                    sample["old_logprobs"] = lp
            history.append(learner.train(samples, seed=step))
        after = target_logprob(learner)
    finally:
        learner.shutdown()
    return before, after, history


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_learns_through_real_learner(tiny_model_dir, ray_session, preset: str) -> None:
    before, after, history = run_preset(tiny_model_dir, f"algorithm.preset={preset}")
    for metrics in history:
        assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float)), metrics
        assert metrics["learner/skipped_steps"] == 0
    if PRESETS[preset].values.get("kl_coef", 0) > 0 and PRESETS[preset].values.get("kl_placement") == "loss":
        assert "kl/mean" in history[-1] and history[-1]["kl/mean"] > 0  # the reference model is in the loss
    assert after > before + 0.2, (preset, before, after)


def test_multi_epoch_minibatch_with_tis(tiny_model_dir, ray_session) -> None:
    """ppo_epochs x mini-batches use learner old logprobs: the ratio moves off 1 and clipping kicks in."""
    before, after, history = run_preset(
        tiny_model_dir,
        "learner.ppo_epochs=3",
        "learner.mini_batch_size=8",
        "algorithm.tis_cap=2.0",
        "learner.lr=2.0e-2",
    )
    assert after > before + 0.2
    assert max(m["actor/ratio_max"] for m in history) > 1.0
    assert max(m["actor/clipfrac"] for m in history) > 0.0
    assert history[0]["rollout/logprob_diff_mean"] > 0  # vLLM-vs-learner mismatch is measured


def test_reference_logprobs_equal_initial_policy(tiny_model_dir, ray_session) -> None:
    from rlengine.learner import LearnerGroup

    cfg = load_config(None, ["algorithm.kl_coef=0.1", "algorithm.kl_placement=reward", "learner.lr=1.0e-2"])
    learner = LearnerGroup(tiny_model_dir, learner_options(cfg), num_ranks=1, use_gpu=False)
    try:
        samples, advantages = reward_batch(seed=0)
        ref = learner.compute_logprobs(samples, "ref")
        policy = learner.compute_logprobs(samples, "policy")
        assert all(torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5) for a, b in zip(ref, policy))
        for sample, adv in zip(samples, advantages.tolist()):
            sample["advantage"] = adv
        learner.train(samples, seed=0)
        moved = learner.compute_logprobs(samples, "policy")
        assert learner.compute_logprobs(samples, "ref") == ref  # the reference stays frozen
        assert any(not torch.allclose(torch.tensor(a), torch.tensor(b)) for a, b in zip(moved, ref))
    finally:
        learner.shutdown()
