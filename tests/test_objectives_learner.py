"""Every algorithm preset, and the KL / TIS / multi-epoch options, through the real learner."""

from __future__ import annotations

import math

import pytest
import torch

from rlengine.algorithms import PRESETS, compute_advantages
from rlengine.config import load_config
from rlengine.learner.driver import LocalLearner
from rlengine.learner.spec import LearnerSpec
from tests.conftest import local_learner
from tests.test_learner import reward_batch, target_logprob

pytestmark = pytest.mark.slow


def run_preset(
    tiny_model_dir: str, *overrides: str, steps: int = 3, rollout_shift: float = 0.0
) -> tuple[float, float, list[dict[str, float]]]:
    """Train a few steps on the target-token reward; return (before, after, metrics).

    Rollout (behaviour) logprobs are the learner's own before each update, shifted by
    ``rollout_shift`` on every token, so the vLLM/learner mismatch the learner measures and TIS
    corrects is known exactly."""
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
    learner = LocalLearner(LearnerSpec.from_config(cfg, tiny_model_dir))
    history = []
    try:
        before = target_logprob(learner)
        for step in range(steps):
            samples, _ = reward_batch(seed=step)
            rewards = torch.tensor([1.0 if 1234 in s.response_ids else 0.0 for s in samples])
            index = torch.arange(len(samples)) // 4
            advantages = compute_advantages(cfg.algorithm.advantage, rewards, index)
            current = learner.compute_logprobs(samples)
            for sample, adv, lp in zip(samples, advantages.tolist(), current):
                sample.advantage = adv
                sample.rollout_logprobs = [x + rollout_shift for x in lp]
            if cfg.learner.ppo_epochs > 1 or cfg.learner.mini_batch_size:
                for sample, lp in zip(samples, learner.compute_logprobs(samples)):
                    sample.old_logprobs = lp
            history.append(learner.train(samples, seed=step))
        after = target_logprob(learner)
    finally:
        learner.shutdown()
    return before, after, history


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_learns_through_real_learner(tiny_model_dir, preset: str) -> None:
    before, after, history = run_preset(tiny_model_dir, f"algorithm.preset={preset}")
    for metrics in history:
        assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float)), metrics
        assert metrics["learner/skipped_steps"] == 0
    if PRESETS[preset].values.get("kl_coef", 0) > 0 and PRESETS[preset].values.get("kl_placement") == "loss":
        assert "kl/mean" in history[-1] and history[-1]["kl/mean"] > 0  # the reference model is in the loss
    assert after > before + 0.2, (preset, before, after)


def test_multi_epoch_minibatch_with_tis(tiny_model_dir) -> None:
    """ppo_epochs x mini-batches use learner old logprobs: the ratio moves off 1 and clipping kicks in.
    The rollout/learner mismatch is measured exactly (the rollout logprobs are shifted by 0.3)."""
    before, after, history = run_preset(
        tiny_model_dir,
        "learner.ppo_epochs=3",
        "learner.mini_batch_size=8",
        "algorithm.tis_cap=2.0",
        "learner.lr=2.0e-2",
        rollout_shift=0.3,
    )
    assert after > before + 0.2
    assert max(m["actor/ratio_max"] for m in history) > 1.0
    assert max(m["actor/clipfrac"] for m in history) > 0.0
    # every sample brought old logprobs, so the learner does not measure the rollout gap: the
    # trainer measures it on the old-logprob pass, under the engines' weights (test_trainer_logic)
    assert "rollout/logprob_diff_mean" not in history[0]


def test_tis_weights_change_the_update(tiny_model_dir) -> None:
    """TIS multiplies each token by min(pi_old / pi_rollout, C): with rollout logprobs 0.5 above the
    learner's the weight is exp(-0.5) ~ 0.61 on every token, so the gradient norm shrinks by that factor."""
    norms = {}
    for tis in ("null", "2.0"):
        _, _, history = run_preset(
            tiny_model_dir, f"algorithm.tis_cap={tis}", "learner.grad_clip=0.0", steps=1, rollout_shift=0.5
        )
        norms[tis] = history[0]["grad_norm"]
        # one forward before the only optimizer step: the measured gap is exactly the 0.5 shift
        assert history[0]["rollout/logprob_diff_mean"] == pytest.approx(0.5, abs=1e-4)
        assert history[0]["rollout/logprob_diff_max"] == pytest.approx(0.5, abs=1e-4)
    assert norms["2.0"] == pytest.approx(math.exp(-0.5) * norms["null"], rel=1e-3)


def test_reference_logprobs_equal_initial_policy(tiny_model_dir) -> None:
    learner = local_learner(tiny_model_dir, "algorithm.kl_coef=0.1", "algorithm.kl_placement=reward")
    try:
        samples, advantages = reward_batch(seed=0)
        ref = learner.compute_logprobs(samples, "ref")
        policy = learner.compute_logprobs(samples, "policy")
        assert all(torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5) for a, b in zip(ref, policy))
        for sample, adv in zip(samples, advantages.tolist()):
            sample.advantage = adv
        learner.train(samples, seed=0)
        moved = learner.compute_logprobs(samples, "policy")
        assert learner.compute_logprobs(samples, "ref") == ref  # the reference stays frozen
        assert any(not torch.allclose(torch.tensor(a), torch.tensor(b)) for a, b in zip(moved, ref))
    finally:
        learner.shutdown()


