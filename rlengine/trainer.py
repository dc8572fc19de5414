"""The step loop. Read :meth:`Trainer.step` top to bottom: it is the pseudo-code of docs/architecture.md.

k        = replay.reserve(batch_size)          # past groups the buffer supplies (0 without replay)
state    = producer.take(step, batch_size - k)  # curriculum.select + rollout + rewards (or the prefetched batch)
groups   = filter.keep(groups, refill=...)
batch    = replay.mix(groups)                  # + k past groups
scalars  = reward_weighting.combine(scores)    # fresh, and past groups re-scalarised
samples  = build_samples(batch) with advantages
replay.before_update(...); reward_weighting.before_update(...)   # may return new advantages
samples  = replay.sources(generated, samples)  # RECAP: + other domains' samples, λ_k per loss term
producer.run_ahead(step)                       # one_step_off_policy: the next batch generates now
metrics  = learner.update(samples)             # (colocated: the engines sleep meanwhile)
producer.settle(); sync_weights()
curriculum.observe(...); reward_weighting.observe(...); replay.observe(...)
log(metrics); maybe eval; maybe checkpoint

A :class:`Trainer` is built from its parts (rollouts, learner, stages, logger, weight sync);
:meth:`Trainer.from_config` builds those parts from a config, as a torchtune recipe's ``setup``.
"""

from __future__ import annotations

import functools
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from rlengine import placement as placements
from rlengine.algorithms.registry import with_absolute_plugins
from rlengine.checkpoint import save_checkpoint
from rlengine.config import RunConfig
from rlengine.episode import Group
from rlengine.errors import ActorFailure, RunUnhealthy
from rlengine.eval.runner import evaluate_during_training
from rlengine.interrupts import RunStopped, StopOnSignal, interrupted_message, sigint_ignored
from rlengine.producer import Producer, Rollouts, StepState
from rlengine.runlog import health_problem, step_line
from rlengine.samples import (
    Sample,
    advantages,
    build_samples,
    episode_rewards,
    kl_in_reward,
    logprob_gap,
    needs_old_logprobs,
    set_scalar_rewards,
    with_advantages,
    with_old_logprobs,
    with_proximal_logprobs,
)
from rlengine.weight_sync import WeightSync


