"""Cross-field checks of a built config, run by :func:`rlengine.config.build_config` (so by
``rlengine config check`` and at the start of ``train`` / ``eval``, before anything starts):
ranges, contradictory settings, loss-specific constraints, and that data files, reward
functions and benchmarks exist. ``cfg`` is a :class:`rlengine.config.RunConfig` (not imported:
the config module imports this one)."""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from reward.builtin import BUILTIN_KWARGS
from reward.loader import RewardConfigError, RewardImportTimeout, load_reward_function, parse_reward_specs
from rlengine.algorithms.registry import (
    ADVANTAGES,
    POLICY_LOSSES,
    AdvantageEstimator,
    PolicyLoss,
    advantage_estimator,
    policy_loss,
)
from rlengine.data.sources import BENCHMARKS, SHIPPED
from rlengine.errors import ConfigError, did_you_mean
from rlengine.plugins import is_plugin_spec
from rlengine.weight_sync import resolve_backend


def validate(cfg: Any) -> None:
    """The rules between fields and sections (ranges and enums are on the fields themselves and
    were checked when the sections were built, rlengine/schema.py), plus existence checks for data
    files, reward functions, plug-ins and benchmarks."""
    if cfg.rollout.mode == "one_step_off_policy":
        for kind in ("filter", "replay"):
            name = getattr(getattr(cfg, kind), "name", "none")
            if name != "none":
                raise ConfigError(
                    f"{kind}.name: {name!r} cannot be combined with rollout.mode: one_step_off_policy "
                    f"(the next batch is generated before this step's {kind} has run); use "
                    f"{kind}.name: none, or rollout.mode: sync"
                )
    _check_placement(cfg.rollout, cfg.learner.num_ranks)
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
    _check_algorithm(cfg)
    _check_learner(cfg)
    _check_data(cfg.data.source, "data.source", cfg.config_dir)
    _check_replay_sources(cfg)
    _check_rewards(cfg)
    _check_reward_weighting(cfg)
    _check_benchmarks(cfg)


def config_estimator(cfg: Any) -> AdvantageEstimator:
    """The estimator ``algorithm.advantage`` names (a built-in, or a plug-in loaded relative to the
    YAML's directory and checked); a ConfigError naming the key when it cannot be used."""
    return _algorithm_entry(cfg, "advantage", ADVANTAGES, advantage_estimator)


def config_loss(cfg: Any) -> PolicyLoss:
    """The policy loss ``algorithm.loss`` names, as :func:`config_estimator` does."""
    return _algorithm_entry(cfg, "loss", POLICY_LOSSES, policy_loss)


def _algorithm_entry(cfg: Any, key: str, builtins: dict, find: Any) -> Any:
    value = getattr(cfg.algorithm, key)
    if not is_plugin_spec(value) and value not in builtins:
        raise ConfigError(
            f"algorithm.{key}: invalid value {value!r}; allowed: {', '.join(map(repr, builtins))}, or a "
            f"plug-in 'file.py:function'{did_you_mean(value, builtins)}"
        )
    try:
        return find(value, cfg.config_dir)
    except ValueError as e:
        raise ConfigError(f"algorithm.{key}: {e}") from None


def _check_algorithm(cfg: Any) -> None:
    algo = cfg.algorithm
    estimator = config_estimator(cfg)
    if cfg.rollout.n < 2 and estimator.group_baseline:
        raise ConfigError(
            f"rollout.n: {cfg.rollout.n} response per prompt with algorithm.advantage {algo.advantage}, which "
            "compares each response with the others of its prompt: every advantage would be 0 and nothing "
            "would be learnt; use rollout.n >= 2 (GRPO papers use 8-16), or algorithm.advantage: reinforce_pp"
        )
    try:
        config_loss(cfg).bounds(algo.clip_low, algo.clip_high, algo.dual_clip)
    except ValueError as e:
        keys = "algorithm.clip_low / clip_high" + (" / dual_clip" if algo.dual_clip is not None else "")
        raise ConfigError(f"{keys} (loss {algo.loss}, after its defaults): {e}") from None
    if algo.overlong_shaping and algo.overlong_cache < 1:
        raise ConfigError(
            "algorithm.overlong_cache: overlong_shaping needs the length of its penalty ramp in tokens "
            f"(> 0; DAPO uses 4096), got {algo.overlong_cache}"
        )