@pytest.mark.parametrize(
    "overrides",
    [
        ("algorithm.agg=seq_mean_token_sum",),
        ("algorithm.agg=seq_mean_token_sum_norm",),
        ("algorithm.loss=bapo",),
        ("algorithm.loss=gspo", "algorithm.clip_low=0.2", "algorithm.clip_high=0.2"),
    ],
    ids=lambda o: ",".join(x.split("=")[1] for x in o if "clip" not in x),
)
def test_aggregations_and_losses_learn_through_real_learner(tiny_model_dir, overrides) -> None:
    before, after, history = run_preset(tiny_model_dir, *overrides)
    assert all(m["learner/skipped_steps"] == 0 and m["grad_norm"] > 0 for m in history)
    assert after > before + 0.2, (overrides, before, after)


def test_entropy_bonus_raises_entropy(tiny_model_dir) -> None:
    """With zero advantages only the entropy bonus moves the policy: entropy must rise (and stays put
    with entropy_coef = 0, where the gradient is exactly zero)."""
    results = {}
    for coef in (0.0, 0.5):
        learner = local_learner(tiny_model_dir, f"algorithm.entropy_coef={coef}", "learner.lr=1.0e-4")
        try:
            samples, _ = reward_batch(seed=0)
            for sample in samples:
                sample.advantage = 0.0
            history = [learner.train(samples, seed=step) for step in range(3)]
        finally:
            learner.shutdown()
        results[coef] = history
    assert results[0.0][0]["grad_norm"] == 0.0
    assert results[0.0][-1]["entropy/mean"] == pytest.approx(results[0.0][0]["entropy/mean"], rel=1e-6)
    # a random model is near the maximum entropy (ln 49152 = 10.80); small steps still raise it
    entropies = [m["entropy/mean"] for m in results[0.5]]
    assert entropies[0] < entropies[1] < entropies[2], entropies


def test_lr_schedule_warmup_then_cosine(tiny_model_dir) -> None:
    """The learning rate the learner reports follows linear warm-up, then cosine to the floor."""
    learner = local_learner(
        tiny_model_dir,
        "learner.lr=1.0e-3",
        "learner.lr_schedule=cosine",
        "learner.warmup_steps=2",
        "learner.min_lr_ratio=0.1",
        "trainer.max_steps=6",
    )
    try:
        samples, advantages = reward_batch(seed=0)
        for sample, adv in zip(samples, advantages.tolist()):
            sample.advantage = adv
        lrs = [learner.train(samples, seed=step)["lr"] for step in range(6)]
    finally:
        learner.shutdown()
    # the lr reported after optimizer step k is the one for step k + 1
    expected = []
    for step in range(1, 7):
        if step < 2:
            expected.append(1e-3 * (step + 1) / 2)
        else:
            progress = min(1.0, (step - 2) / 4)
            expected.append(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))))
    assert lrs == pytest.approx(expected, rel=1e-6)


def test_kl_in_reward_uses_reference_logprobs(tiny_model_dir, tmp_path) -> None:
    """kl_placement=reward: each response's reward drops by beta * sum_t k3(rollout vs reference)."""
    from rlengine.episode import Episode, Group
    from rlengine.producer import StepState
    from rlengine.samples import set_scalar_rewards
    from tests.stubs import stub_trainer

    kl = ["algorithm.kl_coef=0.5", "algorithm.kl_placement=reward"]
    cfg = load_config(None, ["reward.functions=[math_verify,format]", "algorithm.advantage=dr_grpo", *kl])
    rows = [{"id": "p", "prompt": "x", "answer": "1", "prompt_ids": [1]}]
    trainer = stub_trainer(
        cfg, rows, tmp_path, learner=local_learner(tiny_model_dir, *kl), objectives=("math_verify", "format"),
        reward_weights=(1.0, 1.0),
    )
    try:
        samples, _ = reward_batch(seed=0, groups=1, size=2)
        ref = trainer.learner.compute_logprobs(samples, "ref")
        shifts = [0.0, 0.2]  # response 1's behaviour logprobs sit 0.2 above the reference
        episodes = [
            Episode.single("x", s.response_ids, [x + d for x in lp], "stop", scores={"math_verify": 1.0, "format": 0.0})
            for s, lp, d in zip(samples, ref, shifts)
        ]
        groups = [Group(prompt={"id": "p"}, prompt_ids=samples[0].prompt_ids, episodes=episodes)]
        set_scalar_rewards(groups, trainer.reward_weighting.combine, trainer.objectives, cfg.algorithm, 16)
        built, metrics = trainer.prepare_samples(groups, StepState(0))
    finally:
        trainer.learner.shutdown()
    k3 = math.exp(-0.2) + 0.2 - 1  # d = log pi_ref - log pi_behaviour = -0.2 on every token
    length = len(samples[1].response_ids)
    assert metrics["kl/mean"] == pytest.approx(k3 / 2, rel=1e-4)  # mean over the two responses
    # dr_grpo: R - mean R with R = 1 - beta * KL_sum
    penalty = 0.5 * k3 * length
    assert [s.advantage for s in built] == pytest.approx([penalty / 2, -penalty / 2], rel=1e-4)
