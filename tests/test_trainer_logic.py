"""The step's logic on stub parts (no Ray, no models): reward shaping and samples (pure functions),
the order of a step's phases, its timers, one-step-off as depth 1 of the producer, the health stop.
The same paths run on the real stack in tests/test_e2e.py."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from rlengine.config import load_config
from rlengine.data import make_arithmetic
from rlengine.episode import Episode, Group
from rlengine.errors import RunUnhealthy
from rlengine.learner.spec import LearnerSpec
from rlengine.producer import StepState
from rlengine.samples import advantages, build_samples, episode_rewards, objective_weights, set_scalar_rewards
from rlengine.stages import StageContext, build_stage
from rlengine.trainer import Trainer
from tests.stubs import StubLearner, stub_trainer


def config(*overrides: str):
    return load_config(
        None,
        ["rollout.max_tokens=10", "trainer.batch_size=2", "rollout.n=2", "reward.functions=[math_verify]", *overrides],
    )


def rows(count: int = 40) -> list[dict]:
    return [{**r, "prompt": r["problem"], "prompt_ids": [5, 6]} for r in make_arithmetic(count, seed=0)]


def group(lengths: list[int], correct: list[float], truncated: list[bool], version: int = 0) -> Group:
    episodes = [
        Episode.single(
            "x", list(range(n)), [-1.0] * n, "length" if t else "stop", version, scores={"math_verify": c, "format": 1.0}
        )
        for n, c, t in zip(lengths, correct, truncated)
    ]
    return Group(prompt={"id": "p"}, prompt_ids=[1, 2], episodes=episodes)


def static_combine(weights: tuple[float, float] = (1.0, 0.5)):
    context = StageContext(rows=[], seed=0, objectives=["math_verify", "format"], reward_weights=list(weights))
    return build_stage("reward_weighting", config().reward_weighting, context).combine


# --------------------------------------------------------------------------- rewards -> samples (pure)


def test_static_weights_combine_objectives() -> None:
    groups = [group([3, 3], [1.0, 0.0], [False, False])]
    set_scalar_rewards(groups, static_combine(), ["math_verify", "format"], config().algorithm, 10)
    assert groups[0].rewards == pytest.approx([1.0, 1 / 3])
    assert objective_weights(static_combine(), ["math_verify", "format"]) == pytest.approx(
        {"math_verify": 2 / 3, "format": 1 / 3}
    )


def test_overlong_shaping_penalises_long_responses() -> None:
    algo = config("algorithm.overlong_shaping=true", "algorithm.overlong_cache=4").algorithm
    groups = [group([5, 8, 10, 11], [0.0] * 4, [False] * 4)]
    set_scalar_rewards(groups, static_combine(), ["math_verify", "format"], algo, 10)
    # L_max=10, L_c=4: <=6 -> 0; 8 -> (6-8)/4 = -0.5; 10 -> -1; beyond -> -1 (plus format 0.5)
    assert groups[0].rewards == pytest.approx([1 / 3, 1 / 3 - 0.5, 1 / 3 - 1, 1 / 3 - 1])


def test_mask_truncated_and_advantages() -> None:
    algo = config("algorithm.mask_truncated=true", "algorithm.advantage=dr_grpo").algorithm
    groups = [group([3, 10], [1.0, 0.0], [False, True]), group([2, 2], [1.0, 1.0], [False, False])]
    set_scalar_rewards(groups, static_combine(), ["math_verify", "format"], algo, 10)
    samples = build_samples(groups, 0, algo.mask_truncated)
    assert [s.loss_tokens for s in samples] == [3, 0, 2, 2] and samples[1].loss_mask == [0] * 10
    values = advantages(algo, episode_rewards(groups), groups, samples)
    assert values.tolist() == pytest.approx([1 / 3, -1 / 3, 0.0, 0.0])
    assert samples[0].prompt_ids == [1, 2] and samples[1].response_ids == list(range(10))


def test_stale_groups_bring_their_behaviour_logprobs() -> None:
    """A group sampled by an older policy (carried over, replayed or prefetched) is trained with its
    vLLM logprobs as old_logprobs; a fresh group is on-policy (None: the learner uses its own)."""
    fresh, stale = group([2, 2], [1.0, 0.0], [False] * 2, version=3), group([2, 2], [1.0, 0.0], [False] * 2, version=2)
    stale.episodes[0].segments[0].logprobs = [-0.5, -0.25]
    samples = build_samples([fresh, stale], 3, mask_truncated=False)
    assert [s.old_logprobs for s in samples[:2]] == [None, None]
    assert samples[2].old_logprobs == [-0.5, -0.25] and samples[3].old_logprobs == [-1.0, -1.0]


def test_learner_spec_follows_the_preset() -> None:
    cfg = load_config(
        None,
        ["algorithm.preset=dr_grpo", "rollout.max_tokens=64", "trainer.max_steps=5", "learner.ppo_epochs=2"],
    )
    spec = LearnerSpec.from_config(cfg, "/model")
    assert spec.algorithm.agg == "seq_mean_token_sum_norm" and spec.max_response_length == 64
    assert spec.algorithm is cfg.algorithm and spec.learner is cfg.learner  # one source of truth
    assert spec.total_steps == 10  # max_steps x ppo_epochs x one optimizer step per epoch


# --------------------------------------------------------------------------- timers


def test_step_timers_are_exclusive() -> None:
    """A phase timed inside another (a refill's rollout inside the filter) counts once, in itself."""
    state = StepState(0)
    with state.timer("time/stages"):
        time.sleep(0.05)
        with state.timer("time/rollout"):
            time.sleep(0.1)
    assert 0.09 < state.times["time/rollout"] < 0.2
    assert 0.04 < state.times["time/stages"] < 0.09  # without the nested 0.1 s


# --------------------------------------------------------------------------- a step on stub parts


def test_step_phases_run_in_order_and_add_up(tmp_path: Path) -> None:
    """The update runs while the engines sleep, the sync after they wake; the learner sees each
    response once with its group's advantage; the phase timers add up to the step."""
    t = stub_trainer(config("trainer.max_steps=3"), rows(), tmp_path, passes=lambda pid: 1)
    asleep_during_update: list[bool] = []
    train = t.learner.train
    t.learner.train = lambda samples, seed: (asleep_during_update.append(t.pool.sleeping), train(samples, seed))[1]
    m = t.step()
    assert t.pool.events == ["submit", "collect", "sleep", "wake", "sync"] and asleep_during_update == [True]
    (samples,) = t.learner.trained
    assert [round(s.advantage, 4) for s in samples] == [0.7071, -0.7071] * 2  # response "0" passes, "1" fails
    assert m["step"] == 1 and t.step_index == 1 and t.rollouts.version == 1
    phases = sum(m[k] for k in ("time/rollout", "time/reward", "time/train", "time/sync", "time/stages", "time/reward_weighting"))
    assert phases <= m["time/step"] + 1e-6 and m["time/train"] == m["time/update"]  # no ref, no old-logprob pass
    assert m["rollout/staleness_max"] == 0.0 and m["train/stale_fraction"] == 0.0


def test_ppo_epochs_recompute_old_logprobs_and_kl_in_reward_asks_the_reference(tmp_path: Path) -> None:
    cfg = config("learner.ppo_epochs=2", "algorithm.kl_coef=0.1", "algorithm.kl_placement=reward")
    t = stub_trainer(cfg, rows(), tmp_path, passes=lambda pid: 1)
    m = t.step()
    assert t.learner.logprob_calls == [(4, "ref"), (4, "policy")]
    (samples,) = t.learner.trained
    assert all(s.old_logprobs == [-0.5] * 3 for s in samples)
    # behaviour logprobs -1, reference -0.5: k3 per token = exp(0.5) - 0.5 - 1, summed over 3 tokens
    assert m["kl/mean"] == pytest.approx(math.exp(0.5) - 1.5, rel=1e-5)
    assert m["time/ref"] > 0 and m["time/old_logprobs"] > 0
    assert m["rollout/logprob_diff_mean"] == m["rollout/logprob_diff_max"] == 0.5  # vLLM -1 vs learner -0.5
    assert m["time/train"] == pytest.approx(m["time/ref"] + m["time/old_logprobs"] + m["time/update"])


def test_one_step_off_policy_is_depth_one_of_the_producer(tmp_path: Path) -> None:
    """The next batch is submitted before the update and collected before the sync; it is trained
    one version late with its behaviour logprobs, and a checkpoint carries it."""
    cfg = config("rollout.mode=one_step_off_policy", "trainer.max_steps=3")
    t = stub_trainer(cfg, rows(), tmp_path, passes=lambda pid: 1)
    first = t.step()
    assert t.pool.events == ["submit", "collect", "submit", "sleep", "wake", "collect", "sync"]
    assert first["rollout/staleness_max"] == 0.0 and len(t.producer.ready) == 1
    state = t.state_dict()
    assert [s["step"] for s in state["producer"]["ready"]] == [1]

    resumed = stub_trainer(cfg, rows(), tmp_path / "b", passes=lambda pid: 1)
    resumed.load_state_dict({**state, "step": 1})
    second = resumed.step()
    assert resumed.pool.events == ["submit", "sleep", "wake", "collect", "sync"]  # step 2 came from the checkpoint
    assert second["rollout/staleness_mean"] == 1.0 and second["train/stale_fraction"] == 1.0
    # decoupled correction (the default): the ratio is against π_prox, the learner's logprobs under
    # the current weights (-0.5), and vLLM's behaviour logprobs (-1) stay for the behaviour weight
    assert resumed.learner.logprob_calls == [(4, "policy")]
    assert all(s.stale and s.old_logprobs == [-0.5] * 3 and s.rollout_logprobs == [-1.0] * 3 for s in resumed.learner.trained[0])
    third = resumed.step()  # the last step: nothing is generated ahead
    assert resumed.pool.events[5:] == ["sleep", "wake", "sync"] and third["step"] == 3


def test_behaviour_as_old_trains_stale_samples_against_their_behaviour_logprobs(tmp_path: Path) -> None:
    cfg = config("rollout.mode=one_step_off_policy", "algorithm.off_policy_correction=behaviour_as_old")
    t = stub_trainer(cfg, rows(), tmp_path, passes=lambda pid: 1)
    t.step()
    t.step()
    assert t.learner.logprob_calls == []  # no proximal pass
    assert all(s.stale and s.old_logprobs == [-1.0] * 3 for s in t.learner.trained[1])


def test_stale_fraction_counts_policy_versions_not_old_logprobs(tmp_path: Path) -> None:
    """With ppo_epochs > 1 every fresh sample gets old logprobs; none of them is stale."""
    t = stub_trainer(config("learner.ppo_epochs=2"), rows(), tmp_path, passes=lambda pid: 1)
    m = t.step()
    assert all(s.old_logprobs is not None and not s.stale for s in t.learner.trained[0])
    assert m["train/stale_fraction"] == 0.0


def test_health_stop_is_a_named_error_through_checked_step_and_the_cli(tmp_path, monkeypatch, capsys) -> None:
    """A step in which every reward call failed stops the run with RunUnhealthy; the CLI prints the
    diagnosis without a traceback and exits with 1."""
    from rlengine.cli import main

    failing = type("FailingRewards", (), {})()
    from types import SimpleNamespace

    failing.score = lambda items: SimpleNamespace(
        scores={"acc": [0.0] * len(items)}, errors=len(items), timeouts=0, error_messages=["ZeroDivisionError: x"]
    )
    failing.close = lambda: None
    cfg = config(f"trainer.output_dir={tmp_path / 'run'}", "logging.progress=false")
    t = stub_trainer(cfg, rows(), tmp_path, rewards=failing)
    with pytest.raises(RunUnhealthy, match=r"(?s)100% of the reward calls failed.*ZeroDivisionError: x"):
        t.checked_step([])
    assert len(t.logger.lines) == 1  # the failed step is logged before the stop

    monkeypatch.setattr(Trainer, "from_config", classmethod(lambda cls, c: stub_trainer(c, rows(), tmp_path, rewards=failing)))
    (tmp_path / "run.yaml").write_text("trainer: {max_steps: 2}\n")
    code = main(["train", str(tmp_path / "run.yaml"), "reward.functions=[math_verify]", "logging.progress=false"])
    err = capsys.readouterr().err
    assert code == 1 and "rlengine: stopping the run." in err and "reward.max_failure_fraction" in err
    assert "Traceback" not in err


def test_existing_run_directory_needs_resume(tmp_path) -> None:
    (tmp_path / "checkpoints" / "step_2").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step_2" / "trainer_state.pt").write_bytes(b"x")
    cfg = load_config(None, [f"trainer.output_dir={tmp_path}"])
    with pytest.raises(FileExistsError, match=r"already has checkpoints \(newest: step_2\); pass resume=true"):
        Trainer.from_config(cfg)


def test_max_minutes_stops_after_the_step_that_runs_out_and_saves_it(tmp_path, monkeypatch) -> None:
    import rlengine.trainer

    cfg = config("trainer.max_steps=100", "trainer.max_minutes=1", "logging.progress=false")
    trainer = stub_trainer(cfg, rows(), tmp_path)
    clock = [0.0]
    monkeypatch.setattr(rlengine.trainer.time, "monotonic", lambda: clock[0])

    def step() -> dict:
        clock[0] += 25.0  # each step takes 25 s: the third ends at 75 s, past the 60 s budget
        trainer.step_index += 1
        return {"reward/mean": 0.0, "pass_rate/mean": 0.0, "tokens/per_second": 0.0}

    saved: list[int] = []
    trainer.step = step
    trainer.checkpoint = lambda: saved.append(trainer.step_index)
    assert len(trainer.fit()) == 3 and saved == [3]


def test_learner_failure_in_a_step_is_named_with_the_step(tmp_path) -> None:
    from rlengine.errors import ActorFailure

    t = stub_trainer(config(), rows(), tmp_path, learner=StubLearner())

    def die(samples, seed):
        raise ActorFailure("learner rank 0 (pid 7) died during the policy update", actor="learner rank 0", reason="died")

    t.learner.train = die
    with pytest.raises(ActorFailure, match=r"^step 1: learner rank 0 \(pid 7\) died"):
        t.checked_step([])
