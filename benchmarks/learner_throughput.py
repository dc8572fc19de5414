"""Learner throughput and peak memory: rlengine's learner rank against a plain PyTorch loop.

Both train on the same batch of responses, cut into the same length-sorted micro-batches, with a
token-mean PPO loss, AdamW and the same gradient-checkpointing setting. They differ only where
rlengine differs:

* rlengine: ``LearnerRank`` (DeepSpeed ZeRO, bf16 with fp32 master weights on GPU), driven in
  this process without Ray; the LM head runs only at response positions, in chunks.
* plain: a Hugging Face model with fp32 parameters (bf16 autocast on GPU), full logits at every
  position, ``log_softmax`` + ``gather``, ``loss.backward()``, ``torch.optim.AdamW`` (fused on GPU).

Each run is its own subprocess (clean peak memory); the two are run alternately ``--repeats``
times and medians are reported, with the ratio rlengine / plain. MFU counts model FLOPs (PaLM's
6N + 12·L·d·T per token, no recomputation) against a bf16 (GPU) or fp32 (CPU) matmul peak
measured in the same run.

    python benchmarks/learner_throughput.py --model builtin                    # CPU, the built-in 135M
    python benchmarks/learner_throughput.py --model qwen2.5-1.5b --zero 2 --grad-ckpt on --micro-batch-tokens 16384
    python benchmarks/learner_throughput.py --smoke                             # CI: tiny model, one step
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    median,
    print_result,
    render_table,
    run_worker,
    update_benchmarks_md,
    worker_command,
)
from rlengine.samples import Sample  # noqa: E402

QWEN = {  # Qwen2.5 shapes (config.json of the public checkpoints), random-initialised here
    "qwen2.5-0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
    ),
    "qwen2.5-1.5b": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
    ),
}


def make_model(name: str, directory: Path) -> str:
    """A local model directory: the built-in model, a tiny random Llama, or a random Qwen2.5 shape."""
    import torch

    if name == "builtin":
        from rlengine.models import resolve_model

        return resolve_model("smollm2-135m-instruct")
    if name == "tiny":
        from rlengine.models import make_tiny_model

        return make_tiny_model(directory, num_heads=2, seed=0)
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    config = Qwen2Config(
        vocab_size=151936,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
        rope_theta=1e6,
        **QWEN[name],
    )
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(directory)
    del model
    try:  # a tokenizer is not needed by the learner; keep the directory loadable anyway
        AutoTokenizer.from_pretrained(make_model("tiny", directory / "tok")).save_pretrained(directory)
    except Exception:  # noqa: BLE001
        pass
    return str(directory)


def make_samples(
    count: int, prompt_tokens: int, response_tokens: int, vocab: int, seed: int = 0
) -> list[Sample]:
    """Responses of random tokens; lengths vary +-50 % around the given means (as RL batches do)."""
    rng = random.Random(seed)
    samples = []
    for i in range(count):
        p = max(2, int(prompt_tokens * rng.uniform(0.5, 1.5)))
        r = max(1, int(response_tokens * rng.uniform(0.5, 1.5)))
        samples.append(
            Sample(
                [rng.randrange(10, vocab) for _ in range(p)],
                [rng.randrange(10, vocab) for _ in range(r)],
                advantage=1.0 if i % 2 else -1.0,
            )
        )
    return samples


def model_flops_per_step(model_path: str, samples: list[Sample]) -> float:
    """PaLM's model FLOPs (6N + 12·L·d·T per token) for one forward + backward over ``samples``."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model_path)
    d, layers, vocab = c.hidden_size, c.num_hidden_layers, c.vocab_size
    kv = getattr(c, "num_key_value_heads", c.num_attention_heads) * (d // c.num_attention_heads)
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * c.intermediate_size
    params = layers * per_layer + vocab * d  # + the LM head (the embedding lookup costs no FLOPs)
    total = 0.0
    for s in samples:
        t = len(s.prompt_ids) + len(s.response_ids)
        total += t * (6 * params + 12 * layers * d * t)
    return total


def matmul_peak(device: str) -> float:
    """FLOP/s of a large matmul in the training dtype (bf16 on GPU, fp32 on CPU)."""
    import torch

    n, dtype = (8192, torch.bfloat16) if device == "cuda" else (2048, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    reps, start = 10, time.perf_counter()
    for _ in range(reps):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start)


# --------------------------------------------------------------------------- one run (subprocess)


def peak_memory_gib(device: str) -> float:
    import resource

    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)


