"""Running evaluation on the vLLM pool: ``rlengine eval`` and eval during training.

The metrics, grading, files and comparison live in :mod:`rlengine.eval`; this module wires
them to the same ``RolloutPool`` and reward code that training uses.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rlengine.eval import (
    compare,
    evaluate,
    format_compare_table,
    format_table,
    get_benchmark_defaults,
    load_summary,
    write_results,
    write_results_json,
)


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
    from rlengine.data import BENCHMARKS, load_benchmark, load_prompt_source, render_prompt

    result = {}
    for name in names:
        if name in BENCHMARKS:
            rows, label = load_benchmark(name, limit=limit), name
        else:
            rows, label = load_prompt_source(name, limit=limit, base_dir=base_dir), Path(name).stem
        chosen = template or get_benchmark_defaults(label)["template"]
        for row in rows:
            row["prompt"] = render_prompt(
                row["problem"], tokenizer, template=chosen, chat_template=chat_template, row=row
            )
            row["prompt_ids"] = tokenizer(row["prompt"], add_special_tokens=not chat_template)["input_ids"]
        result[label] = rows
    return result


def make_generate(
    pool: Any,
    token_ids: dict[str, list[int]],
    *,
    max_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
):
    """``generate(prompts, n)`` over the pool, as :func:`rlengine.eval.evaluate` expects."""

    def generate(prompts: list[str], n: int) -> list[list[dict]]:
        sampling = {
            "n": n,
            "temperature": temperature,
            "top_p": top_p,
            "max_tokens": max_tokens,
            "logprobs": False,
            "seeds": [seed + i for i in range(len(prompts))],
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


def _prompt_ids(benchmarks: dict[str, list[dict]]) -> dict[str, list[int]]:
    return {row["prompt"]: row["prompt_ids"] for rows in benchmarks.values() for row in rows}


def evaluate_during_training(
    cfg: Any, pool: Any, tokenizer: Any, run_dir: Path, step: int
) -> dict[str, float]:
    """Evaluate the current policy on ``evaluation.benchmarks``; write ``eval/step_N.json``
    and return ``eval/<benchmark>/<metric>`` scalars for the metrics log."""
    ev = cfg.evaluation
    start = time.perf_counter()
    benchmarks = load_eval_benchmarks(
        ev.benchmarks,
        tokenizer,
        limit=ev.limit,
        template=ev.template,
        chat_template=cfg.data.chat_template,
        base_dir=cfg.config_dir,
    )
    generate = make_generate(
        pool,
        _prompt_ids(benchmarks),
        max_tokens=ev.max_tokens,
        temperature=ev.temperature,
        top_p=ev.top_p,
        seed=cfg.trainer.seed,
    )
    result = evaluate(generate, benchmarks, samples=ev.samples, progress=False)
    write_results_json(
        result,
        run_dir / "eval" / f"step_{step}.json",
        {
            "step": step,
            "model": cfg.model.name,
            "samples": ev.samples,
            "max_tokens": ev.max_tokens,
            "temperature": ev.temperature,
            "top_p": ev.top_p,
        },
    )
    metrics = {"time/eval": time.perf_counter() - start}
    for name, summary in result["benchmarks"].items():
        for key, value in summary.items():
            if isinstance(value, (int, float)) and key != "problems":
                metrics[f"eval/{name}/{key}"] = float(value)
    return metrics


def _is_result(path: str) -> bool:
    p = Path(path)
    return (p.is_file() and p.suffix == ".json") or (p.is_dir() and (p / "summary.json").is_file())


def _eval_model(model: str, args: argparse.Namespace) -> tuple[dict, dict, Path]:
    """Evaluate one model with the CLI settings; returns (summary, records, output dir)."""
    from transformers import AutoTokenizer

    from rlengine.models import resolve_model
    from rlengine.rollout import RolloutPool
    from rlengine.trainer import init_ray, use_gpu

    model_path = resolve_model(model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    names = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    benchmarks = load_eval_benchmarks(
        names, tokenizer, limit=args.limit, template=args.template, chat_template=not args.no_chat_template
    )
    temperature = args.temperature if args.temperature is not None else (0.0 if args.samples == 1 else 0.6)
    top_p = args.top_p if args.top_p is not None else (1.0 if args.samples == 1 else 0.95)
    longest = max(len(r["prompt_ids"]) for rows in benchmarks.values() for r in rows)
    init_ray(args.ray_address)
    pool = RolloutPool(
        model_path,
        num_engines=args.num_engines,
        dtype=args.dtype,
        seed=args.seed,
        max_model_len=args.max_model_len or longest + args.max_tokens + 8,
        use_gpu=use_gpu(),
    )
    try:
        generate = make_generate(
            pool,
            _prompt_ids(benchmarks),
            max_tokens=args.max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=args.seed,
        )
        result = evaluate(generate, benchmarks, samples=args.samples, answer_pattern=args.answer_pattern)
    finally:
        pool.shutdown()
    if args.output:
        output = Path(args.output)
    elif Path(model).is_dir():
        output = Path(model) / "eval"
    else:
        output = Path("runs") / "eval" / Path(model).name
    meta = {
        "model": model,
        "samples": args.samples,
        "max_tokens": args.max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "limit": args.limit,
        "seed": args.seed,
    }
    write_results(result, output, meta)
    summary, records = load_summary(output)
    return summary, records, output


def run_eval_cli(args: argparse.Namespace) -> int:
    """``rlengine eval``: evaluate a model, or compare two results (or two models)."""
    if args.compare:
        loaded = []
        for item in args.compare:
            if _is_result(item):
                loaded.append(load_summary(item))
            else:
                summary, records, _ = _eval_model(item, args)
                loaded.append((summary, records))
        (sa, ra), (sb, rb) = loaded
        rows = compare(sa, sb, ra, rb)
        print(
            format_compare_table(rows, label_a=Path(args.compare[0]).name, label_b=Path(args.compare[1]).name)
        )
        return 0
    if not args.model:
        raise ValueError("rlengine eval: give --model (or --compare A B)")
    summary, _, output = _eval_model(args.model, args)
    print(format_table(summary))
    print(f"results written to {output}")
    return 0
