"""The multi-process topology of a GPU cluster, on one CPU machine through Ray: two rollout engines
and two DeepSpeed learner ranks (tiny model). After each weight sync both engines hold the same
weights, the ranks stay in sync, losing one engine costs a restart, not the run, and an engine that
dies twice or hangs stops the run with its name. Also ``rollout.mode: one_step_off_policy``."""

from __future__ import annotations

import os
import signal
import time

import pytest

from rlengine.config import load_config
from rlengine.errors import ActorFailure
from rlengine.rollout import balance
from tests.conftest import tiny_run_overrides

pytestmark = pytest.mark.slow


def test_two_engines_and_two_ranks_stay_in_sync_survive_an_engine_death_and_name_a_dead_or_hung_one(
    tiny_model_dir, ray_session, tmp_path
) -> None:
    from rlengine.trainer import Trainer

    cfg = load_config(
        None,
        [
            *tiny_run_overrides(tiny_model_dir, tmp_path / "run"),
            "rollout.num_engines=2",
            "learner.num_ranks=2",
            "trainer.max_steps=4",
            "trainer.actor_timeout_s=300",
        ],
    )
    trainer = Trainer.from_config(cfg)
    try:
        pool, learner = trainer.pool, trainer.learner
        probe = [[1, 504, 3299, 314, 253, 1184, 30, 4451, 28, 46, 27, 42]]  # any fixed token ids

        def engine_views() -> list[list[list[float]]]:
            return [pool.prompt_logprobs(probe, engine_index=i) for i in range(pool.num_engines)]

        initial = engine_views()
        assert initial[0] == initial[1]
        metrics = trainer.checked_step([])
        assert metrics["rollouts/generated"] == 16 and metrics["sync/bytes"] > 0
        after = engine_views()
        assert after[0] == after[1], "the two engines hold different weights after the sync"
        assert after[0] != initial[0], "the sync did not change the engines' weights"
        rank_sums = learner.weights_checksums()
        assert len(rank_sums) == 2 and rank_sums[0] == rank_sums[1], "the learner ranks diverged"
        assert metrics["rollout/engine_imbalance"] >= 1.0 and all(s > 0 for s in pool.speeds)

        # every split over the engines gives the groups back in request order
        prompts = [probe[0][: 3 + k] for k in range(5)]  # unequal lengths: `tokens` reorders them
        greedy = {"n": 1, "temperature": 0.0, "top_p": 1.0, "max_tokens": 3}
        assert pool.plan(prompts, greedy) != balance.contiguous(len(prompts), 2)
        answers = {}
        for mode in ("even", "tokens", "throughput"):
            pool.balance_mode = mode
            answers[mode] = [[r["token_ids"] for r in group] for group in pool.generate(prompts, greedy)]
        pool.balance_mode = "tokens"
        assert answers["tokens"] == answers["even"] == answers["throughput"]

        # one of the two engines dies mid-run: it is restarted with the current weights
        os.kill(pool.engines[1].pid, signal.SIGKILL)
        metrics = trainer.checked_step([])
        assert metrics["rollout/engine_restarts"] == 1.0 and pool.restarts == [0, 1]
        assert metrics["rollouts/generated"] == 16
        assert metrics["rollout/logprob_diff_mean"] < 1e-3  # both engines sampled with the synced policy
        views = engine_views()
        assert views[0] == views[1] and views[0] != after[0]
        rank_sums = learner.weights_checksums()
        assert rank_sums[0] == rank_sums[1]

        # a second death of the same engine is not retried: the run stops, naming it, within seconds
        os.kill(pool.engines[1].pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(ActorFailure) as failure:
            trainer.checked_step([])
        assert time.monotonic() - started < 30
        message = str(failure.value)
        assert message.startswith("step 3: rollout engine 1 (pid ") and "died during generation" in message
        assert "Its last log lines" in message and failure.value.reason == "died"

        # a hung engine (frozen with SIGSTOP) is named once trainer.actor_timeout_s has passed
        pool.restarts[1] = 0
        pool.restart(1)
        frozen = pool.engines[1].pid
        pool.actor_timeout_s = 5.0
        os.kill(frozen, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(ActorFailure) as failure:
            trainer.checked_step([])
        assert 5.0 <= time.monotonic() - started < 30
        assert f"rollout engine 1 (pid {frozen}) did not finish generation within 5 s" in str(failure.value)
        assert failure.value.reason == "timeout"
        os.kill(frozen, signal.SIGCONT)
    finally:
        trainer.close(quick=True)


def test_one_step_off_policy_trains_every_sample_one_version_late_and_resumes_exactly(
    tiny_model_dir, ray_session, tmp_path
) -> None:
    """The next step's batch is generated while the learner updates: from step 2 on every trained
    sample is exactly one policy version old, its PPO ratio sees the lag, and a checkpoint holds the
    prefetched batch so a resume continues exactly."""
    import json
    import shutil

    import torch

    from rlengine.trainer import train

    run = tmp_path / "run"
    overrides = [
        *tiny_run_overrides(tiny_model_dir, run),
        "rollout.mode=one_step_off_policy",
        "trainer.max_steps=3",
        "trainer.save_every=1",
        "trainer.keep_last=3",
    ]
    history = train(load_config(None, overrides))
    assert [m["rollouts/generated"] for m in history] == [16, 16, 16]
    assert [m["rollout/staleness_max"] for m in history] == [0.0, 1.0, 1.0]
    assert [m["rollout/staleness_min"] for m in history] == [0.0, 1.0, 1.0]
    for m in history[1:]:
        assert m["train/stale_fraction"] == 1.0 and m["actor/stale_ratio_deviation"] > 0
    def buffered(step: int) -> list[dict]:
        state = torch.load(run / f"checkpoints/step_{step}/trainer_state.pt", weights_only=False)
        return state["producer"]["ready"]

    (prefetched,) = buffered(2)  # step 3's batch (index 2), generated with policy version 1
    assert prefetched["step"] == 2 and list(prefetched["groups"]["segment_versions"]) == [1] * 16
    assert buffered(3) == []  # no step after the last

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "checkpoints" / "step_3")
    resumed = train(
        load_config(None, [*tiny_run_overrides(tiny_model_dir, copy), *overrides[-4:], "resume=true"])
    )
    assert [m["step"] for m in resumed] == [3]
    for key in ("reward/mean", "tokens/generated", "loss/policy", "rollout/staleness_max"):
        assert resumed[0][key] == history[2][key], key
    assert [json.loads(line)["step"] for line in (copy / "metrics.jsonl").read_text().splitlines()] == [
        1,
        2,
        3,
    ]