def run_rlengine(args, samples: list[Sample], plan) -> dict:
    import torch

    from rlengine.config import load_config
    from rlengine.learner.batching import step_denominators
    from rlengine.learner.rank import LearnerRank
    from rlengine.learner.spec import LearnerSpec, single_process_env

    single_process_env()
    cuda = args.device == "cuda"
    cfg = load_config(
        None,
        [
            f"model.dtype={'bfloat16' if cuda else 'float32'}",
            f"learner.zero_stage={args.zero}",
            f"learner.grad_checkpointing={str(args.grad_ckpt == 'on').lower()}",
            f"learner.micro_batch_tokens={args.micro_batch_tokens}",
            f"learner.packing={str(args.packing).lower()}",
            f"learner.compile={str(args.compile).lower()}",
            "learner.lr=1.0e-6",
            f"rollout.max_tokens={max(len(s.response_ids) for s in samples)}",
            f"rollout.max_model_len={max(s.length for s in samples) + 1}",
        ],
    )
    rank = LearnerRank(LearnerSpec.from_config(cfg, args.model_path, gpu=cuda))
    denominators = step_denominators(samples, plan, "token_mean")
    times, logprob_times = [], []
    for step in range(args.steps + 1):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        rank.train(samples, plan[0], denominators)
        if cuda:
            torch.cuda.synchronize()
        if step:  # the first step warms up
            times.append(time.perf_counter() - start)
    for _ in range(2):
        start = time.perf_counter()
        rank.compute_logprobs(samples, [m for step in plan[0] for m in step], "policy")
        logprob_times.append(time.perf_counter() - start)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            rank.train(samples, plan[0], denominators)
            if cuda:
                torch.cuda.synchronize()
        sort = "cuda_time_total" if cuda else "cpu_time_total"
        Path(args.profile).write_text(
            prof.key_averages().table(sort_by=sort, row_limit=30, max_name_column_width=60)
        )
    return {"step_s": times, "logprob_s": logprob_times[-1:]}


def run_plain(args, samples: list[Sample], plan) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    cuda = args.device == "cuda"
    device = torch.device(args.device)
    model = AutoModelForCausalLM.from_pretrained(args.model_path, dtype=torch.float32).to(device)
    model.config.use_cache = False
    if args.grad_ckpt == "on":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=cuda or None)
    denominator = sum(len(s.response_ids) for s in samples)
    times = []
    for step in range(args.steps + 1):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for micro in plan[0][0]:
            part = [samples[i] for i in micro]
            width = max(len(s.prompt_ids) + len(s.response_ids) for s in part)
            ids = torch.zeros((len(part), width), dtype=torch.long)
            attention = torch.zeros_like(ids)
            mask = torch.zeros((len(part), width - 1))
            for row, s in enumerate(part):
                seq = s.prompt_ids + s.response_ids
                ids[row, : len(seq)] = torch.tensor(seq)
                attention[row, : len(seq)] = 1
                mask[row, len(s.prompt_ids) - 1 : len(seq) - 1] = 1
            ids, attention, mask = ids.to(device), attention.to(device), mask.to(device)
            advantages = torch.tensor([s.advantage for s in part], device=device).unsqueeze(-1)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                logits = model(input_ids=ids, attention_mask=attention).logits
            logprobs = (
                torch.log_softmax(logits[:, :-1].float(), dim=-1)
                .gather(-1, ids[:, 1:].unsqueeze(-1))
                .squeeze(-1)
            )
            ratio = torch.exp(logprobs - logprobs.detach())
            loss = -(advantages * ratio * mask).sum() / denominator
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - start)
    return {"step_s": times, "logprob_s": []}


def worker(args) -> None:
    from rlengine.learner.batching import plan_updates

    samples = [Sample(**s) for s in json.loads(Path(args.samples_file).read_text())]
    plan = plan_updates(
        [s.length for s in samples],
        ranks=1,
        mini_batch_size=None,
        ppo_epochs=1,
        token_budget=args.micro_batch_tokens,
        seed=0,
        packed=args.packing and args.impl == "rlengine",
    )
    try:
        result = (run_rlengine if args.impl == "rlengine" else run_plain)(args, samples, plan)
        result["peak_gib"] = peak_memory_gib(args.device)
    except Exception as e:  # noqa: BLE001 - an out-of-memory is a result too
        result = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"}
    print_result(result)


# --------------------------------------------------------------------------- driver


