"""Evaluation on the vLLM pool: a checkpoint from the command line, or the policy during training.

Both use the same ``RolloutPool`` and reward code that training uses. ``rlengine eval`` (in
``rlengine/cli.py``) only parses arguments and calls :func:`evaluate_model` or
:func:`compare_runs`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlengine.data import BENCHMARKS, DEFAULT_MATH_TEMPLATE, load_benchmark, load_prompt_source, render_prompt
from rlengine.errors import ConfigError
from rlengine.eval.grading import Generate, evaluate
from rlengine.eval.metrics import ProblemResult
from rlengine.eval.results import (
    compare,
    format_compare_table,
    load_summary,
    write_results,
    write_results_json,
)
from rlengine.runtime import init_ray, use_gpu

SEED_STRIDE = 7919
"""Distance between the sampling seeds of consecutive problems (a prime larger than any n)."""


def load_eval_benchmarks(
    names: list[str],
    tokenizer: Any,
    *,
    limit: int | None,
    template: str | None,
    chat_template: bool = True,
    base_dir: str | None = None,
) -> dict[str, list[dict]]:
    """Benchmark rows with a rendered ``prompt`` and its token ids. Names are shipped
    benchmarks (gsm8k, math500, ...) or JSONL/Parquet/``datasets`` sources."""
    result = {}
    for name in names:
        if name in BENCHMARKS:
            rows, label = load_benchmark(name, limit=limit), name
        else:
            rows, label = load_prompt_source(name, limit=limit, base_dir=base_dir), Path(name).stem
        for row in rows:
            row["prompt"] = render_prompt(
                row["problem"],
                tokenizer,
                template=template or DEFAULT_MATH_TEMPLATE,
                chat_template=chat_template,
                row=row,
            )
            row["prompt_ids"] = tokenizer(row["prompt"], add_special_tokens=not chat_template)["input_ids"]
        result[label] = rows
    return result


def make_generate(
    pool: Any,
    benchmarks: dict[str, list[dict]],
    *,
    max_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
) -> Generate:
    """``generate(prompts, n)`` over the pool, as :func:`rlengine.eval.evaluate` expects.

    Every problem gets its own seed, ``SEED_STRIDE`` apart in the order problems are asked for
    (vLLM seeds sample j of a request with seed + j, so nearer seeds would make sample j + 1 of one
    problem replay sample j of the next). The same evaluation therefore samples the same texts.
    """
    token_ids = {row["prompt"]: row["prompt_ids"] for rows in benchmarks.values() for row in rows}
    asked = 0

    def generate(prompts: list[str], n: int) -> list[list[dict]]:
        nonlocal asked
        if n >= SEED_STRIDE:
            raise ValueError(f"at most {SEED_STRIDE - 1} samples per problem, got {n}")
        base = seed * 1_000_003 + asked * SEED_STRIDE
        asked += len(prompts)
        sampling = {
            "n": n,
            "temperature": temperature,
            "top_p": top_p,
            "max_tokens": max_tokens,
            "logprobs": False,
            "seeds": [(base + i * SEED_STRIDE) % 2**31 for i in range(len(prompts))],
        }
        outputs = pool.generate([token_ids[p] for p in prompts], sampling)
        return [
            [
                {"text": o["text"], "num_tokens": len(o["token_ids"]), "finish_reason": o["finish_reason"]}
                for o in group
            ]
            for group in outputs
        ]

    return generate


def score_objectives(
    functions: list[str], rows: list[dict], records: list[ProblemResult]
) -> dict[str, float]:
    """Mean of each reward function in ``functions`` over every completion of one benchmark (a
    reward pool of its own; the metadata a training reward sees, without running length means)."""
    from reward import RewardItem, RewardPool, parse_reward_specs

    specs = parse_reward_specs(functions)
    items = [
        RewardItem(
            row["prompt"],
            c["text"],
            str(row["answer"]),
            {
                **{k: v for k, v in row.items() if k != "prompt_ids"},
                "response_tokens": c.get("num_tokens") or 0,
                "mean_correct_length": None,
                "mean_length": None,
            },
        )
        for row, record in zip(rows, records)
        for c in record.completions
    ]
    if not items:
        return {}
    pool = RewardPool(specs, num_workers=2)
    try:
        scores = pool.score(items).scores
    finally:
        pool.close()
    return {spec.name: statistics.fmean(scores[spec.name]) for spec in specs if scores.get(spec.name)}


def summary_metrics(result: dict[str, Any], prefix: str = "eval") -> dict[str, float]:
    """``<prefix>/<benchmark>/<metric>`` scalars of an evaluation result, for the metrics log."""
    metrics = {}
    for name, summary in result["benchmarks"].items():
        for key, value in summary.items():
            if isinstance(value, (int, float)) and key != "problems":
                metrics[f"{prefix}/{name}/{key}"] = float(value)
        for objective, value in (summary.get("objectives") or {}).items():
            metrics[f"{prefix}/{name}/objective/{objective}"] = float(value)
    return metrics


def evaluate_during_training(
    cfg: Any,
    pool: Any,
    tokenizer: Any,
    run_dir: Path,
    step: int,
    score_objectives: Callable[[list[dict], list[ProblemResult]], dict[str, float]] | None = None,
) -> dict[str, float]:
    """Evaluate the current policy on ``evaluation.benchmarks``; write ``eval/step_N.json``
    and return ``eval/<benchmark>/<metric>`` scalars for the metrics log.

    ``score_objectives(rows, records)`` gives the mean of every training reward objective over a
    benchmark's completions; it is stored as the summary's ``objectives`` and logged as
    ``eval/<benchmark>/objective/<name>``."""
    ev = cfg.evaluation
    start = time.perf_counter()
    benchmarks = load_eval_benchmarks(
        ev.benchmarks,
        tokenizer,
        limit=ev.limit,
        template=ev.template or cfg.data.template,
        chat_template=cfg.data.chat_template,
        base_dir=cfg.config_dir,
    )
    generate = make_generate(
        pool,
        benchmarks,
        max_tokens=ev.max_tokens,
        temperature=ev.temperature,
        top_p=ev.top_p,
        seed=cfg.trainer.seed,
    )
    result = evaluate(generate, benchmarks, samples=ev.samples, progress=False)
    if score_objectives is not None:
        for name, records in result["records"].items():
            result["benchmarks"][name]["objectives"] = score_objectives(benchmarks[name], records)
    meta = {
        "step": step,
        "model": cfg.model.name,
        "samples": ev.samples,
        "max_tokens": ev.max_tokens,
        "temperature": ev.temperature,
        "top_p": ev.top_p,
    }
    write_results_json(result, run_dir / "eval" / f"step_{step}.json", meta)
    return {"time/eval": time.perf_counter() - start, **summary_metrics(result)}


@dataclass
class EvalSettings:
    """How ``rlengine eval`` samples and grades (the command-line options)."""

    benchmarks: list[str]
    samples: int = 1
    max_tokens: int = 1024
    limit: int | None = None
    temperature: float | None = None
    """Default 0 (greedy) for one sample, else 0.6."""
    top_p: float | None = None
    """Default 1.0 for one sample, else 0.95."""
    template: str | None = None
    chat_template: bool = True
    answer_pattern: str | None = None
    max_model_len: int | None = None
    dtype: str = "float32"
    seed: int = 0
    num_engines: int = 1
    ray_address: str | None = None
    objectives: list[str] | None = None
    """Reward functions (names as in ``reward.functions``: built-ins or ``file.py:fn``) whose mean
    over every completion is added to each benchmark's summary as ``objectives``, as evaluation
    during training does."""

    def sampling(self) -> tuple[float, float]:
        temperature = (
            self.temperature if self.temperature is not None else (0.0 if self.samples == 1 else 0.6)
        )
        top_p = self.top_p if self.top_p is not None else (1.0 if self.samples == 1 else 0.95)
        return temperature, top_p


def default_output_dir(model: str) -> Path:
    """Where ``rlengine eval --model M`` writes: ``<run>/eval/<step_N>`` for a checkpoint of a run
    (``<run>/checkpoints/step_N/model``), else ``runs/eval/<model name>``."""
    path = Path(model).resolve()
    if path.name == "model" and path.parent.parent.name == "checkpoints":
        return path.parent.parent.parent / "eval" / path.parent.name
    return Path("runs") / "eval" / Path(model).name


def evaluate_model(
    model: str, settings: EvalSettings, output: str | Path | None = None
) -> tuple[dict, dict, Path]:
    """Evaluate one model (built-in name, HF directory, checkpoint or hub id) on a fresh pool;
    write ``summary.json`` and ``results_<benchmark>.jsonl``. Returns (summary, records, dir)."""
    from transformers import AutoTokenizer

    from rlengine.models import resolve_model
    from rlengine.rollout import RolloutPool

    model_path = resolve_model(model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    benchmarks = load_eval_benchmarks(
        settings.benchmarks,
        tokenizer,
        limit=settings.limit,
        template=settings.template,
        chat_template=settings.chat_template,
    )
    temperature, top_p = settings.sampling()
    longest = max(len(r["prompt_ids"]) for rows in benchmarks.values() for r in rows)
    init_ray(settings.ray_address)
    pool = RolloutPool(
        model_path,
        num_engines=settings.num_engines,
        dtype=settings.dtype,
        seed=settings.seed,
        max_model_len=settings.max_model_len or longest + settings.max_tokens + 8,
        use_gpu=use_gpu(),
    )
    try:
        generate = make_generate(
            pool,
            benchmarks,
            max_tokens=settings.max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=settings.seed,
        )
        result = evaluate(
            generate, benchmarks, samples=settings.samples, answer_pattern=settings.answer_pattern
        )
    finally:
        pool.shutdown()
    if settings.objectives:
        for name, records in result["records"].items():
            result["benchmarks"][name]["objectives"] = score_objectives(
                settings.objectives, benchmarks[name], records
            )
    output = Path(output) if output else default_output_dir(model)
    meta = {
        "model": model,
        "samples": settings.samples,
        "max_tokens": settings.max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "limit": settings.limit,
        "seed": settings.seed,
    }
    write_results(result, output, meta)
    summary, records = load_summary(output)
    return summary, records, output


def is_result(path: str) -> bool:
    """A result file or directory (as opposed to a model to evaluate)."""
    p = Path(path)
    return (p.is_file() and p.suffix == ".json") or (p.is_dir() and (p / "summary.json").is_file())


def compare_runs(a: str, b: str, settings: EvalSettings) -> str:
    """The comparison table of two results, evaluating whichever of ``a`` / ``b`` is a model."""
    loaded = []
    for item in (a, b):
        if is_result(item):
            try:
                loaded.append(load_summary(item))
            except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
                raise ConfigError(
                    f"--compare: '{item}' is not an evaluation result (eval/step_N.json, summary.json or its "
                    f"directory): {e}"
                ) from None
        else:
            summary, records, _ = evaluate_model(item, settings)
            loaded.append((summary, records))
    (sa, ra), (sb, rb) = loaded
    return format_compare_table(compare(sa, sb, ra, rb), label_a=run_label(a), label_b=run_label(b))


def run_label(path: str) -> str:
    """A column label for a result or model path: ``run/step_N`` for a run's checkpoint or eval."""
    p = Path(path)
    if p.name in ("model", "summary.json"):
        p = p.parent
    if p.parent.name in ("checkpoints", "eval"):
        return f"{p.parent.parent.name}/{p.name}"
    return p.name