class Trainer:
    """The step loop over its parts. ``stages`` maps each of :data:`STAGE_KINDS` to its stage;
    ``placement`` (GPU runs) is the learner's placement group, removed on :meth:`close`."""

    def __init__(
        self,
        cfg: RunConfig,
        *,
        rollouts: Rollouts,
        learner: Any,
        stages: dict[str, Any],
        logger: Any,
        sync_weights: WeightSync,
        tokenizer: Any = None,
        placement: Any = None,
    ) -> None:
        self.cfg, self.run_dir = cfg, cfg.run_dir
        self.rollouts, self.pool, self.objectives = rollouts, rollouts.pool, rollouts.objectives
        self.learner, self.stages, self.logger, self.tokenizer = learner, stages, logger, tokenizer
        self.sync_weights = sync_weights
        """``sync_weights()``: the learner's weights into every engine; ``sync_weights([i])``: engine i."""
        self.placement = placement
        self.algorithm = with_absolute_plugins(cfg.algorithm, cfg.config_dir)
        """``algorithm`` with any plug-in estimator or loss named by absolute path."""
        self.curriculum, self.filter = stages["curriculum"], stages["filter"]
        self.reward_weighting, self.replay = stages["reward_weighting"], stages["replay"]
        self.producer = Producer(
            rollouts,
            self.curriculum.select,
            depth=1 if cfg.rollout.mode == "one_step_off_policy" else 0,
            batch_size=cfg.trainer.batch_size,
            max_steps=cfg.trainer.max_steps,
        )
        self.step_index = 0
        """Steps done; also the policy version the engines hold."""

    @classmethod
    def from_config(cls, cfg: RunConfig) -> Trainer:
        """Build every part of a run from ``cfg`` (rlengine/build.py) and resume its newest
        checkpoint when ``resume`` is set."""
        from rlengine.build import build_trainer

        return build_trainer(cfg, cls)

    # ------------------------------------------------------------------ the step

    def step(self) -> dict[str, Any]:
        """One step: the pseudo-code of docs/architecture.md, line for line."""
        step, size = self.step_index, self.cfg.trainer.batch_size
        fresh = size - self.replay.reserve(size, step)
        state = self.producer.take(step, fresh)
        with state.timer("time/stages"):
            refill = functools.partial(self.producer.refill, state)
            groups, filter_metrics = self.filter.keep(list(state.generated), fresh, refill)
            batch = self.replay.mix(groups, step)
            # fresh groups, and carried or replayed ones re-scalarised with the current weights
            stale = [g for g in batch if g.policy_version < step]
            combine = self.reward_weighting.combine
            set_scalar_rewards(
                state.generated + stale, combine, self.objectives, self.algorithm, self.cfg.rollout.max_tokens
            )
        samples, sample_metrics = self.prepare_samples(batch, state)
        with state.timer("time/reward_weighting"):
            samples, hook_metrics = self.before_update(batch, samples)
        with state.timer("time/stages"):  # RECAP: other domains' samples, λ_k on every loss term
            samples, source_metrics = self.replay.sources(list(state.generated), samples, step)
        samples = self.with_old_logprobs(samples, state, sample_metrics)
        self.producer.run_ahead(step)  # one_step_off_policy: the next batch generates during the update
        with state.timer("time/update"), self.pool.asleep():  # colocated: the engines free the GPUs
            train_metrics = self.learner.train(samples, seed=self.cfg.trainer.seed + step) if samples else {}
        self.producer.settle()
        with state.timer("time/sync"):
            self.sync_weights()
        self.step_index = self.rollouts.version = step + 1
        with state.timer("time/stages"):
            stage_metrics = self.observe(state.generated, batch)
        extra = {
            **train_metrics,
            **sample_metrics,
            **filter_metrics,
            **hook_metrics,
            **source_metrics,
            **stage_metrics,
        }
        return self.step_metrics(state, batch, extra)

    # ------------------------------------------------------------------ rewards -> samples

    def prepare_samples(self, batch: list[Group], state: StepState) -> tuple[list[Sample], dict[str, float]]:
        """The learner samples of ``batch`` with their advantages (rlengine/samples.py). The learner
        is asked for reference logprobs (``kl_placement: reward``, timed ``time/ref``), for the stale
        samples' proximal logprobs (``off_policy_correction: decoupled``, timed ``time/old_logprobs``);
        the on-policy samples' old logprobs come after the stage hooks (:meth:`with_old_logprobs`)."""
        algo = self.algorithm
        samples = build_samples(batch, self.step_index, algo.mask_truncated)
        if not samples:
            return [], {"train/skipped": 1.0}
        rewards, metrics = episode_rewards(batch), {"train/skipped": 0.0}
        if algo.kl_coef == 0:
            metrics["kl/mean"] = 0.0  # no KL term and no reference model
        elif algo.kl_placement == "reward":
            with state.timer("time/ref"):
                kl = kl_in_reward(samples, self.learner.compute_logprobs(samples, "ref"), algo.kl_kind)
            rewards = rewards - algo.kl_coef * kl
            metrics["kl/mean"] = statistics.fmean(
                k / max(1, len(s.response_ids)) for k, s in zip(kl.tolist(), samples)
            )
        values = advantages(algo, rewards, batch, samples)
        samples = with_advantages(samples, values)
        stale = [s for s in samples if s.stale]
        if stale and algo.off_policy_correction == "decoupled":  # π_prox under the current weights
            with state.timer("time/old_logprobs"):
                samples = with_proximal_logprobs(samples, self.learner.compute_logprobs(stale, "policy"))
        metrics["advantage/mean_abs"] = float(values.abs().mean())
        metrics["train/stale_fraction"] = statistics.fmean(
            s.stale for s in samples
        )  # from the policy version
        return samples, metrics

    def with_old_logprobs(
        self, samples: list[Sample], state: StepState, metrics: dict[str, float]
    ) -> list[Sample]:
        """With ``ppo_epochs > 1`` or mini-batches, the on-policy samples' old logprobs (timed
        ``time/old_logprobs``), and the vLLM/learner gap they show in ``metrics``."""
        if not (self.cfg.learner.ppo_epochs > 1 or self.cfg.learner.mini_batch_size):
            return samples
        fresh = [s for s in samples if needs_old_logprobs(s)]
        with state.timer("time/old_logprobs"):
            old = self.learner.compute_logprobs(fresh, "policy") if fresh else []
        metrics.update(logprob_gap(fresh, old))  # under the engines' weights, unlike the update's
        return with_old_logprobs(samples, old)

    def before_update(
        self, groups: list[Group], samples: list[Sample]
    ) -> tuple[list[Sample], dict[str, float]]:
        """The replay and reward-weighting stages' hooks between the samples and the update, in that
        order; each may return new advantages (RECAP's per-objective terms, hypervolume's multiplier).
        They run on every step, also one with no samples, so the stages' step counters stay in step."""
        metrics: dict[str, float] = {}
        for stage in (self.replay, self.reward_weighting):
            values, stage_metrics = stage.before_update(groups, samples)
            samples = with_advantages(samples, values)
            metrics.update(stage_metrics)
        return samples, metrics

    # ------------------------------------------------------------------ after the update

    def observe(self, generated: list[Group], batch: list[Group]) -> dict[str, float]:
        """Feedback to the stages: every rolled-out prompt's pass rate, the trained scores and groups."""
        metrics = dict(
            self.curriculum.observe([g.prompt for g in generated], [g.pass_rate for g in generated])
        )
        scores = {k: [e.scores[k] for g in batch for e in g.episodes] for k in self.objectives}
        metrics.update(self.reward_weighting.observe(scores))
        metrics.update(self.replay.observe(batch, self.step_index))
        metrics.update(self.rollouts.observe(generated))
        return metrics

    def step_metrics(self, state: StepState, batch: list[Group], extra: dict[str, Any]) -> dict[str, Any]:
        """The metrics line of a step (rlengine/runlog.py: step_line), plus pass-rate histograms."""
        staleness = [state.step - g.policy_version for g in batch for _ in g.episodes] or [0]
        engines = {
            "rollout/engine_restarts": float(sum(self.pool.restarts)),
            "rollout/engine_imbalance": self.pool.imbalance(),
            "rollout/staleness_mean": statistics.fmean(staleness),
            "rollout/staleness_min": float(min(staleness)),
            "rollout/staleness_max": float(max(staleness)),
            "sync/bytes": float(self.sync_weights.bytes),
        }
        metrics = step_line(state, batch, self.objectives, self.step_index, {**engines, **extra})
        self.logger.histogram("pass_rate/generated", [g.pass_rate for g in state.generated], self.step_index)
        self.logger.histogram("pass_rate/kept", [g.pass_rate for g in batch], self.step_index)
        return metrics

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Everything of the driver a resume needs (the learner saves its own state)."""
        return {
            "stages": {kind: stage.state_dict() for kind, stage in self.stages.items()},
            "mean_correct_length": self.rollouts.mean_correct_length,
            "length_sum": self.rollouts.length_sum,
            "length_count": self.rollouts.length_count,
            "producer": self.producer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_index = self.rollouts.version = state["step"]
        self.rollouts.mean_correct_length = state.get("mean_correct_length")
        self.rollouts.length_sum = state.get("length_sum", 0.0)
        self.rollouts.length_count = state.get("length_count", 0)
        self.producer.load_state_dict(state["producer"])
        for kind, stage in self.stages.items():
            stage.load_state_dict(state["stages"][kind])

    def checkpoint(self) -> Path:
        state = self.state_dict()
        return save_checkpoint(
            self.run_dir, self.step_index, self.learner, self.tokenizer, state, self.cfg.trainer.keep_last
        )

    def evaluate(self) -> dict[str, Any]:
        return evaluate_during_training(
            self.cfg, self.pool, self.tokenizer, self.run_dir, self.step_index, self.rollouts.eval_objectives
        )

    # ------------------------------------------------------------------ outer loop

    def fit(self) -> list[dict[str, Any]]:
        """Run until ``trainer.max_steps``, ``trainer.max_minutes``, SIGTERM (checkpoint, then
        :class:`RunStopped`) or Ctrl-C (see rlengine/interrupts.py); returns every step's metrics."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        history: list[dict[str, Any]] = []
        bar = tqdm(
            total=cfg.trainer.max_steps,
            initial=self.step_index,
            desc="train",
            unit="step",
            disable=not cfg.logging.progress,
            dynamic_ncols=True,
        )
        with StopOnSignal() as stop, bar:
            try:
                if cfg.evaluation.before_training and self.step_index == 0:
                    self.logger.log_scalars(self.evaluate(), step=0)
                started = time.monotonic()
                budget = cfg.trainer.max_minutes
                while self.step_index < cfg.trainer.max_steps:
                    metrics = self.checked_step(history)
                    out_of_time = budget is not None and time.monotonic() - started >= 60 * budget
                    every = cfg.evaluation.every_n_steps
                    last = self.step_index == cfg.trainer.max_steps or out_of_time
                    if every and (self.step_index % every == 0 or last):
                        metrics.update(self.evaluate())
                    self.logger.log(metrics, self.step_index)
                    bar.update(1)
                    bar.set_postfix(
                        reward=f"{metrics['reward/mean']:.3f}",
                        pass_rate=f"{metrics['pass_rate/mean']:.2f}",
                        tok_s=f"{metrics['tokens/per_second']:.0f}",
                        refresh=False,
                    )
                    save = cfg.trainer.save_every and self.step_index % cfg.trainer.save_every == 0
                    if save or last or stop.received:
                        path = self.checkpoint()
                    if stop.received:
                        raise RunStopped(
                            f"{stop.received} received: stopped after step {self.step_index} and wrote "
                            f"{path}. Continue with: rlengine train {self.run_dir}"
                        )
                    if out_of_time:
                        break
            except KeyboardInterrupt:
                print(interrupted_message(self.step_index + 1, self.run_dir), file=sys.stderr, flush=True)
                raise
        return history

    def checked_step(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        """:meth:`step`, then stop the run with :class:`RunUnhealthy` if it is unhealthy
        (rlengine/runlog.py: health_problem); a failed actor's error gets the step number."""
        try:
            metrics = self.step()
        except ActorFailure as failure:
            raise failure.at_step(self.step_index + 1) from failure.__cause__
        history.append(metrics)
        problem = health_problem(
            history,
            max_skipped_steps=self.cfg.trainer.max_skipped_steps,
            max_failure_fraction=self.cfg.reward.max_failure_fraction,
            reward_messages=self.rollouts.reward_messages,
        )
        if problem is not None:
            self.logger.log(metrics, self.step_index)
            raise RunUnhealthy(problem)
        return metrics

    def close(self, quick: bool = False) -> None:
        """Stop every stage, pool and actor; each part is stopped even if another fails. ``quick``
        (after Ctrl-C or a failure) gives the rollout engines seconds, not a minute, to stop."""
        parts = [stage.close for stage in self.stages.values()]
        parts += [
            self.logger.close,
            self.rollouts.rewards.close,
            lambda: self.pool.shutdown(10 if quick else 60),
        ]
        parts += [self.learner.shutdown, self.sync_weights.close]
        parts += [lambda: placements.remove(self.placement and self.placement.group)]
        with sigint_ignored():
            for part in parts:
                try:
                    part()
                except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                    print(f"rlengine: while stopping: {type(exc).__name__}: {exc}", file=sys.stderr)


def train(cfg: RunConfig) -> list[dict[str, Any]]:
    """Build everything from ``cfg``, run the loop, tear down. Returns per-step metrics."""
    trainer = Trainer.from_config(cfg)
    finished = False
    try:
        history = trainer.fit()
        finished = True
        return history
    finally:
        trainer.close(quick=not finished)