def _check_learner(cfg: Any) -> None:
    opts = cfg.learner
    if len(opts.betas) != 2:
        raise ConfigError(
            f"learner.betas: expected two AdamW betas in [0, 1), e.g. [0.9, 0.999], got {opts.betas}"
        )
    responses = cfg.trainer.batch_size * cfg.rollout.n
    if opts.mini_batch_size is not None and opts.mini_batch_size > responses:
        raise ConfigError(
            f"learner.mini_batch_size: {opts.mini_batch_size} responses per optimizer step, but a step has only "
            f"trainer.batch_size x rollout.n = {cfg.trainer.batch_size} x {cfg.rollout.n} = {responses}; "
            "use at most that, or null for one optimizer step per epoch"
        )


def _check_bapo(algo: Any) -> None:
    low, high = algo.clip_low, algo.clip_high  # filled from the loss's defaults by build_config
    if not low <= algo.bapo_max_low <= 1:
        raise ConfigError(
            f"algorithm.bapo_max_low: expected a value in [clip_low = {low}, 1], got {algo.bapo_max_low}"
        )
    if algo.bapo_max_high < high:
        raise ConfigError(
            f"algorithm.bapo_max_high: expected a value >= clip_high = {high}, got {algo.bapo_max_high}"
        )


def _check_data(source: str, key: str, config_dir: str | None) -> None:
    """``source`` (the value of config key ``key``) names a shipped set, an existing file or folder,
    or a hub id."""
    if source in SHIPPED or source in BENCHMARKS or source == "synthetic_arithmetic":
        return
    candidates = [Path(source)] + ([Path(config_dir) / source] if config_dir else [])
    if source.endswith((".jsonl", ".json", ".parquet")):
        if not any(c.is_file() for c in candidates):
            tried = ", ".join(str(c) for c in candidates)
            raise ConfigError(f"{key}: file '{source}' not found (tried {tried})")
    elif "/" not in source and not any(c.is_dir() for c in candidates):
        names = [*SHIPPED, *BENCHMARKS, "synthetic_arithmetic"]
        raise ConfigError(
            f"{key}: unknown dataset '{source}'{did_you_mean(source, names)}; shipped: "
            f"{', '.join(names)}; or a .jsonl/.json/.parquet file, a dataset folder, or a Hugging Face "
            "hub id of the form org/name"
        )


def _check_replay_sources(cfg: Any) -> None:
    """``replay.sources`` (RECAP's other domains): named, unique, not ``task``, with data that
    exists and reward weights over the objectives of ``reward.functions``."""
    sources = getattr(cfg.replay, "sources", None) or []
    objectives = [spec.name for spec in parse_reward_specs(cfg.reward.functions)] if sources else []
    seen: set[str] = set()
    for i, source in enumerate(sources):
        key = f"replay.sources[{i}]"
        if not source.name or source.name == "task" or source.name in seen or "/" in source.name:
            raise ConfigError(
                f"{key}.name: expected a unique name other than 'task' (no '/'), got {source.name!r}"
            )
        seen.add(source.name)
        if not source.data:
            raise ConfigError(
                f"{key}.data: required (a shipped set name, a .jsonl/.json/.parquet file or a dataset)"
            )
        if source.data == "synthetic_arithmetic":
            raise ConfigError(
                f"{key}.data: synthetic_arithmetic is only a data.source; write the rows to a file"
            )
        _check_data(source.data, f"{key}.data", cfg.config_dir)
        if source.rewards is not None:
            if source.kind == "supervised":
                raise ConfigError(
                    f"{key}.rewards: a supervised source has no reward (its loss is the NLL); remove it"
                )
            for name, weight in source.rewards.items():
                if name not in objectives:
                    raise ConfigError(
                        f"{key}.rewards: unknown objective '{name}'{did_you_mean(name, objectives)}; "
                        f"the objectives of reward.functions are {objectives}"
                    )
                if not weight >= 0:
                    raise ConfigError(f"{key}.rewards.{name}: expected a weight >= 0, got {weight}")
            if not sum(source.rewards.values()) > 0:
                raise ConfigError(f"{key}.rewards: the weights must sum to > 0, got {source.rewards}")


