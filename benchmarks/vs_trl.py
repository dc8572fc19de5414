"""rlengine against TRL's GRPOTrainer: seconds per step, mean reward and peak memory, side by side.

Same model (the built-in SmolLM2-135M-Instruct), same prompts (synthetic add/sub with the
quickstart template, in the chat template), G = 4 completions for 8 prompts per step, at most
128 new tokens, temperature 1, learning rate 1e-6, no KL (beta = 0), token-mean loss (TRL's
``loss_type="dapo"``, rlengine's ``agg: token_mean``), group-normalised advantages, fp32, gradient
checkpointing off for both (a 135M model's activations fit), math-verify as the reward (the same
``reward.grade``). rlengine keeps its quickstart learner settings (ZeRO-0, shared-prefix layout). TRL generates with
``model.generate`` (vLLM's server/colocate modes need a GPU); rlengine uses its vLLM-CPU pool.
Runs alternate (trl, rlengine, trl, ...), each in a subprocess, and peak memory is the machine's
used memory above the idle level measured before each run. Needs ``pip install -e .[bench]``.

    python benchmarks/vs_trl.py --steps 4 --repeats 1
    python benchmarks/vs_trl.py --smoke        # CI: checks the scripts wire up (tiny model, 1 step)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TEMPLATE = "{problem} Put the final answer in \\boxed{}."


def rows(count: int) -> list[dict]:
    from rlengine.data import make_arithmetic

    return make_arithmetic(count, seed=0, ops=("add", "sub"), max_digits=2)


def run_trl(args) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from reward import grade
    from rlengine.data import fill_template

    torch.set_num_threads(os.cpu_count() or 1)
    data = Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": fill_template(TEMPLATE, r)}], "answer": r["answer"]}
            for r in rows(64)
        ]
    )

    def math_verify(prompts, completions, answer, **kwargs):
        return [1.0 if grade(c[0]["content"], a).correct else 0.0 for c, a in zip(completions, answer)]

    times: list[float] = []
    rewards: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.start = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.start)

        def on_log(self, _args, _state, _control, logs=None, **k):
            if logs and "reward" in logs:
                rewards.append(float(logs["reward"]))

    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-"),
        per_device_train_batch_size=args.prompts * args.n,
        num_generations=args.n,
        max_completion_length=args.max_tokens,
        temperature=1.0,
        learning_rate=1e-6,
        beta=0.0,
        loss_type="dapo",
        max_steps=args.steps,
        logging_steps=1,
        gradient_checkpointing=False,
        bf16=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        seed=0,
        dataloader_num_workers=0,
    )
    model = AutoModelForCausalLM.from_pretrained(args.model_path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(args.model_path)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=math_verify,
        args=config,
        train_dataset=data,
        processing_class=tokenizer,
        callbacks=[Timer()],
    )
    trainer.train()
    return {"step_s": times, "reward": rewards}


def run_rlengine(args) -> dict:
    run = Path(tempfile.mkdtemp(prefix="rle-")) / "run"
    overrides = [
        f"model.name={args.model_path}",
        "data.source=synthetic_arithmetic",
        "data.synthetic_num=64",
        "data.synthetic_ops=[add,sub]",
        "data.synthetic_max_digits=2",
        f"rollout.n={args.n}",
        f"rollout.max_tokens={args.max_tokens}",
        "rollout.max_model_len=512",
        "rollout.temperature=1.0",
        "reward.functions=[math_verify]",
        "algorithm.agg=token_mean",
        "algorithm.kl_coef=0.0",
        "learner.lr=1.0e-6",
        "learner.grad_checkpointing=false",
        f"trainer.batch_size={args.prompts}",
        f"trainer.max_steps={args.steps}",
        f"trainer.output_dir={run}",
        "logging.progress=false",
        "evaluation.every_n_steps=0",
        "evaluation.before_training=false",
        f"rollout.engine_in_process={'true' if args.engine_in_process else 'false'}",
    ]
    from rlengine.cli import main

    main(["train", "configs/quickstart.yaml", *overrides])  # its data.template is TEMPLATE
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {"step_s": [m["time/step"] for m in metrics], "reward": [m["reward/mean"] for m in metrics]}


def worker(args) -> None:
    from benchmarks.common import print_result

    result = run_trl(args) if args.impl == "trl" else run_rlengine(args)
    print_result(result)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs of each")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument(
        "--engine-in-process",
        type=int,
        default=0,
        help="1: rlengine's vLLM engine core in the engine's own process (starts sooner; --smoke uses it)",
    )
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    from benchmarks.common import median, render_table, run_worker, update_benchmarks_md, worker_command
    from benchmarks.step_anatomy import MemorySampler
    from rlengine.models import make_tiny_model, resolve_model

    if args.smoke:
        args.model_path = make_tiny_model(Path(tempfile.mkdtemp()) / "tiny", num_heads=2, seed=0)
        args.steps, args.prompts, args.max_tokens, args.no_write = 1, 2, 8, True
        args.engine_in_process = 1
    else:
        args.model_path = resolve_model("smollm2-135m-instruct")
    results: dict[str, list[dict]] = {"trl": [], "rlengine": []}
    for _ in range(args.repeats):
        for impl in ("trl", "rlengine"):
            cmd = worker_command(
                __file__,
                impl,
                args,
                ("steps", "prompts", "n", "max_tokens", "engine_in_process"),
                model_path=args.model_path,
            )
            with MemorySampler() as memory:
                result, stderr = run_worker(cmd)
            if result is None:
                sys.exit(f"{impl} failed:\n{stderr[-4000:]}")
            result["peak_gib"] = memory.peak - memory.idle
            results[impl].append(result)
            print(impl, result, flush=True)
    rows_out, summary = [], {}
    for impl, runs in results.items():
        times = [t for r in runs for t in r["step_s"][1:] or r["step_s"]]  # the first step warms up
        rewards = [x for r in runs for x in r["reward"]]
        summary[impl] = median(times)
        rows_out.append(
            [
                impl,
                f"{median(times):.1f}",
                f"{sum(rewards) / max(1, len(rewards)):.3f}",
                f"{median([r['peak_gib'] for r in runs]):.1f}",
            ]
        )
    table = render_table(
        ["trainer", "s/step (median, after step 1)", "mean reward", "peak GiB above idle"], rows_out
    )
    text = (
        f"{args.prompts} prompts x {args.n} completions, <= {args.max_tokens} new tokens, lr 1e-6, beta 0, fp32, "
        f"no gradient checkpointing, {args.steps} steps x {args.repeats} alternating runs each\n\n{table}\n\n"
        f"rlengine / TRL seconds per step: {summary['rlengine'] / summary['trl']:.2f}x\n"
    )
    print(text)
    if not args.no_write:
        update_benchmarks_md("vs-trl", "Against TRL's GRPOTrainer (CPU)", text)


if __name__ == "__main__":
    main()
