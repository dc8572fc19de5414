"""Reward shaping and sample building in the trainer, without starting any actor."""

from __future__ import annotations

import pytest

from rlengine.batch import Group, Response
from rlengine.config import load_config
from rlengine.stages import StageContext, build_stage
from rlengine.trainer import Trainer, learner_options


def bare_trainer(*overrides: str) -> Trainer:
    cfg = load_config(None, ["rollout.max_tokens=10", "reward.functions=[math_verify,format]", *overrides])
    trainer = Trainer.__new__(Trainer)  # no Ray, no models: only the pure parts are used
    trainer.cfg = cfg
    trainer.objectives = ["math_verify", "format"]
    context = StageContext(rows=[], seed=0, objectives=trainer.objectives, reward_weights=[1.0, 0.5])
    trainer.reward_weighting = build_stage("reward_weighting", cfg.reward_weighting, context)
    trainer.learner = None
    return trainer


def group(lengths: list[int], correct: list[float], truncated: list[bool]) -> Group:
    responses = [
        Response(
            "x",
            list(range(n)),
            [-1.0] * n,
            "length" if t else "stop",
            scores={"math_verify": c, "format": 1.0},
        )
        for n, c, t in zip(lengths, correct, truncated)
    ]
    return Group(prompt={"id": "p"}, prompt_ids=[1, 2], responses=responses)


def test_static_weights_combine_objectives() -> None:
    trainer = bare_trainer()
    groups = [group([3, 3], [1.0, 0.0], [False, False])]
    trainer.set_scalar_rewards(groups)
    assert groups[0].rewards == [1.5, 0.5]


def test_overlong_shaping_penalises_long_responses() -> None:
    trainer = bare_trainer("algorithm.overlong_shaping=true", "algorithm.overlong_cache=4")
    groups = [group([5, 8, 10, 11], [0.0] * 4, [False] * 4)]
    trainer.set_scalar_rewards(groups)
    # L_max=10, L_c=4: <=6 -> 0; 8 -> (6-8)/4 = -0.5; 10 -> -1; beyond -> -1 (plus format 0.5)
    assert groups[0].rewards == pytest.approx([0.5, 0.0, -0.5, -0.5])


def test_mask_truncated_and_advantages() -> None:
    trainer = bare_trainer("algorithm.mask_truncated=true", "algorithm.advantage=dr_grpo")
    groups = [group([3, 10], [1.0, 0.0], [False, True]), group([2, 2], [1.0, 1.0], [False, False])]
    trainer.set_scalar_rewards(groups)
    samples, metrics = trainer.build_samples(groups)
    assert [s["loss_masked"] for s in samples] == [False, True, False, False]
    assert [s["advantage"] for s in samples] == pytest.approx([0.5, -0.5, 0.0, 0.0])
    assert samples[0]["prompt_ids"] == [1, 2] and samples[1]["response_ids"] == list(range(10))
    assert metrics["advantage/mean_abs"] == pytest.approx(0.25)


def test_learner_options_follow_the_preset() -> None:
    cfg = load_config(None, ["algorithm.preset=dr_grpo", "rollout.max_tokens=64"])
    options = learner_options(cfg)
    assert options["agg"] == "seq_mean_token_sum_norm" and options["max_response_length"] == 64
    assert options["loss"] == cfg.algorithm.loss and options["kl_coef"] == cfg.algorithm.kl_coef


def test_existing_run_directory_needs_resume(tmp_path) -> None:
    (tmp_path / "checkpoints" / "step_2").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step_2" / "trainer_state.pt").write_bytes(b"x")
    cfg = load_config(None, [f"trainer.output_dir={tmp_path}"])
    with pytest.raises(
        FileExistsError, match=r"already has checkpoints \(newest: step_2\); pass resume=true"
    ):
        Trainer(cfg)
