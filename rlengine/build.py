"""Builders of a run's parts, in the order a run needs them: :func:`build_trainer` is
``Trainer.from_config``. Each ``build_*`` takes the config and what was built before it.

Order: the run directory is checked (resume or fresh), the driver is seeded, the model resolved and
its tokenizer loaded, the prompt rows read, Ray started; then the reward pool, the learner ranks
(loading the checkpoint's DeepSpeed state), the rollout engines (loading its weights), the weight
sync, the stages, the logger. A part that fails to start stops the ones built before it.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import numpy as np
import torch

from reward import RewardPool, parse_reward_specs
from rlengine import placement
from rlengine.algorithms.registry import with_absolute_plugins
from rlengine.checkpoint import load_trainer_state
from rlengine.config import RunConfig, dump_yaml, to_dict
from rlengine.data.prompts import load_prompt_rows, load_replay_sources, split_validation
from rlengine.producer import Rollouts
from rlengine.resume import checkpoint_to_resume
from rlengine.runlog import MetricsLogger
from rlengine.runtime import TRANSFER_ENV, init_ray, use_gpu
from rlengine.samples import objective_weights
from rlengine.stages import STAGE_KINDS, StageContext, build_stage
from rlengine.weight_sync import WeightSync, resolve_backend


def seed_everything(seed: int) -> None:
    """Seed the driver's Python, NumPy and torch generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: RunConfig) -> tuple[str, Any]:
    """The policy's local model directory and its tokenizer."""
    from transformers import AutoTokenizer

    from rlengine.models import resolve_model

    path = resolve_model(
        cfg.model.name, cache_dir=cfg.model.cache_dir, trust_remote_code=cfg.model.trust_remote_code
    )
    return path, AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.model.trust_remote_code)


def build_learner(cfg: RunConfig, model_path: str, gpu: bool, backend: str, learner_placement: Any) -> Any:
    """The DeepSpeed learner ranks as Ray actors (rlengine/learner/group.py)."""
    from rlengine.learner.group import LearnerGroup
    from rlengine.learner.spec import LearnerSpec

    return LearnerGroup(
        LearnerSpec.from_config(cfg, model_path, gpu=gpu),
        num_ranks=cfg.learner.num_ranks,
        actor_timeout_s=cfg.trainer.actor_timeout_s,
        placement=learner_placement,
        # a multi-node cluster: the run directory, which every node sees (checkpoints need it too)
        rendezvous_dir=str(cfg.run_dir.resolve()) if cfg.trainer.ray_address else None,
        extra_env=TRANSFER_ENV if backend != "file" else None,
    )


def build_stages(
    cfg: RunConfig,
    rows: Any,
    validation_rows: list[dict],
    specs: list[Any],
    rollouts: Rollouts,
    learner: Any,
    model_path: str,
    gpu: bool,
    source_rows: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The four stages, each with its narrow handles on the rollouts and the learner."""
    stages: dict[str, Any] = {}
    context = StageContext(
        rows=rows,
        seed=cfg.trainer.seed,
        objectives=rollouts.objectives,
        reward_weights=[spec.weight for spec in specs],
        validation_rows=validation_rows,
        algorithm=with_absolute_plugins(cfg.algorithm, cfg.config_dir),  # plug-ins resolve from any directory
        # the reward-weighting stage is built below; its weights are read when a stage asks
        objective_weights=lambda: objective_weights(stages["reward_weighting"].combine, rollouts.objectives),
        rollout=rollouts.handle(),
        learner=learner,
        policy_path=model_path,
        model=cfg.model,
        gpu=gpu,
        source_rows=source_rows or {},
    )
    for kind in STAGE_KINDS:
        stages[kind] = build_stage(kind, getattr(cfg, kind), context, cfg.config_dir)
    return stages


def build_logger(cfg: RunConfig, resume_step: int) -> MetricsLogger:
    return MetricsLogger(
        cfg.run_dir,
        tensorboard=cfg.logging.tensorboard,
        wandb=cfg.logging.wandb,
        wandb_project=cfg.logging.wandb_project,
        run_name=cfg.trainer.run_name,
        config=to_dict(cfg),
        resume_step=resume_step,
    )


def build_trainer(cfg: RunConfig, trainer_class: type) -> Any:
    """Every part of the run ``cfg`` describes, assembled into ``trainer_class`` (a Trainer), resumed
    from the newest checkpoint when ``resume`` is set."""
    from rlengine.rollout import RolloutPool

    checkpoint = checkpoint_to_resume(cfg)  # creates run_dir; checks it before anything starts
    seed_everything(cfg.trainer.seed)
    model_path, tokenizer = build_model(cfg)
    rows, validation_rows = split_validation(load_prompt_rows(cfg, tokenizer), cfg.data.validation_size)
    source_rows = load_replay_sources(cfg, tokenizer)  # RECAP's other domains, read before anything starts
    specs = parse_reward_specs(cfg.reward.functions)
    init_ray(cfg.trainer.ray_address)
    gpu = use_gpu()
    with contextlib.ExitStack() as started:  # stops what was started if a later part fails
        rewards = RewardPool(
            specs,
            num_workers=cfg.reward.num_workers,
            timeout_s=cfg.reward.timeout_s,
            import_timeout_s=cfg.reward.import_timeout_s,
            base_dir=cfg.config_dir,
        )
        started.callback(rewards.close)
        backend = resolve_backend(cfg.rollout, gpu)  # rollout.weight_sync for this machine
        learner_placement = placement.learner_placement(cfg, gpu)  # GPU only: the ranks' placement group
        started.callback(placement.remove, learner_placement and learner_placement.group)
        learner = build_learner(cfg, model_path, gpu, backend, learner_placement)
        started.callback(learner.shutdown)
        engine_weights = model_path
        if checkpoint is not None:
            learner.load_checkpoint(str(checkpoint / "deepspeed"))
            engine_weights = str(checkpoint / "model")
        colocated = learner_placement.group if learner_placement and learner_placement.colocated else None
        pool = RolloutPool.from_config(cfg, engine_weights, model_path, gpu, colocated, backend)
        started.callback(pool.shutdown, 10)
        sync = WeightSync(backend, learner, pool, cfg.rollout.tensor_parallel_size)
        started.callback(sync.close)
        pool.on_restart = lambda engine: sync([engine])
        rollouts = Rollouts(cfg, pool, rewards, [spec.name for spec in specs])
        stages = build_stages(
            cfg, rows, validation_rows, specs, rollouts, learner, model_path, gpu, source_rows
        )
        for stage in stages.values():
            started.callback(stage.close)
        state = load_trainer_state(checkpoint) if checkpoint is not None else None
        (cfg.run_dir / "config.yaml").write_text(dump_yaml(cfg))  # only now: the run has started
        logger = build_logger(cfg, state["step"] if state else 0)
        trainer = trainer_class(
            cfg,
            rollouts=rollouts,
            learner=learner,
            stages=stages,
            logger=logger,
            sync_weights=sync,
            tokenizer=tokenizer,
            placement=learner_placement,
        )
        if state is not None:
            trainer.load_state_dict(state)
        started.pop_all()  # the trainer owns them now (Trainer.close)
    return trainer
