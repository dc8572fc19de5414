"""The step loop. Read :meth:`Trainer.step` top to bottom: it is the pseudo-code of docs/architecture.md.

k        = replay.reserve(batch_size)          # past groups the buffer supplies (0 without replay)
prompts  = curriculum.select(batch_size - k)
groups   = rollout_pool.generate(prompts, n=G); scores = rewards.score(groups)
groups   = filter.keep(groups, refill=...)
batch    = replay.mix(groups)                  # + k past groups
scalars  = reward_weighting.combine(scores)    # fresh, and past groups re-scalarised
adv      = advantages(batch)
replay.before_update(...); reward_weighting.before_update(...)   # optional hooks
metrics  = learner.update(batch, adv)
rollout_pool.sync_weights(learner)
curriculum.observe(...); reward_weighting.observe(...); replay.observe(...)
log(metrics); maybe eval; maybe checkpoint
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reward import RewardItem, RewardPool, parse_reward_specs
from rlengine import placement
from rlengine.algorithms import compute_advantages, kl_penalty, overlong_reward_penalty
from rlengine.batch import Group, Response, RolloutView, StepState, pack_state, rollout_sampling, unpack_state
from rlengine.checkpoint import load_trainer_state, save_checkpoint
from rlengine.config import RunConfig, dump_yaml, to_dict
from rlengine.data.prompts import load_prompt_rows, split_validation
from rlengine.errors import ActorFailure
from rlengine.eval.runner import evaluate_during_training
from rlengine.interrupts import RunStopped, StopOnSignal, interrupted_message, sigint_ignored
from rlengine.resume import checkpoint_to_resume
from rlengine.runlog import MetricsLogger, health_problem, step_line
from rlengine.runtime import TRANSFER_ENV, init_ray, use_gpu
from rlengine.stages import STAGE_KINDS, StageContext, build_stage
from rlengine.weight_sync import WeightSync, resolve_backend


class Trainer:
    """Owns the Ray actors (rollout pool, learner group, reward pool) and the four stages."""

    def __init__(self, cfg: RunConfig) -> None:
        from transformers import AutoTokenizer

        from rlengine.learner.group import LearnerGroup, LearnerView
        from rlengine.learner.spec import LearnerSpec
        from rlengine.models import resolve_model
        from rlengine.rollout import RolloutPool

        self.cfg = cfg
        self.run_dir = cfg.run_dir
        checkpoint = checkpoint_to_resume(cfg)  # creates run_dir; checks it before anything starts
        random.seed(cfg.trainer.seed)
        np.random.seed(cfg.trainer.seed)
        torch.manual_seed(cfg.trainer.seed)
        self.model_path = resolve_model(
            cfg.model.name, cache_dir=cfg.model.cache_dir, trust_remote_code=cfg.model.trust_remote_code
        )
        self.tokenizer = AutoTokenizer.from_pretrained(
            self.model_path, trust_remote_code=cfg.model.trust_remote_code
        )
        rows, validation_rows = split_validation(
            load_prompt_rows(cfg, self.tokenizer), cfg.data.validation_size
        )
        self.reward_specs = parse_reward_specs(cfg.reward.functions)
        self.objectives = [spec.name for spec in self.reward_specs]

        init_ray(cfg.trainer.ray_address)
        gpu = use_gpu()
        self.rewards = RewardPool(
            self.reward_specs,
            num_workers=cfg.reward.num_workers,
            timeout_s=cfg.reward.timeout_s,
            import_timeout_s=cfg.reward.import_timeout_s,
            base_dir=cfg.config_dir,
        )
        backend = resolve_backend(cfg.rollout, gpu)  # rollout.weight_sync for this machine
        self.placement = placement.learner_placement(cfg, gpu)  # GPU only: the ranks' placement group
        spec = LearnerSpec.from_config(cfg, self.model_path, gpu=gpu)
        self.learner = LearnerGroup(
            spec,
            num_ranks=cfg.learner.num_ranks,
            actor_timeout_s=cfg.trainer.actor_timeout_s,
            placement=self.placement,
            # a multi-node cluster: the run directory, which every node sees (checkpoints need it too)
            rendezvous_dir=str(self.run_dir.resolve()) if cfg.trainer.ray_address else None,
            extra_env=TRANSFER_ENV if backend != "file" else None,
        )
        self.step_index = 0
        self.prefetched: StepState | None = None
        """``one_step_off_policy``: the next step's groups, generated during this step's update."""
        self.reward_messages: list[str] = []
        """The first reward errors of the latest step (for the diagnosis when most rewards fail)."""
        self.mean_correct_length: float | None = None
        """Running mean token length of correct responses (``reward.length_momentum``), for rewards."""
        engine_weights = self.model_path
        if checkpoint is not None:
            self.learner.load_checkpoint(str(checkpoint / "deepspeed"))
            engine_weights = str(checkpoint / "model")
        colocated = self.placement.group if self.placement and self.placement.colocated else None
        self.pool = RolloutPool.from_config(cfg, engine_weights, self.model_path, gpu, colocated, backend)
        self.sync_weights = WeightSync(backend, self.learner, self.pool, cfg.rollout.tensor_parallel_size)
        """``sync_weights()``: the learner's weights into every engine (``sync_weights([i])``: a
        restarted engine i)."""
        self.pool.on_restart = lambda engine: self.sync_weights([engine])
        context = StageContext(
            rows=rows,
            seed=cfg.trainer.seed,
            objectives=self.objectives,
            reward_weights=[spec.weight for spec in self.reward_specs],
            validation_rows=validation_rows,
            algorithm=cfg.algorithm,
            objective_weights=self.objective_weights,
            rollout=RolloutView(lambda prompts, n: self.rollout(prompts, StepState(self.step_index), n=n)),
            learner=LearnerView(self.learner),
            policy_path=self.model_path,
            model=cfg.model,
            gpu=gpu,
        )
        self.stages = {
            kind: build_stage(kind, getattr(cfg, kind), context, cfg.config_dir) for kind in STAGE_KINDS
        }
        self.curriculum, self.filter = self.stages["curriculum"], self.stages["filter"]
        self.reward_weighting, self.replay = self.stages["reward_weighting"], self.stages["replay"]
        if checkpoint is not None:
            state = load_trainer_state(checkpoint)
            self.step_index = state["step"]
            self.mean_correct_length = state.get("mean_correct_length")
            self.prefetched = unpack_state(state["prefetched"]) if state.get("prefetched") else None
            for kind, stage in self.stages.items():
                stage.load_state_dict(state["stages"][kind])
        (self.run_dir / "config.yaml").write_text(dump_yaml(cfg))  # only now: the run has started
        self.logger = MetricsLogger(
            self.run_dir,
            tensorboard=cfg.logging.tensorboard,
            wandb=cfg.logging.wandb,
            wandb_project=cfg.logging.wandb_project,
            run_name=cfg.trainer.run_name,
            config=to_dict(cfg),
            resume_step=self.step_index,
        )

    # ------------------------------------------------------------------ the step

    def step(self) -> dict[str, Any]:
        """One step: the pseudo-code of docs/architecture.md, line for line."""
        cfg, state, self.prefetched = self.cfg, self.prefetched, None
        if state is None:  # sync mode (and the first step of one_step_off_policy)
            state = StepState(self.step_index)
            with state.timer("time/stages"):
                reserve = getattr(self.replay, "reserve", None)
                fresh = cfg.trainer.batch_size - (
                    reserve(cfg.trainer.batch_size, self.step_index) if reserve else 0
                )
                prompts = self.curriculum.select(fresh)
            groups = self.rollout(prompts, state)
        else:  # one_step_off_policy: generated by the previous policy during the previous update
            state.start, groups, fresh = time.perf_counter(), list(state.generated), len(state.generated)
        with state.timer("time/stages"):
            refill = lambda count: self.rollout(self.curriculum.select(count), state)  # noqa: E731
            groups, filter_metrics = self.filter.keep(groups, fresh, refill)
            batch = self.replay.mix(groups, self.step_index)
            # fresh groups, and carried or replayed ones re-scalarised with the current weights
            self.set_scalar_rewards(
                state.generated + [g for g in batch if g.policy_version < self.step_index]
            )
        with state.timer("time/train"):
            samples, adv_metrics = self.build_samples(batch)
        with state.timer("time/reward_weighting"):
            weighting_metrics = self.before_update(batch, samples)
        with state.timer("time/train"):
            ahead = self.submit_next_rollout()  # one_step_off_policy: overlaps the update
            self.pool.sleep()  # placement: colocated: the engines free the GPUs for the update
            train_metrics = (
                self.learner.train(samples, seed=cfg.trainer.seed + self.step_index) if samples else {}
            )
        if ahead is not None:
            self.prefetched = ahead[0]
            self.scored_groups(ahead[1], self.pool.collect(ahead[2]), ahead[0])
        staleness = [self.step_index - g.policy_version for g in batch for _ in g.responses] or [0]
        with state.timer("time/sync"):
            self.sync_weights()
        self.step_index += 1
        with state.timer("time/stages"):
            stage_metrics = self.observe(state.generated, batch)
        return self.step_metrics(
            state,
            batch,
            {
                **train_metrics,
                **adv_metrics,
                **filter_metrics,
                **weighting_metrics,
                **stage_metrics,
                "rollout/staleness_mean": statistics.fmean(staleness),
                "rollout/staleness_min": float(min(staleness)),
                "rollout/staleness_max": float(max(staleness)),
            },
        )

    # ------------------------------------------------------------------ rollout + reward

    def rollout(self, prompts: list[dict], state: StepState, n: int | None = None) -> list[Group]:
        """Generate ``n`` (default ``rollout.n``) responses per prompt, score them, record them in ``state``."""
        if not prompts:
            return []
        with state.timer("time/rollout"):
            sampling = rollout_sampling(
                self.cfg, state.step, state.rounds, len(prompts), n or self.cfg.rollout.n
            )
            outputs = self.pool.generate([p["prompt_ids"] for p in prompts], sampling)
        return self.scored_groups(prompts, outputs, state)

    def submit_next_rollout(self) -> tuple[StepState, list[dict], list[Any]] | None:
        """``rollout.mode: one_step_off_policy``: choose the next step's prompts and start generating
        them with the weights the engines hold now (no wait). None in sync mode and at the last step."""
        if (
            self.cfg.rollout.mode != "one_step_off_policy"
            or self.step_index + 1 >= self.cfg.trainer.max_steps
        ):
            return None
        state = StepState(self.step_index + 1)
        with state.timer("time/stages"):
            prompts = self.curriculum.select(self.cfg.trainer.batch_size)
        sampling = rollout_sampling(self.cfg, state.step, 0, len(prompts), self.cfg.rollout.n)
        return state, prompts, self.pool.submit([p["prompt_ids"] for p in prompts], sampling)

    def scored_groups(self, prompts: list[dict], outputs: list[list[dict]], state: StepState) -> list[Group]:
        """Groups from the engines' ``outputs`` (sampled by the current policy version), scored and
        recorded in ``state``."""
        groups = [
            Group(
                prompt=p,
                prompt_ids=p["prompt_ids"],
                responses=[
                    Response(o["text"], o["token_ids"], o["logprobs"], o["finish_reason"]) for o in outs
                ],
                policy_version=self.step_index,
            )
            for p, outs in zip(prompts, outputs)
        ]
        with state.timer("time/reward"):
            self.score(groups, state)
        state.rounds += 1
        state.generated += groups
        return groups

    def score(self, groups: list[Group], state: StepState) -> None:
        """Fill ``Response.scores`` and ``Response.correct`` through the reward process pool."""
        items = [self.reward_item(g.prompt, r.text, len(r.token_ids)) for g in groups for r in g.responses]
        result = self.rewards.score(items)
        flat = [r for g in groups for r in g.responses]
        first = self.objectives[0]
        for i, response in enumerate(flat):
            response.scores = {name: values[i] for name, values in result.scores.items()}
            response.correct = response.scores[first] >= self.cfg.reward.correct_threshold
        state.reward_faults.update({"reward/errors": result.errors, "reward/timeouts": result.timeouts})
        state.reward_calls += len(items) * len(self.objectives)
        state.reward_messages += result.error_messages[: max(0, 5 - len(state.reward_messages))]
        self.reward_messages = state.reward_messages

    def reward_item(self, row: dict, text: str, num_tokens: int) -> RewardItem:
        """What a reward function sees: the prompt row's fields as metadata, plus the response's
        length in tokens and the running mean length of correct responses."""
        metadata = {k: v for k, v in row.items() if k != "prompt_ids"}
        metadata.update(response_tokens=num_tokens, mean_correct_length=self.mean_correct_length)
        return RewardItem(row["prompt"], text, str(row["answer"]), metadata)

    def eval_objectives(self, rows: list[dict], records: list[Any]) -> dict[str, float]:
        """Mean of every reward objective over one benchmark's evaluation completions."""
        items = [
            self.reward_item(row, c["text"], c.get("num_tokens") or 0)
            for row, record in zip(rows, records)
            for c in record.completions
        ]
        scores = self.rewards.score(items).scores if items else {}
        return {k: statistics.fmean(scores[k]) for k in self.objectives if scores.get(k)}

    # ------------------------------------------------------------------ rewards -> advantages

    def set_scalar_rewards(self, groups: list[Group]) -> None:
        """Weighted objectives, plus DAPO overlong shaping when configured."""
        algo, flat = self.cfg.algorithm, [r for g in groups for r in g.responses]
        if not flat:
            return
        scalars = self.reward_weighting.combine({k: [r.scores[k] for r in flat] for k in self.objectives})
        if algo.overlong_shaping:
            lengths = torch.tensor([len(r.token_ids) for r in flat], dtype=torch.float32)
            penalty = overlong_reward_penalty(lengths, self.cfg.rollout.max_tokens, algo.overlong_cache)
            scalars = [s + float(p) for s, p in zip(scalars, penalty)]
        for response, value in zip(flat, scalars):
            response.reward = value

    def build_samples(self, groups: list[Group]) -> tuple[list[dict], dict[str, float]]:
        """One learner sample per response, with its advantage (KL-in-reward applied first).

        Groups sampled by an older policy (carried over by the filter, or replayed) bring their
        behaviour logprobs as ``old_logprobs``; with ``ppo_epochs > 1`` or mini-batches the fresh
        ones get the learner's own logprobs before the update.
        """
        algo = self.cfg.algorithm
        flat = [(gi, r) for gi, g in enumerate(groups) for r in g.responses]
        samples = [
            {
                "prompt_ids": groups[gi].prompt_ids,
                "response_ids": r.token_ids,
                "rollout_logprobs": r.logprobs,
                "loss_masked": algo.mask_truncated and r.truncated,
                "old_logprobs": r.logprobs if groups[gi].policy_version < self.step_index else None,
            }
            for gi, r in flat
        ]
        if not samples:
            return [], {"train/skipped": 1.0}
        rewards = torch.tensor([r.reward for _, r in flat], dtype=torch.float32)
        metrics: dict[str, float] = {"train/skipped": 0.0}
        if algo.kl_coef == 0:
            metrics["kl/mean"] = 0.0  # no KL term and no reference model
        elif algo.kl_placement == "reward":
            ref = self.learner.compute_logprobs(samples, "ref")
            kl = [
                float(kl_penalty(torch.tensor(s["rollout_logprobs"]), torch.tensor(lp), algo.kl_kind).sum())
                for s, lp in zip(samples, ref)
            ]
            rewards = rewards - algo.kl_coef * torch.tensor(kl)
            metrics["kl/mean"] = statistics.fmean(
                k / max(1, len(s["response_ids"])) for k, s in zip(kl, samples)
            )
        advantages = compute_advantages(
            algo.advantage,
            rewards,
            torch.tensor([gi for gi, _ in flat]),
            eps=algo.eps,
            lengths=torch.tensor([len(s["response_ids"]) * (not s["loss_masked"]) for s in samples]),
        )
        for sample, adv in zip(samples, advantages.tolist()):
            sample["advantage"] = adv
        if self.cfg.learner.ppo_epochs > 1 or self.cfg.learner.mini_batch_size:
            fresh = [s for s in samples if s["old_logprobs"] is None]
            for sample, lp in zip(fresh, self.learner.compute_logprobs(fresh, "policy") if fresh else []):
                sample["old_logprobs"] = lp
        metrics["advantage/mean_abs"] = float(advantages.abs().mean())
        metrics["train/stale_fraction"] = statistics.fmean(s["old_logprobs"] is not None for s in samples)
        return samples, metrics

    def before_update(self, groups: list[Group], samples: list[dict]) -> dict[str, float]:
        """The replay and reward-weighting stages' optional hooks between the samples and the update
        (RECAP sets per-objective advantages; hypervolume rescales them; gradient weighting
        measures per-objective gradients on the learner)."""
        metrics: dict[str, float] = {}
        for stage in (self.replay, self.reward_weighting):
            hook = getattr(stage, "before_update", None)
            if hook is not None and samples:
                metrics.update(hook(groups, samples))
        return metrics

    def objective_weights(self) -> dict[str, float]:
        """w_k of every objective under the current reward weighting: the scalar of a response that
        scores 1 on objective k and 0 on the others."""
        unit = {
            k: [float(j == i) for j in range(len(self.objectives))] for i, k in enumerate(self.objectives)
        }
        return dict(zip(self.objectives, self.reward_weighting.combine(unit)))

    # ------------------------------------------------------------------ after the update

    def observe(self, generated: list[Group], batch: list[Group]) -> dict[str, float]:
        """Feedback to the stages: every rolled-out prompt's pass rate, the trained scores and groups."""
        metrics = dict(
            self.curriculum.observe([g.prompt for g in generated], [g.pass_rate for g in generated])
        )
        scores = {k: [r.scores[k] for g in batch for r in g.responses] for k in self.objectives}
        metrics.update(self.reward_weighting.observe(scores))
        metrics.update(self.replay.observe(batch, self.step_index))
        metrics.update(self.update_correct_length(generated))
        return metrics

    def update_correct_length(self, groups: list[Group]) -> dict[str, float]:
        """Fold this step's mean length of correct responses into the running mean the rewards see."""
        lengths = [len(r.token_ids) for g in groups for r in g.responses if r.correct]
        if lengths:
            mean, momentum = statistics.fmean(lengths), self.cfg.reward.length_momentum
            previous = self.mean_correct_length
            self.mean_correct_length = (
                mean if previous is None else momentum * previous + (1 - momentum) * mean
            )
        if self.mean_correct_length is None:
            return {}
        return {"reward/mean_correct_length": self.mean_correct_length}

    def step_metrics(self, state: StepState, batch: list[Group], extra: dict[str, Any]) -> dict[str, Any]:
        """The metrics line of a step (rlengine/runlog.py: step_line), plus pass-rate histograms."""
        engines = {
            "rollout/engine_restarts": float(sum(self.pool.restarts)),
            "rollout/engine_imbalance": self.pool.imbalance(),
            "sync/bytes": float(self.sync_weights.bytes),
        }
        metrics = step_line(state, batch, self.objectives, self.step_index, {**engines, **extra})
        self.logger.histogram("pass_rate/generated", [g.pass_rate for g in state.generated], self.step_index)
        self.logger.histogram("pass_rate/kept", [g.pass_rate for g in batch], self.step_index)
        return metrics

    # ------------------------------------------------------------------ outer loop

    def checkpoint(self) -> Path:
        state = {
            "stages": {kind: stage.state_dict() for kind, stage in self.stages.items()},
            "mean_correct_length": self.mean_correct_length,
            "prefetched": None if self.prefetched is None else pack_state(self.prefetched, self.objectives),
        }
        return save_checkpoint(
            self.run_dir, self.step_index, self.learner, self.tokenizer, state, self.cfg.trainer.keep_last
        )

    def evaluate(self) -> dict[str, Any]:
        return evaluate_during_training(
            self.cfg, self.pool, self.tokenizer, self.run_dir, self.step_index, self.eval_objectives
        )

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
        """:meth:`step`, then stop the run if it is unhealthy (rlengine/runlog.py: health_problem);
        a failed actor's error gets the step number."""
        try:
            metrics = self.step()
        except ActorFailure as failure:
            raise failure.at_step(self.step_index + 1) from failure.__cause__
        history.append(metrics)
        problem = health_problem(
            history,
            max_skipped_steps=self.cfg.trainer.max_skipped_steps,
            max_failure_fraction=self.cfg.reward.max_failure_fraction,
            reward_messages=self.reward_messages,
        )
        if problem is not None:
            self.logger.log(metrics, self.step_index)
            raise RuntimeError(f"rlengine: stopping the run. {problem}")
        return metrics

    def close(self, quick: bool = False) -> None:
        """Stop every stage, pool and actor; each part is stopped even if another fails. ``quick``
        (after Ctrl-C or a failure) gives the rollout engines seconds, not a minute, to stop."""
        parts = [stage.close for stage in self.stages.values() if callable(getattr(stage, "close", None))]
        parts += [self.logger.close, self.rewards.close, lambda: self.pool.shutdown(10 if quick else 60)]
        parts += [self.learner.shutdown, self.sync_weights.close]
        parts += [lambda: placement.remove(self.placement and self.placement.group)]
        with sigint_ignored():
            for part in parts:
                try:
                    part()
                except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                    print(f"rlengine: while stopping: {type(exc).__name__}: {exc}", file=sys.stderr)


def train(cfg: RunConfig) -> list[dict[str, Any]]:
    """Build everything from ``cfg``, run the loop, tear down. Returns per-step metrics."""
    trainer = Trainer(cfg)
    finished = False
    try:
        history = trainer.fit()
        finished = True
        return history
    finally:
        trainer.close(quick=not finished)
