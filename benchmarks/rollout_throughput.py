"""Rollout tokens/s: rlengine's RolloutPool against the same vLLM engine called directly, and HF generate.

The same rendered prompts (synthetic arithmetic with the quickstart template), ``n`` samples
each, the same sampling parameters and seeds. Every implementation runs in its own subprocess
after one warm-up call; the pool goes through Ray (one engine actor), ``direct`` builds the
``vllm.LLM`` in the subprocess with the pool's own engine options and CPU environment, ``hf``
calls ``model.generate``. Reported: generated tokens / wall seconds of the generate call, median
over ``--repeats`` calls, for each batch size.

    python benchmarks/rollout_throughput.py                     # built-in model, 8 and 32 prompts x 4
    python benchmarks/rollout_throughput.py --smoke             # CI: tiny model, pool and direct, one size
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __name__ == "__main__":  # vLLM starts processes: keep module-level work out of their way
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TEMPLATE = "{problem} Put the final answer in \\boxed{}."


def prompts(model_path: str, count: int) -> list[list[int]]:
    from transformers import AutoTokenizer

    from rlengine.data import make_arithmetic, render_prompt

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    rows = make_arithmetic(count, seed=1, ops=("add", "sub"), max_digits=2)
    texts = [render_prompt(r["problem"], tokenizer, template=TEMPLATE, row=r) for r in rows]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def sampling(count: int, args) -> dict:
    return {
        "n": args.n,
        "temperature": 1.0,
        "top_p": 1.0,
        "max_tokens": args.max_tokens,
        "seeds": [7919 * i for i in range(count)],
    }


def run_pool(args, batch: list[list[int]]) -> list[float]:
    from rlengine.rollout import RolloutPool
    from rlengine.runtime import init_ray

    init_ray(None)
    pool = RolloutPool(
        args.model_path,
        max_model_len=args.max_model_len,
        seed=0,
        kv_cache_gib=args.kv_cache_gib,
        in_process=bool(args.engine_in_process),
    )
    try:
        return timed(lambda: pool.generate(batch, sampling(len(batch), args)), args.repeats)
    finally:
        pool.shutdown()


def run_direct(args, batch: list[list[int]]) -> list[float]:
    from rlengine.rollout.engine import EXTENSION, cpu_engine_env
    from rlengine.runtime import available_cpus

    os.environ.update(cpu_engine_env(available_cpus(), args.kv_cache_gib, bool(args.engine_in_process)))
    from vllm import LLM, SamplingParams

    llm = LLM(
        model=args.model_path,
        dtype="float32",
        max_model_len=args.max_model_len,
        seed=0,
        enforce_eager=True,
        logprobs_mode="processed_logprobs",
        worker_extension_cls=EXTENSION,
        enable_prefix_caching=True,
        enable_chunked_prefill=False,  # as the pool's CPU engines (see rlengine/rollout/engine.py)
    )
    s = sampling(len(batch), args)
    params = [
        SamplingParams(
            n=s["n"], temperature=1.0, top_p=1.0, max_tokens=s["max_tokens"], logprobs=0, seed=seed
        )
        for seed in s["seeds"]
    ]

    def generate():
        outs = llm.generate([{"prompt_token_ids": ids} for ids in batch], params, use_tqdm=False)
        return [[{"token_ids": list(c.token_ids)} for c in o.outputs] for o in outs]

    return timed(generate, args.repeats)


def run_hf(args, batch: list[list[int]]) -> list[float]:
    import torch
    from transformers import AutoModelForCausalLM

    from rlengine.runtime import available_cpus

    torch.set_num_threads(len(available_cpus()))
    model = AutoModelForCausalLM.from_pretrained(args.model_path, dtype=torch.float32).eval()
    pad = model.config.eos_token_id if isinstance(model.config.eos_token_id, int) else 0
    width = max(len(p) for p in batch)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])

    def generate():
        torch.manual_seed(0)
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                max_new_tokens=args.max_tokens,
                num_return_sequences=args.n,
                pad_token_id=pad,
            )
        new = out[:, width:]
        return [[{"token_ids": [t for t in row.tolist() if t != pad]}] for row in new]

    return timed(generate, args.repeats)


def timed(generate, repeats: int) -> list[float]:
    """tokens/s of each call after one warm-up call."""
    generate()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = generate()
        seconds = time.perf_counter() - start
        rates.append(sum(len(c["token_ids"]) for group in out for c in group) / seconds)
    return rates


def worker(args) -> None:
    from benchmarks.common import print_result

    batch = json.loads(Path(args.prompts_file).read_text())
    runner = {"pool": run_pool, "direct": run_direct, "hf": run_hf}[args.impl]
    print_result(runner(args, batch))


def main() -> None:
    from benchmarks.common import median, render_table, run_worker, update_benchmarks_md, worker_command

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch-sizes", default="8,32", help="prompts per generate call")
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--max-model-len", type=int, default=512)
    parser.add_argument("--kv-cache-gib", type=int, default=1)
    parser.add_argument("--impls", default="pool,direct,hf")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny model, 4 prompts, pool and direct (CI)")
    parser.add_argument(
        "--engine-in-process",
        type=int,
        default=0,
        help="1: vLLM's engine core in the engine's own process (starts sooner; --smoke uses it)",
    )
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--prompts-file", help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    import tempfile

    from rlengine.models import make_tiny_model, resolve_model

    work = Path(tempfile.mkdtemp(prefix="rlengine-rollout-"))
    if args.smoke:
        args.model_path = make_tiny_model(work / "tiny", num_heads=2, seed=0)
        args.batch_sizes, args.impls, args.repeats, args.max_tokens, args.no_write = (
            "4",
            "pool,direct",
            1,
            16,
            True,
        )
        args.engine_in_process = 1
    else:
        args.model_path = resolve_model(args.model)
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    impls = args.impls.split(",")
    all_prompts = prompts(args.model_path, max(sizes))
    results: dict[tuple[str, int], float] = {}
    for size in sizes:
        path = work / f"prompts_{size}.json"
        path.write_text(json.dumps(all_prompts[:size]))
        for impl in impls:
            keys = ("n", "max_tokens", "max_model_len", "kv_cache_gib", "repeats", "engine_in_process")
            cmd = worker_command(__file__, impl, args, keys, prompts_file=path, model_path=args.model_path)
            rates, stderr = run_worker(cmd)
            if rates is None:
                sys.exit(f"{impl} failed:\n{stderr[-3000:]}")
            results[(impl, size)] = median(rates)
            print(impl, size, f"{results[(impl, size)]:.0f} tok/s", flush=True)
    rows = []
    for size in sizes:
        base = results.get(("direct", size))
        for impl in impls:
            rate = results[(impl, size)]
            rows.append(
                [str(size), str(args.n), impl, f"{rate:,.0f}", f"{rate / base:.2f}x" if base else "-"]
            )
    table = render_table(["prompts", "n", "implementation", "tokens/s (median)", "vs direct vLLM"], rows)
    text = f"`{args.model}`, {args.max_tokens} new tokens at temperature 1, {args.repeats} timed calls each\n\n{table}\n"
    print(text)
    if not args.no_write:
        update_benchmarks_md(
            "rollout-throughput", "Rollout throughput: RolloutPool vs vLLM direct vs HF generate", text
        )


if __name__ == "__main__":
    main()
