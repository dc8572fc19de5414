"""Reward shaping and sample building in the trainer, without starting any actor."""

from __future__ import annotations

import pytest

from rlengine.batch import Group, Response
from rlengine.config import load_config
from rlengine.learner.spec import LearnerSpec
from rlengine.stages import StageContext, build_stage
from rlengine.trainer import Trainer


def bare_trainer(*overrides: str) -> Trainer:
    cfg = load_config(None, ["rollout.max_tokens=10", "reward.functions=[math_verify,format]", *overrides])
    trainer = Trainer.__new__(Trainer)  # no Ray, no models: only the pure parts are used
    trainer.cfg = cfg
    trainer.step_index = 0
    trainer.reward_messages, trainer.mean_correct_length = [], None
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


def test_learner_spec_follows_the_preset() -> None:
    cfg = load_config(
        None,
        ["algorithm.preset=dr_grpo", "rollout.max_tokens=64", "trainer.max_steps=5", "learner.ppo_epochs=2"],
    )
    spec = LearnerSpec.from_config(cfg, "/model")
    assert spec.algorithm.agg == "seq_mean_token_sum_norm" and spec.max_response_length == 64
    assert spec.algorithm is cfg.algorithm and spec.learner is cfg.learner  # one source of truth
    assert spec.total_steps == 10  # max_steps x ppo_epochs x one optimizer step per epoch


def test_stale_groups_bring_their_behaviour_logprobs() -> None:
    """A group sampled by an older policy (carried over or replayed) is trained with its vLLM
    logprobs as old_logprobs; a fresh group is on-policy (None: the learner uses its own)."""
    trainer = bare_trainer()
    trainer.step_index = 3
    fresh, stale = group([2, 2], [1.0, 0.0], [False, False]), group([2, 2], [1.0, 0.0], [False, False])
    fresh.policy_version, stale.policy_version = 3, 2
    stale.responses[0].logprobs = [-0.5, -0.25]
    trainer.set_scalar_rewards([fresh, stale])
    samples, metrics = trainer.build_samples([fresh, stale])
    assert [s["old_logprobs"] for s in samples[:2]] == [None, None]
    assert samples[2]["old_logprobs"] == [-0.5, -0.25] and metrics["train/stale_fraction"] == 0.5


def test_existing_run_directory_needs_resume(tmp_path) -> None:
    (tmp_path / "checkpoints" / "step_2").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step_2" / "trainer_state.pt").write_bytes(b"x")
    cfg = load_config(None, [f"trainer.output_dir={tmp_path}"])
    with pytest.raises(
        FileExistsError, match=r"already has checkpoints \(newest: step_2\); pass resume=true"
    ):
        Trainer(cfg)


def test_max_minutes_stops_after_the_step_that_runs_out_and_saves_it(monkeypatch) -> None:
    import types

    import rlengine.trainer

    trainer = bare_trainer(
        "trainer.max_steps=100",
        "trainer.max_minutes=1",
        "evaluation.every_n_steps=0",
        "logging.progress=false",
    )
    clock = [0.0]
    monkeypatch.setattr(rlengine.trainer.time, "monotonic", lambda: clock[0])

    def step() -> dict:
        clock[0] += 25.0  # each step takes 25 s: the third ends at 75 s, past the 60 s budget
        trainer.step_index += 1
        return {"reward/mean": 0.0, "pass_rate/mean": 0.0, "tokens/per_second": 0.0}

    saved: list[int] = []
    trainer.step = step
    trainer.checkpoint = lambda: saved.append(trainer.step_index)
    trainer.logger = types.SimpleNamespace(log=lambda metrics, step: None)
    assert len(trainer.fit()) == 3 and saved == [3]
