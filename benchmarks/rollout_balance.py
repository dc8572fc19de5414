"""Splitting a request over two rollout engines: ``rollout.balance`` even vs tokens vs throughput.

One RolloutPool of two vLLM engines (one core each on a 2-core CPU). The request has prompts of
very different lengths in an unlucky order: the long ones first, as a dataset sorted by length
gives them. ``even`` hands each engine a contiguous half (engine 0 gets every long prompt);
``tokens`` splits by estimated tokens; ``throughput`` also weighs each engine's measured speed.
The modes take turns, call by call, after one warm-up call each; reported are the medians of the
wall seconds of ``pool.generate`` and of ``rollout/engine_imbalance`` (slowest engine's seconds
over the mean).

    python benchmarks/rollout_balance.py                 # built-in model, writes BENCHMARKS.md
    python benchmarks/rollout_balance.py --smoke         # tiny model, one call per mode, no file
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":  # vLLM starts processes: keep module-level work out of their way
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODES = ("even", "tokens", "throughput")


def skewed_prompts(model_path: str, long: int, short: int, long_words: int) -> list[list[int]]:
    """``long`` prompts with a ~``long_words``-word preamble, then ``short`` bare ones."""
    from transformers import AutoTokenizer

    from rlengine.data import make_arithmetic

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    rows = make_arithmetic(long + short, seed=3, ops=("add",), max_digits=2)
    preamble = " ".join(["Read the problem carefully and check each digit."] * (long_words // 8))
    texts = [
        (preamble + " " if i < long else "") + r["problem"] + " Put the final answer in \\boxed{}."
        for i, r in enumerate(rows)
    ]
    return [tokenizer(t)["input_ids"] for t in texts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--long", type=int, default=8)
    parser.add_argument("--short", type=int, default=8)
    parser.add_argument("--long-words", type=int, default=320)
    parser.add_argument("--n", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny model, one call per mode, no file")
    args = parser.parse_args()

    from benchmarks.common import median, render_table, update_benchmarks_md
    from rlengine.models import resolve_model
    from rlengine.rollout import RolloutPool
    from rlengine.runtime import init_ray

    scratch = None
    if args.smoke:
        from rlengine.models import make_tiny_model

        scratch = Path(tempfile.mkdtemp(prefix="rlengine-balance-"))
        model_path = make_tiny_model(scratch, num_heads=2, seed=0)
        args.repeats, args.long_words = 1, 64
    else:
        model_path = resolve_model(args.model)
    batch = skewed_prompts(model_path, args.long, args.short, args.long_words)
    init_ray(None)
    pool = RolloutPool(  # --smoke: engines in the actors' own processes start faster
        model_path, num_engines=2, max_model_len=1024, seed=0, kv_cache_gib=1, in_process=args.smoke
    )
    seconds: dict[str, list[float]] = {m: [] for m in MODES}
    imbalance: dict[str, list[float]] = {m: [] for m in MODES}
    try:
        for call in range(args.repeats + 1):
            for mode in MODES:
                pool.balance_mode = mode
                sampling = {
                    "n": args.n,
                    "temperature": 1.0,
                    "top_p": 1.0,
                    "max_tokens": args.max_tokens,
                    "seeds": [1000 * call + i for i in range(len(batch))],
                }
                start = time.perf_counter()
                pool.generate(batch, sampling)
                if call > 0 or args.smoke:  # the first call of each mode warms up (and measures speeds)
                    seconds[mode].append(time.perf_counter() - start)
                    imbalance[mode].append(pool.imbalance())
    finally:
        pool.shutdown()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    base = median(seconds["even"])
    rows = [
        [
            mode,
            f"{median(seconds[mode]):.2f}",
            f"{median(imbalance[mode]):.2f}",
            f"{base / median(seconds[mode]):.2f}x",
        ]
        for mode in MODES
    ]
    lengths = sorted(len(p) for p in batch)
    table = render_table(
        ["balance", "seconds per request (median)", "engine imbalance", "speed-up vs even"], rows
    )
    print(table)
    if args.smoke:
        return
    body = (
        f"`{args.model}`, 2 engines (1 core each); {args.long} long prompts ({lengths[-1]} tokens) "
        f"then {args.short} short ones ({lengths[0]} tokens), n={args.n}, {args.max_tokens} new tokens, "
        f"{args.repeats} timed calls per mode, modes taking turns\n\n{table}"
    )
    update_benchmarks_md("rollout-balance", "Rollout load balancing: even vs tokens vs throughput", body)


if __name__ == "__main__":
    main()