def _check_rewards(cfg: Any) -> None:
    """Import every reward function and check that it can take the reward call. Each plug-in import
    runs under ``reward.import_timeout_s`` (a SIGALRM deadline, so only when this runs in the main
    thread; off the main thread the file is imported with no limit)."""
    limit = cfg.reward.import_timeout_s
    timed_out: str | None = None
    try:
        specs = parse_reward_specs(cfg.reward.functions)
        functions = []
        for i, spec in enumerate(specs):
            try:
                functions.append(
                    load_reward_function(spec.function, base_dir=cfg.config_dir, import_timeout_s=limit)
                )
            except RewardImportTimeout as e:
                timed_out = f"reward.functions[{i}] ({spec.name}): {e}"
                break
    except (RewardConfigError, ValueError, TypeError) as e:
        raise ConfigError(f"reward.functions: {e}") from None
    if timed_out is not None:
        raise ConfigError(timed_out)
    if not specs:
        raise ConfigError("reward.functions: at least one reward function is required")
    for i, (spec, fn) in enumerate(zip(specs, functions)):
        where = f"reward.functions[{i}] ({spec.name})"
        allowed = BUILTIN_KWARGS.get(spec.function)
        if allowed is not None:
            for key in spec.kwargs:
                if key not in allowed:
                    valid = ", ".join(sorted(allowed)) or "none"
                    raise ConfigError(
                        f"{where}: unknown kwarg '{key}' for the built-in {spec.function}"
                        f"{did_you_mean(key, sorted(allowed))}; it takes: {valid}"
                    )
            continue
        try:
            inspect.signature(fn).bind("prompt", "completion", "answer", {}, **spec.kwargs)
        except TypeError as e:
            names = [p for p in inspect.signature(fn).parameters][4:]
            hint = "".join(did_you_mean(k, names) for k in spec.kwargs if k not in names)
            raise ConfigError(
                f"{where}: {spec.function} cannot be called as fn(prompt, completion, answer, metadata"
                f"{''.join(f', {k}=...' for k in spec.kwargs)}): {e}{hint}"
            ) from None
        except ValueError:
            pass  # no signature to check (a builtin or C function)


def _check_reward_weighting(cfg: Any) -> None:
    """``reward_weighting.weights`` against the objectives of ``reward.functions``."""
    section = cfg.reward_weighting
    names = getattr(section, "weights", None)
    if names is None:  # a plug-in stage without a weights option
        return
    specs = parse_reward_specs(cfg.reward.functions)
    objectives = [spec.name for spec in specs]
    unknown = [k for k in names if k not in objectives]
    if unknown:
        raise ConfigError(
            f"reward_weighting.weights: unknown objective {unknown[0]!r}{did_you_mean(unknown[0], objectives)}; "
            f"the objectives of reward.functions are {objectives}"
        )
    weights = {**{spec.name: spec.weight for spec in specs}, **names}
    if section.name in ("static", "gdpo", "hypervolume") and not sum(weights.values()) > 0:
        raise ConfigError(
            f"reward_weighting: the objective weights are normalised to sum to 1, so their sum must be > 0; "
            f"got {weights}"
        )
    if section.name == "gdpo":
        _check_gdpo(cfg)
    if section.name == "hypervolume":
        for key, chosen in (
            ("scales", list(section.scales)),
            ("length_objectives", section.length_objectives or []),
        ):
            unknown = [k for k in chosen if k not in objectives]
            if unknown:
                raise ConfigError(
                    f"reward_weighting.{key}: unknown objective {unknown[0]!r}"
                    f"{did_you_mean(unknown[0], objectives)}; the objectives of reward.functions are {objectives}"
                )
    if section.name == "gradient":
        layers = section.layers
        if isinstance(layers, list) and (not layers or len(set(layers)) != len(layers)):
            raise ConfigError(
                f"reward_weighting.layers: expected an int (the last N blocks, 0 = all) or a non-empty list "
                f"of distinct block ids, got {layers}"
            )
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ConfigError(
                f"reward_weighting: gradient weighting starts from weights on the simplex, so they must be "
                f">= 0 with a positive sum; got {weights}"
            )
        if section.min_weight >= 1 / len(objectives):
            raise ConfigError(
                f"reward_weighting.min_weight: expected a value in [0, 1/{len(objectives)}) for "
                f"{len(objectives)} objectives, got {section.min_weight}"
            )