def one_run(args, impl: str, samples_file: str, model_path: str) -> dict:
    keys = ("device", "zero", "grad_ckpt", "micro_batch_tokens", "steps")
    cmd = worker_command(__file__, impl, args, keys, samples_file=samples_file, model_path=model_path)
    for flag in ("packing", "compile"):
        if getattr(args, flag):
            cmd.append(f"--{flag}")
    if args.profile and impl == "rlengine":
        cmd += ["--profile", args.profile]
    result, stderr = run_worker(cmd, timeout=args.timeout)
    return (
        result if result is not None else {"error": (stderr.strip().splitlines() or ["no output"])[-1][:200]}
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="builtin", choices=["builtin", "tiny", *QWEN])
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--zero", type=int, default=2)
    parser.add_argument("--grad-ckpt", default="on", choices=["on", "off"])
    parser.add_argument("--micro-batch-tokens", type=int, default=None)
    parser.add_argument("--packing", action="store_true", help="rlengine packs micro-batches into one row")
    parser.add_argument(
        "--compile", action="store_true", help="rlengine compiles its decoder layers (learner.compile)"
    )
    parser.add_argument("--responses", type=int, default=None)
    parser.add_argument("--prompt-tokens", type=int, default=None)
    parser.add_argument("--response-tokens", type=int, default=None)
    parser.add_argument(
        "--steps", type=int, default=3, help="timed optimizer steps per run (after one warm-up)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each implementation")
    parser.add_argument("--timeout", type=int, default=1200)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny model, one step, no BENCHMARKS.md update (CI)"
    )
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument("--json-out", default=None, help="also write the rows as JSON here")
    parser.add_argument(
        "--profile", default=None, help="write a torch.profiler table of one rlengine step here"
    )
    # worker mode
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--samples-file", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model-path", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    gpu_shape = args.model in QWEN
    if args.smoke:
        args.model, args.steps, args.repeats, args.no_write = "tiny", 1, 1, True
    defaults = (64, 100, 940, 8192) if gpu_shape else (32, 40, 112, 2048)
    args.responses = args.responses or (4 if args.smoke else defaults[0])
    args.prompt_tokens = args.prompt_tokens or (8 if args.smoke else defaults[1])
    args.response_tokens = args.response_tokens or (8 if args.smoke else defaults[2])
    args.micro_batch_tokens = args.micro_batch_tokens or (64 if args.smoke else defaults[3])

    workdir = Path(tempfile.mkdtemp(prefix="rlengine-bench-"))
    cached = Path(tempfile.gettempdir()) / "rlengine-bench-models" / args.model  # random weights, made once
    model_path = str(cached) if (cached / "config.json").is_file() else make_model(args.model, cached)
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(model_path).vocab_size
    samples = make_samples(args.responses, args.prompt_tokens, args.response_tokens, vocab)
    samples_file = workdir / "samples.json"
    samples_file.write_text(json.dumps([dataclasses.asdict(s) for s in samples]))
    tokens = sum(len(s.prompt_ids) + len(s.response_ids) for s in samples)
    flops = model_flops_per_step(model_path, samples)
    peak = matmul_peak(args.device)

    runs: dict[str, list[dict]] = {"rlengine": [], "plain": []}
    for _ in range(args.repeats):
        for impl in ("rlengine", "plain"):
            runs[impl].append(one_run(args, impl, str(samples_file), model_path))
            print(impl, runs[impl][-1], flush=True)

    rows, summary = [], {}
    for impl, results in runs.items():
        errors = [r["error"] for r in results if "error" in r]
        times = [t for r in results if "error" not in r for t in r["step_s"]]
        if not times:
            summary[impl] = None
            rows.append([impl, "-", "-", "-", "-", "-", errors[0] if errors else "no result"])
            continue
        step = median(times)
        summary[impl] = {
            "step_s": step,
            "tok_s": tokens / step,
            "mfu": flops / step / peak,
            "peak_gib": median([r["peak_gib"] for r in results if "peak_gib" in r]),
            "logprob_s": median([t for r in results if "error" not in r for t in r["logprob_s"]]),
        }
        s = summary[impl]
        logprob = "-" if s["logprob_s"] != s["logprob_s"] else f"{s['logprob_s']:.2f}"
        rows.append(
            [
                impl,
                f"{step:.2f}",
                f"{s['tok_s']:,.0f}",
                f"{100 * s['mfu']:.1f} %",
                f"{s['peak_gib']:.1f}",
                logprob,
                "",
            ]
        )
    ratio = ""
    if summary["rlengine"] and summary["plain"]:
        ratio = (
            f"rlengine / plain: throughput {summary['rlengine']['tok_s'] / summary['plain']['tok_s']:.2f}x, "
            f"peak memory {summary['rlengine']['peak_gib'] / summary['plain']['peak_gib']:.2f}x"
        )
    setting = (
        f"{args.model}, {args.device}, ZeRO-{args.zero}, grad ckpt {args.grad_ckpt}, "
        f"{args.micro_batch_tokens}-token micro-batches{' (packed)' if args.packing else ''}"
        f"{', rlengine compiled' if args.compile else ''}, "
        f"{args.responses} responses, {tokens} tokens per step, {args.steps} timed steps x {args.repeats} runs each"
    )
    table = render_table(
        ["impl", "s/step (median)", "tokens/s", "MFU", "peak GiB", "logprob pass s", "note"], rows
    )
    text = f"{setting}; matmul peak {peak / 1e12:.1f} TFLOP/s\n\n{table}\n\n{ratio}\n"
    print("\n" + text)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"setting": setting, "summary": summary, "peak": peak}))
    if not args.no_write:
        flags = ("-packed" if args.packing else "") + ("-compiled" if args.compile else "")
        key = f"learner-{args.model}-{args.device}-z{args.zero}-ckpt{args.grad_ckpt}-{args.micro_batch_tokens}{flags}"
        update_benchmarks_md(key, f"Learner throughput: {setting.split(', ')[0]}, {args.device}", text)


if __name__ == "__main__":
    main()
