"""The step loop. Read ``Trainer.step`` top to bottom: it is the pseudo-code of DESIGN.md.

prompts  = curriculum.select(batch_size)
groups   = rollout_pool.generate(prompts, n=G)   ; scores = rewards.score(groups)
groups   = filter.keep(groups, refill=...)
scalars  = reward_weighting.combine(scores)
batch    = replay.mix(groups, scalars)
adv      = advantages(batch)
metrics  = learner.update(batch, adv)
rollout_pool.sync_weights(learner)
curriculum.observe(...); reward_weighting.observe(...); replay.observe(...)
log(metrics); maybe eval; maybe checkpoint
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlengine.algorithms import compute_advantages, kl_penalty, overlong_reward_penalty
from rlengine.batch import Group, Response
from rlengine.checkpoint import latest_checkpoint, load_trainer_state, save_checkpoint
from rlengine.config import RunConfig, dump_yaml, to_dict
from rlengine.logging import MetricsLogger
from rlengine.stages import StageContext, build_stage


def init_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Join ``address`` or start a local Ray instance (no dashboard, auth off)."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=True)


def use_gpu() -> bool:
    return torch.cuda.is_available()


def load_prompt_rows(cfg: RunConfig, tokenizer: Any) -> list[dict]:
    """Load the prompt source, render every prompt, tokenize it, drop prompts that do not fit."""
    from rlengine.data import load_prompt_source, render_prompt

    data = cfg.data
    kwargs: dict[str, Any] = {}
    if data.source == "synthetic_arithmetic":
        kwargs = dict(
            num=data.synthetic_num,
            seed=cfg.trainer.seed,
            ops=tuple(data.synthetic_ops),
            min_digits=data.synthetic_min_digits,
            max_digits=data.synthetic_max_digits,
        )
    rows = load_prompt_source(
        data.source,
        split=data.split,
        problem_field=data.problem_field,
        answer_field=data.answer_field,
        id_field=data.id_field,
        limit=data.limit,
        base_dir=cfg.config_dir,
        **kwargs,
    )
    budget = cfg.rollout.max_model_len - cfg.rollout.max_tokens
    kept = []
    for row in rows:
        text = render_prompt(
            row["problem"],
            tokenizer,
            template=data.template,
            chat_template=data.chat_template,
            system_prompt=data.system_prompt,
            row=row,
        )
        ids = tokenizer(text, add_special_tokens=not data.chat_template)["input_ids"]
        if len(ids) <= budget:
            kept.append({**row, "prompt": text, "prompt_ids": ids})
    if not kept:
        raise ValueError(
            f"data.source '{data.source}': no prompt fits in rollout.max_model_len - rollout.max_tokens = {budget} tokens"
        )
    return kept


def learner_options(cfg: RunConfig) -> dict[str, Any]:
    """Everything a learner rank needs from the config (a plain dict: it crosses to Ray actors)."""
    algo, learner = cfg.algorithm, cfg.learner
    responses = cfg.trainer.batch_size * cfg.rollout.n
    per_step = -(-responses // learner.mini_batch_size) if learner.mini_batch_size else 1
    return {
        "dtype": cfg.model.dtype,
        "trust_remote_code": cfg.model.trust_remote_code,
        "grad_checkpointing": learner.grad_checkpointing,
        "lr": learner.lr,
        "betas": learner.betas,
        "weight_decay": learner.weight_decay,
        "lr_schedule": learner.lr_schedule,
        "warmup_steps": learner.warmup_steps,
        "min_lr_ratio": learner.min_lr_ratio,
        "total_steps": cfg.trainer.max_steps * learner.ppo_epochs * per_step,
        "grad_clip": learner.grad_clip,
        "zero_stage": learner.zero_stage,
        "threads": learner.threads,
        "micro_batch_tokens": learner.micro_batch_tokens,
        "mini_batch_size": learner.mini_batch_size,
        "ppo_epochs": learner.ppo_epochs,
        "seed": cfg.trainer.seed,
        "temperature": cfg.rollout.temperature,
        "loss": algo.loss,
        "agg": algo.agg,
        "clip_low": algo.clip_low,
        "clip_high": algo.clip_high,
        "dual_clip": algo.dual_clip,
        "max_response_length": cfg.rollout.max_tokens,
        "tis_cap": algo.tis_cap,
        "kl_coef": algo.kl_coef,
        "kl_kind": algo.kl_kind,
        "kl_placement": algo.kl_placement,
        "entropy_coef": algo.entropy_coef,
    }


class Trainer:
    """Owns the Ray actors (rollout pool, learner group, reward pool) and the four stages."""

    def __init__(self, cfg: RunConfig) -> None:
        from transformers import AutoTokenizer

        from reward import RewardPool, parse_reward_specs
        from rlengine.learner import LearnerGroup
        from rlengine.models import resolve_model
        from rlengine.rollout import RolloutPool

        self.cfg = cfg
        self.run_dir = cfg.run_dir
        self.run_dir.mkdir(parents=True, exist_ok=True)
        random.seed(cfg.trainer.seed)
        np.random.seed(cfg.trainer.seed)
        torch.manual_seed(cfg.trainer.seed)

        checkpoint = latest_checkpoint(self.run_dir)
        if checkpoint is not None and not cfg.resume:
            raise FileExistsError(
                f"run directory '{self.run_dir}' already has checkpoints (newest: {checkpoint.name}); "
                "pass resume=true to continue it, or set trainer.output_dir / trainer.run_name to start a new run"
            )
        self.model_path = resolve_model(
            cfg.model.name, cache_dir=cfg.model.cache_dir, trust_remote_code=cfg.model.trust_remote_code
        )
        self.tokenizer = AutoTokenizer.from_pretrained(
            self.model_path, trust_remote_code=cfg.model.trust_remote_code
        )
        (self.run_dir / "config.yaml").write_text(dump_yaml(cfg))

        rows = load_prompt_rows(cfg, self.tokenizer)
        self.reward_specs = parse_reward_specs(cfg.reward.functions)
        self.objectives = [spec.name for spec in self.reward_specs]
        context = StageContext(
            rows=rows,
            seed=cfg.trainer.seed,
            objectives=self.objectives,
            reward_weights=[spec.weight for spec in self.reward_specs],
        )
        self.curriculum = build_stage("curriculum", cfg.curriculum, context)
        self.filter = build_stage("filter", cfg.filter, context)
        self.reward_weighting = build_stage("reward_weighting", cfg.reward_weighting, context)
        self.replay = build_stage("replay", cfg.replay, context)
        self.stages = {
            "curriculum": self.curriculum,
            "filter": self.filter,
            "reward_weighting": self.reward_weighting,
            "replay": self.replay,
        }

        init_ray(cfg.trainer.ray_address)
        gpu = use_gpu()
        self.rewards = RewardPool(
            self.reward_specs,
            num_workers=cfg.reward.num_workers,
            timeout_s=cfg.reward.timeout_s,
            base_dir=cfg.config_dir,
        )
        self.learner = LearnerGroup(
            self.model_path, learner_options(cfg), num_ranks=cfg.learner.num_ranks, use_gpu=gpu
        )
        self.step_index = 0
        engine_weights = self.model_path
        if checkpoint is not None:
            self.learner.load_checkpoint(str(checkpoint / "deepspeed"))
            state = load_trainer_state(checkpoint)
            self.step_index = state["step"]
            for name, stage in self.stages.items():
                stage.load_state_dict(state["stages"][name])
            engine_weights = str(checkpoint / "model")
        r = cfg.rollout
        self.pool = RolloutPool(
            engine_weights,
            num_engines=r.num_engines,
            dtype=cfg.model.dtype,
            max_model_len=r.max_model_len,
            seed=cfg.trainer.seed,
            enforce_eager=r.enforce_eager,
            trust_remote_code=cfg.model.trust_remote_code,
            kv_cache_gib=r.kv_cache_gib,
            gpu_memory_utilization=r.gpu_memory_utilization,
            engine_kwargs=r.engine_kwargs,
            use_gpu=gpu,
        )
        self.weights_dir = Path(
            tempfile.mkdtemp(prefix="rlengine-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
        )
        self.logger = MetricsLogger(
            self.run_dir,
            tensorboard=cfg.logging.tensorboard,
            wandb=cfg.logging.wandb,
            wandb_project=cfg.logging.wandb_project,
            run_name=cfg.trainer.run_name,
            config=to_dict(cfg),
            resume_step=self.step_index,
        )

    # ------------------------------------------------------------------ rollout + reward

    def sampling(self, num_prompts: int, n: int, round_index: int = 0) -> dict[str, Any]:
        """Sampling parameters; per-request seeds make a resumed run sample identically."""
        r = self.cfg.rollout
        base = (self.cfg.trainer.seed * 1_000_003 + self.step_index * 1009 + round_index * 101) % (2**31)
        return {
            "n": n,
            "temperature": r.temperature,
            "top_p": r.top_p,
            "max_tokens": r.max_tokens,
            "seeds": [(base + i * 7919) % (2**31) for i in range(num_prompts)],
        }

    def rollout(self, prompts: list[dict], round_index: int = 0) -> tuple[list[Group], dict[str, float]]:
        """Generate ``rollout.n`` responses per prompt and score them."""
        start = time.perf_counter()
        outputs = self.pool.generate(
            [p["prompt_ids"] for p in prompts], self.sampling(len(prompts), self.cfg.rollout.n, round_index)
        )
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
        rollout_time = time.perf_counter() - start
        start = time.perf_counter()
        stats = self.score(groups)
        return groups, {"time/rollout": rollout_time, "time/reward": time.perf_counter() - start, **stats}

    def score(self, groups: list[Group]) -> dict[str, float]:
        """Fill ``Response.scores`` and ``Response.correct`` through the reward process pool."""
        from reward import RewardItem

        metadata = [{k: v for k, v in g.prompt.items() if k != "prompt_ids"} for g in groups]
        items = [
            RewardItem(g.prompt["prompt"], r.text, g.prompt["answer"], meta)
            for g, meta in zip(groups, metadata)
            for r in g.responses
        ]
        result = self.rewards.score(items)
        flat = [r for g in groups for r in g.responses]
        first = self.objectives[0]
        for i, response in enumerate(flat):
            response.scores = {name: values[i] for name, values in result.scores.items()}
            response.correct = response.scores[first] >= self.cfg.reward.correct_threshold
        return {"reward/errors": float(result.errors), "reward/timeouts": float(result.timeouts)}

    def refill(self, num_prompts: int) -> list[Group]:
        """More scored groups for the filter stage (one extra rollout round)."""
        self._refill_rounds += 1
        groups, stats = self.rollout(self.curriculum.select(num_prompts), round_index=self._refill_rounds)
        for key in ("time/rollout", "time/reward"):
            self._times[key] += stats[key]
        self._generated += groups
        return groups

    # ------------------------------------------------------------------ rewards -> advantages

    def set_scalar_rewards(self, groups: list[Group]) -> None:
        """Weighted objectives, plus DAPO overlong shaping and KL-in-reward when configured."""
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
        """One learner sample per response, with its advantage."""
        algo = self.cfg.algorithm
        flat = [(gi, r) for gi, g in enumerate(groups) for r in g.responses]
        samples = [
            {
                "prompt_ids": groups[gi].prompt_ids,
                "response_ids": r.token_ids,
                "rollout_logprobs": r.logprobs,
                "loss_masked": algo.mask_truncated and r.truncated,
            }
            for gi, r in flat
        ]
        rewards = torch.tensor([r.reward for _, r in flat], dtype=torch.float32)
        metrics: dict[str, float] = {}
        if algo.kl_coef > 0 and algo.kl_placement == "reward":
            ref = self.learner.compute_logprobs(samples, "ref")
            kl = [
                float(kl_penalty(torch.tensor(s["rollout_logprobs"]), torch.tensor(lp), algo.kl_kind).sum())
                for s, lp in zip(samples, ref)
            ]
            rewards = rewards - algo.kl_coef * torch.tensor(kl)
            metrics["kl/mean"] = statistics.fmean(
                k / max(1, len(s["response_ids"])) for k, s in zip(kl, samples)
            )
        group_index = torch.tensor([gi for gi, _ in flat])
        advantages = compute_advantages(algo.advantage, rewards, group_index, eps=algo.eps)
        for sample, adv in zip(samples, advantages.tolist()):
            sample["advantage"] = adv
        if self.cfg.learner.ppo_epochs > 1 or self.cfg.learner.mini_batch_size:
            for sample, lp in zip(samples, self.learner.compute_logprobs(samples, "policy")):
                sample["old_logprobs"] = lp
        metrics["advantage/mean_abs"] = float(advantages.abs().mean())
        return samples, metrics

    # ------------------------------------------------------------------ the step

    def step(self) -> dict[str, Any]:
        cfg = self.cfg
        step_start = time.perf_counter()
        self._times = {"time/rollout": 0.0, "time/reward": 0.0}
        self._refill_rounds = 0

        stage_time = time.perf_counter()
        prompts = self.curriculum.select(cfg.trainer.batch_size)
        stage_time = time.perf_counter() - stage_time
        groups, stats = self.rollout(prompts)
        for key in ("time/rollout", "time/reward"):
            self._times[key] += stats[key]
        self._generated = list(groups)

        t = time.perf_counter()
        groups, filter_metrics = self.filter.keep(groups, cfg.trainer.batch_size, self.refill)
        self.set_scalar_rewards(self._generated)
        batch = self.replay.mix(groups, self.step_index)
        stage_time += time.perf_counter() - t

        # The filter may keep nothing (e.g. every group all-wrong after filter.max_rounds): skip the update.
        samples, adv_metrics = self.build_samples(batch) if batch else ([], {"train/skipped": 1.0})
        t = time.perf_counter()
        train_metrics = (
            self.learner.train(samples, seed=cfg.trainer.seed + self.step_index) if samples else {}
        )
        train_time = time.perf_counter() - t

        t = time.perf_counter()
        weights = str(self.weights_dir / "policy.safetensors")
        self.learner.export_weights(weights)
        self.pool.sync_weights(weights)
        sync_time = time.perf_counter() - t

        t = time.perf_counter()
        self.step_index += 1
        stage_metrics = {}
        stage_metrics.update(
            self.curriculum.observe(
                [g.prompt for g in self._generated], [g.pass_rate for g in self._generated]
            )
        )
        stage_metrics.update(
            self.reward_weighting.observe(
                {k: [r.scores[k] for g in batch for r in g.responses] for k in self.objectives}
            )
        )
        stage_metrics.update(self.replay.observe(batch, self.step_index))
        stage_time += time.perf_counter() - t

        flat = [r for g in batch for r in g.responses]
        generated = [r for g in self._generated for r in g.responses]
        tokens = sum(len(r.token_ids) for r in generated)
        metrics: dict[str, Any] = {
            "step": self.step_index,
            "reward/mean": statistics.fmean(r.reward for r in flat) if flat else 0.0,
            "pass_rate/mean": statistics.fmean(g.pass_rate for g in self._generated),
            "effective_ratio": statistics.fmean(g.informative for g in batch) if batch else 0.0,
            "rollouts/generated": len(generated),
            "rollouts/kept": len(flat),
            "tokens/generated": tokens,
            "tokens/per_second": tokens / max(self._times["time/rollout"], 1e-9),
            "response_length/mean": tokens / max(1, len(generated)),
            "response_length/truncated_fraction": statistics.fmean(r.truncated for r in generated),
            **{f"reward/{k}/mean": statistics.fmean(r.scores[k] for r in generated) for k in self.objectives},
            **self._times,
            "time/train": train_time,
            "time/sync": sync_time,
            "time/stages": stage_time,
            "loss/policy": train_metrics.get("loss/policy", 0.0),
            "kl/mean": train_metrics.get("kl/mean", 0.0),
            "entropy/mean": train_metrics.get("entropy/mean", 0.0),
            "grad_norm": train_metrics.get("grad_norm", 0.0),
            "lr": train_metrics.get("lr", 0.0),
        }
        metrics.update({k: v for k, v in train_metrics.items() if k not in metrics})
        metrics.update(adv_metrics)
        metrics.update(filter_metrics)
        metrics.update(stage_metrics)
        metrics.update({k: v for k, v in stats.items() if k.startswith("reward/")})
        metrics["time/step"] = time.perf_counter() - step_start
        self.logger.histogram("pass_rate/generated", [g.pass_rate for g in self._generated], self.step_index)
        self.logger.histogram("pass_rate/kept", [g.pass_rate for g in batch], self.step_index)
        return metrics

    # ------------------------------------------------------------------ outer loop

    def checkpoint(self) -> Path:
        state = {"stages": {name: stage.state_dict() for name, stage in self.stages.items()}}
        return save_checkpoint(
            self.run_dir, self.step_index, self.learner, self.tokenizer, state, self.cfg.trainer.keep_last
        )

    def evaluate(self) -> dict[str, Any]:
        from rlengine.eval_cli import evaluate_during_training

        return evaluate_during_training(self.cfg, self.pool, self.tokenizer, self.run_dir, self.step_index)

    def fit(self) -> list[dict[str, Any]]:
        """Run until ``trainer.max_steps``; returns the metrics of every step run here."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        history = []
        bar = tqdm(
            total=cfg.trainer.max_steps,
            initial=self.step_index,
            desc="train",
            unit="step",
            disable=not cfg.logging.progress,
            dynamic_ncols=True,
        )
        try:
            while self.step_index < cfg.trainer.max_steps:
                metrics = self.step()
                if cfg.evaluation.every_n_steps and self.step_index % cfg.evaluation.every_n_steps == 0:
                    metrics.update(self.evaluate())
                self.logger.log(metrics, self.step_index)
                history.append(metrics)
                bar.update(1)
                bar.set_postfix(
                    reward=f"{metrics['reward/mean']:.3f}",
                    pass_rate=f"{metrics['pass_rate/mean']:.2f}",
                    tok_s=f"{metrics['tokens/per_second']:.0f}",
                    refresh=False,
                )
                last = self.step_index == cfg.trainer.max_steps
                if last or (cfg.trainer.save_every and self.step_index % cfg.trainer.save_every == 0):
                    self.checkpoint()
        finally:
            bar.close()
        return history

    def close(self) -> None:
        self.logger.close()
        self.rewards.close()
        self.pool.shutdown()
        self.learner.shutdown()
        shutil.rmtree(self.weights_dir, ignore_errors=True)


def train(cfg: RunConfig) -> list[dict[str, Any]]:
    """Build everything from ``cfg``, run the loop, tear down. Returns per-step metrics."""
    trainer = Trainer(cfg)
    try:
        return trainer.fit()
    finally:
        trainer.close()