def _check_gdpo(cfg: Any) -> None:
    """GDPO replaces the estimator's advantages with its own, built from the objectives alone."""
    algo = cfg.algorithm
    if algo.advantage != "grpo":
        raise ConfigError(
            f"reward_weighting.name: gdpo normalises each objective within its group (GRPO's normalisation) "
            f"and replaces the estimator's advantages, so algorithm.advantage {algo.advantage!r} would be "
            "ignored; set algorithm.advantage: grpo"
        )
    if algo.overlong_shaping or (algo.kl_coef > 0 and algo.kl_placement == "reward"):
        raise ConfigError(
            "reward_weighting.name: gdpo builds the advantages from the objectives alone, so a reward term "
            "outside them would be lost: turn off algorithm.overlong_shaping (add a length objective to "
            "reward.functions instead) and use algorithm.kl_placement: loss"
        )


def _check_benchmarks(cfg: Any) -> None:
    check_benchmark_names(cfg.evaluation.benchmarks, "evaluation.benchmarks")


def check_benchmark_names(names: list[str], where: str, given: str | None = None) -> None:
    """Every name is a shipped benchmark or a file path; an empty list is an error too."""
    if not names:
        raise ConfigError(
            f"{where}: no benchmark names{f' in {given!r}' if given is not None else ''}; valid: "
            f"{', '.join(BENCHMARKS)} (or a .jsonl/.parquet path)"
        )
    for i, name in enumerate(names):
        if name not in BENCHMARKS and not Path(name).suffix:
            raise ConfigError(
                f"{where}[{i}]: unknown benchmark '{name}'{did_you_mean(name, BENCHMARKS)}; "
                f"valid: {', '.join(BENCHMARKS)} (or a .jsonl/.parquet path)"
            )


def writable_directory(path: Path, where: str) -> None:
    """Create ``path`` (and its parents) if needed; a clear error when it cannot hold files."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{where}: cannot create the directory '{path}': {e.strerror or e}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{where}: the directory '{path}' is not writable")


def _check_placement(rollout: Any, num_ranks: int) -> None:
    engine_gpus = rollout.num_engines * rollout.tensor_parallel_size
    if rollout.placement == "colocated" and num_ranks != engine_gpus:
        raise ConfigError(
            f"rollout.placement: colocated puts engine GPU i on learner rank i's GPU, so "
            f"learner.num_ranks ({num_ranks}) must equal rollout.num_engines x "
            f"rollout.tensor_parallel_size ({rollout.num_engines} x {rollout.tensor_parallel_size} = "
            f"{engine_gpus})"
        )
    if rollout.placement == "colocated" and rollout.mode == "one_step_off_policy":
        raise ConfigError(
            "rollout.mode: one_step_off_policy overlaps generation with the update, but under "
            "rollout.placement: colocated the engines sleep during the update; use rollout.placement: "
            "split, or rollout.mode: sync"
        )
    wanted = {"nccl": "split", "ipc": "colocated"}.get(rollout.weight_sync)
    if wanted is not None and rollout.placement != wanted:
        raise ConfigError(
            f"rollout.weight_sync: {rollout.weight_sync} needs rollout.placement: {wanted} (NCCL "
            "cannot connect two processes on one GPU; CUDA IPC only reaches the same GPU); use "
            f"rollout.weight_sync: {'ipc' if wanted == 'split' else 'nccl'} or auto"
        )


def resources(cfg: Any) -> str:
    """What a config asks of the machines it runs on, as ``rlengine config check`` prints it."""
    r, learner = cfg.rollout, cfg.learner
    engine_gpus = r.num_engines * r.tensor_parallel_size
    if r.placement == "colocated":
        total = f"total on GPU machines: {learner.num_ranks} GPU(s), each shared by a rank and an engine"
    else:
        total = (
            f"total on GPU machines: {engine_gpus + learner.num_ranks} GPU(s), engines and ranks on "
            "separate GPUs"
        )
    lines = [
        f"rollout: {r.num_engines} vLLM engine(s) x {r.tensor_parallel_size} GPU (tensor parallel) "
        f"= {engine_gpus} GPU(s)",
        f"learner: {learner.num_ranks} DeepSpeed rank(s) (ZeRO-{learner.zero_stage}) x 1 GPU "
        f"= {learner.num_ranks} GPU(s)",
        total,
        f"weight sync on GPU: {resolve_backend(r, gpu=True)}",
    ]
    try:
        resolve_backend(r, gpu=False)
    except ConfigError:
        lines.append("on CPU: not runnable (colocated placement and nccl / ipc sync need GPUs)")
    else:
        lines.append(
            f"on CPU: the same {r.num_engines} engine(s) and {learner.num_ranks} rank(s) share this "
            "machine's cores; weight sync: file"
        )
    return "\n".join(lines)
