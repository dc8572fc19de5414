"""Cross-field checks of a built config, run by :func:`rlengine.config.build_config` (so by
``rlengine config check`` and at the start of ``train`` / ``eval``, before anything starts):
ranges, contradictory settings, loss-specific constraints, and that data files, reward
functions and benchmarks exist. ``cfg`` is a :class:`rlengine.config.RunConfig` (not imported:
the config module imports this one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reward.loader import RewardConfigError, load_reward_function, parse_reward_specs
from rlengine.algorithms.losses import DEFAULT_CLIPS
from rlengine.data.sources import BENCHMARKS, SHIPPED
from rlengine.errors import ConfigError, did_you_mean


def _positive(value: float, path: str, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(
            f"{path}: expected a {'non-negative' if allow_zero else 'positive'} number, got {value}"
        )


def validate(cfg: Any) -> None:
    """Cross-field checks, plus existence checks for data files and reward functions."""
    _positive(cfg.rollout.n, "rollout.n")
    _positive(cfg.rollout.max_tokens, "rollout.max_tokens")
    _positive(cfg.rollout.num_engines, "rollout.num_engines")
    _positive(cfg.rollout.temperature, "rollout.temperature")
    if not 0 < cfg.rollout.top_p <= 1:
        raise ConfigError(f"rollout.top_p: expected a value in (0, 1], got {cfg.rollout.top_p}")
    _positive(cfg.learner.num_ranks, "learner.num_ranks")
    _positive(cfg.learner.lr, "learner.lr", allow_zero=True)
    _positive(cfg.learner.ppo_epochs, "learner.ppo_epochs")
    _positive(cfg.learner.micro_batch_tokens, "learner.micro_batch_tokens")
    if cfg.learner.mini_batch_size is not None:
        _positive(cfg.learner.mini_batch_size, "learner.mini_batch_size")
    _positive(cfg.trainer.max_steps, "trainer.max_steps", allow_zero=True)
    _positive(cfg.trainer.batch_size, "trainer.batch_size")
    if cfg.trainer.max_minutes is not None:
        _positive(cfg.trainer.max_minutes, "trainer.max_minutes")
    _positive(cfg.algorithm.kl_coef, "algorithm.kl_coef", allow_zero=True)
    _positive(cfg.data.validation_size, "data.validation_size", allow_zero=True)
    if not 0 <= cfg.reward.length_momentum < 1:
        raise ConfigError(
            f"reward.length_momentum: expected a value in [0, 1), got {cfg.reward.length_momentum}"
        )
    if cfg.algorithm.tis_cap is not None:
        _positive(cfg.algorithm.tis_cap, "algorithm.tis_cap")
    if getattr(cfg.replay, "name", None) == "recap" and (
        cfg.algorithm.overlong_shaping
        or (cfg.algorithm.kl_coef > 0 and cfg.algorithm.kl_placement == "reward")
    ):
        raise ConfigError(
            "replay.name: recap sets the advantages from the per-objective rewards, so a reward term "
            "outside the objectives would be lost: turn off algorithm.overlong_shaping and use "
            "algorithm.kl_placement: loss"
        )
    if cfg.algorithm.loss == "bapo" and cfg.algorithm.bapo_adaptive:
        _check_bapo(cfg.algorithm)
    if cfg.rollout.max_tokens >= cfg.rollout.max_model_len:
        raise ConfigError(
            f"rollout.max_tokens ({cfg.rollout.max_tokens}) must be smaller than rollout.max_model_len "
            f"({cfg.rollout.max_model_len}), which also holds the prompt"
        )
    if cfg.learner.shared_prefix and cfg.learner.packing:
        raise ConfigError("learner.shared_prefix and learner.packing: choose one layout (both are true)")
    if cfg.algorithm.overlong_shaping and cfg.algorithm.overlong_cache > cfg.rollout.max_tokens:
        raise ConfigError(
            f"algorithm.overlong_cache ({cfg.algorithm.overlong_cache}) must be <= rollout.max_tokens "
            f"({cfg.rollout.max_tokens}); the dapo preset uses the paper's 4096, set it for short runs"
        )
    if getattr(cfg.reward_weighting, "name", None) == "hypervolume" and cfg.data.validation_size == 0:
        raise ConfigError(
            "reward_weighting.name: hypervolume measures the objectives on a held-out validation slice; "
            "set data.validation_size (e.g. 32) to keep that many prompts out of training"
        )
    _check_data(cfg)
    _check_rewards(cfg)
    _check_benchmarks(cfg)


def _check_bapo(algo: Any) -> None:
    default_low, default_high = DEFAULT_CLIPS["bapo"]
    low = algo.clip_low if algo.clip_low is not None else default_low
    high = algo.clip_high if algo.clip_high is not None else default_high
    if not low <= algo.bapo_max_low <= 1:
        raise ConfigError(
            f"algorithm.bapo_max_low: expected a value in [clip_low = {low}, 1], got {algo.bapo_max_low}"
        )
    if algo.bapo_max_high < high:
        raise ConfigError(
            f"algorithm.bapo_max_high: expected a value >= clip_high = {high}, got {algo.bapo_max_high}"
        )
    if not 0 < algo.bapo_target < 1:
        raise ConfigError(f"algorithm.bapo_target: expected a value in (0, 1), got {algo.bapo_target}")
    if algo.bapo_step <= 0:
        raise ConfigError(f"algorithm.bapo_step: expected a positive number, got {algo.bapo_step}")


def _check_data(cfg: Any) -> None:
    source = cfg.data.source
    if source in SHIPPED or source == "synthetic_arithmetic":
        return
    if source.endswith((".jsonl", ".json", ".parquet")):
        candidates = [Path(source)] + ([Path(cfg.config_dir) / source] if cfg.config_dir else [])
        if not any(c.is_file() for c in candidates):
            tried = ", ".join(str(c) for c in candidates)
            raise ConfigError(f"data.source: file '{source}' not found (tried {tried})")


def _check_rewards(cfg: Any) -> None:
    try:
        specs = parse_reward_specs(cfg.reward.functions)
        for spec in specs:
            load_reward_function(spec.function, base_dir=cfg.config_dir)
    except (RewardConfigError, ValueError, TypeError) as e:
        raise ConfigError(f"reward.functions: {e}") from None
    if not specs:
        raise ConfigError("reward.functions: at least one reward function is required")


def _check_benchmarks(cfg: Any) -> None:
    for i, name in enumerate(cfg.evaluation.benchmarks):
        if name not in BENCHMARKS and not Path(name).suffix:
            raise ConfigError(
                f"evaluation.benchmarks[{i}]: unknown benchmark '{name}'{did_you_mean(name, BENCHMARKS)}; "
                f"valid: {', '.join(BENCHMARKS)} (or a .jsonl/.parquet path)"
            )
