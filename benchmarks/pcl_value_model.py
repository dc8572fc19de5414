"""PCL's value model, ``train: head`` against ``train: full``: seconds per step, memory, and how well
it predicts pass rates after fitting on a stream of observed ones.

    nice python benchmarks/pcl_value_model.py [--steps 20] [--layers 8] [--timing-layers 0]

A PCL run without rollouts: the stage itself (``PCLCurriculum`` with the real value model in this
process, ``placement: driver``) selects B of k·B candidates every step and observes a pass rate for
each selected prompt, drawn as n = 8 rollouts would give it (Binomial(8, p) / 8) from a rule of
difficulty on the synthetic arithmetic source (one- to three-digit add / sub / mul, levels 1-4):

    logit p(x, t) = 2.2 − 1.3 · (level(x) − 1) + drift · t + u(x),   u(x) ~ N(0, 0.5²) per prompt

``u`` stands for what the text does not tell (it caps the explained variance any model can reach:
the "oracle" row knows level and step exactly). After ``--steps`` steps the model predicts
``--heldout`` prompts it never saw; the table gives their MSE and explained variance against the
true p at the last step, next to the explained variance of an estimate from 3 rollouts (the
paper's yardstick). Each configuration runs in a process of its own (peak RSS is that process's).
Prints a Markdown table and writes the ``pcl_value_model`` section of BENCHMARKS.md (``--no-write``
skips that; docs/curriculum.md quotes it); ``--smoke`` runs a tiny random model, two configurations,
and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import WORKER_ENV, machine, render_table, update_benchmarks_md  # noqa: E402

TEMPLATE = "{problem} Put the final answer in \\boxed{}."
N_ROLLOUTS = 8


def true_pass_rate(level: int, offset: float, step: int, drift: float) -> float:
    """The rule of difficulty (module docstring)."""
    return 1.0 / (1.0 + math.exp(-(2.2 - 1.3 * (level - 1) + drift * step + offset)))


def explained_variance(predicted: list[float], truth: list[float]) -> float:
    """1 − Var(truth − predicted) / Var(truth)."""
    return 1.0 - statistics.pvariance([t - p for p, t in zip(predicted, truth)]) / statistics.pvariance(truth)


def rss_mb() -> float:
    """Resident memory of this process now, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def child(options: dict) -> dict:
    """One configuration: build the stage, run the simulated steps, score the held-out prompts."""
    import torch
    from transformers import AutoTokenizer

    from rlengine.config import load_config
    from rlengine.data import make_arithmetic, render_prompt
    from rlengine.stages import StageContext
    from rlengine.stages.pcl import PCLCurriculum, prompt_key, value_model_spec
    from rlengine.stages.value_model import ValueModel, ValueModelHandle

    torch.set_num_threads(options["threads"])
    path = options["model"]
    tokenizer = AutoTokenizer.from_pretrained(path)
    raw = make_arithmetic(
        options["train"] + options["heldout"], seed=0, ops=("add", "sub", "mul"), max_digits=3
    )
    rng = random.Random(0)
    rows = []
    for row in raw:
        text = render_prompt(row["problem"], tokenizer, template=TEMPLATE)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        rows.append({**row, "prompt": text, "prompt_ids": ids, "offset": rng.gauss(0.0, 0.5)})
    train, heldout = rows[: options["train"]], rows[options["train"] :]
    overrides = [
        "curriculum.name=pcl",
        "curriculum.value_model.placement=driver",
        f"curriculum.value_model.train={options['train_mode']}",
        f"curriculum.value_model.head={options['head']}",
        f"curriculum.value_model.layers={options['layers'] or 'null'}",
        f"curriculum.candidates_factor={options['factor']}",
        *[f"curriculum.value_model.{k}={v}" for k, v in options.get("extra", {}).items()],
    ]
    cfg = load_config(None, overrides).curriculum
    rss_before = rss_mb()
    context = StageContext(train, 0, ["acc"], [1.0], policy_path=path)
    model = ValueModel(value_model_spec(cfg.value_model, context), init_pass_rate=cfg.tau)
    if options.get("head_lr"):  # the head at its own learning rate, the backbone at ``lr``
        model.optimizer = torch.optim.AdamW(
            [
                {"params": list(model.head.parameters()), "lr": options["head_lr"]},
                {"params": list(model.backbone.parameters()), "lr": cfg.value_model.lr or 1e-5},
            ]
        )
    handle = ValueModelHandle(lambda method, *a: getattr(model, method)(*a), "driver")
    stage = PCLCurriculum(cfg, context, model=handle)
    draw = random.Random(1)
    drift, steps = options["drift"], options["steps"]
    select_s, observe_s, distance, stage_mse = [], [], [], []
    for step in range(steps):
        start = time.perf_counter()
        prompts = stage.select(options["batch"])
        select_s.append(time.perf_counter() - start)
        truth = [true_pass_rate(r["level"], r["offset"], step, drift) for r in prompts]
        rates = [sum(draw.random() < p for _ in range(N_ROLLOUTS)) / N_ROLLOUTS for p in truth]
        start = time.perf_counter()
        metrics = stage.observe(prompts, rates)
        observe_s.append(time.perf_counter() - start)
        distance.append(statistics.fmean(abs(p - 0.5) for p in truth))
        stage_mse.append(metrics["curriculum/value_mse"])
    result = {
        "select_s": select_s,
        "observe_s": observe_s,
        "rss_before_mb": rss_before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "distance_to_half": statistics.fmean(distance[steps // 2 :]),
        "stage_mse": statistics.fmean(stage_mse[steps // 2 :]),
    }
    if options["quality"]:
        truth = [true_pass_rate(r["level"], r["offset"], steps, drift) for r in heldout]
        start = time.perf_counter()
        predicted = stage.model.predict([prompt_key(r) for r in heldout])
        result["predict_heldout_s"] = time.perf_counter() - start
        result["mse"] = statistics.fmean((p - t) ** 2 for p, t in zip(predicted, truth))
        result["ev"] = explained_variance(predicted, truth)
        oracle = [true_pass_rate(r["level"], 0.0, steps, drift) for r in heldout]
        result["oracle_ev"] = explained_variance(oracle, truth)
        three = [[sum(draw.random() < t for _ in range(3)) / 3 for t in truth] for _ in range(20)]
        result["three_rollouts_ev"] = statistics.fmean(explained_variance(e, truth) for e in three)
        everyone = [true_pass_rate(r["level"], r["offset"], steps // 2, drift) for r in train]
        result["random_distance"] = statistics.fmean(abs(p - 0.5) for p in everyone)
    stage.close()
    return result


def run_child(options: dict) -> dict:
    """Run one configuration in a fresh process; its last stdout line is the JSON result."""
    import os

    env = {**os.environ, **WORKER_ENV}
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(options)], env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"{options['label']}: exit {out.returncode}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=20, help="simulated PCL steps of the quality runs")
    parser.add_argument("--batch", type=int, default=16, help="B: prompts selected per step")
    parser.add_argument("--factor", type=int, default=4, help="k: candidates per prompt selected")
    parser.add_argument("--train", type=int, default=640, help="prompts the curriculum draws from")
    parser.add_argument("--heldout", type=int, default=160, help="prompts never observed, for the quality")
    parser.add_argument("--layers", type=int, default=8, help="backbone layers of the quality runs (0: all)")
    parser.add_argument(
        "--timing-layers", type=int, default=0, help="layers of the timing-only runs (0: all)"
    )
    parser.add_argument("--timing-steps", type=int, default=3, help="steps of the timing-only runs (0: none)")
    parser.add_argument("--drift", type=float, default=0.05, help="logit gain of the policy per step")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--configs",
        default="",
        help="comma-separated keys to run: head, head-mlp, full, full-mlp, full-mlp-headlr, timing-head, "
        "timing-full (default: all)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    parser.add_argument("--smoke", action="store_true", help="tiny random model, two steps (a quick check)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    from rlengine.models import make_tiny_model, resolve_model

    if args.smoke:
        import tempfile

        args.model = make_tiny_model(Path(tempfile.mkdtemp()) / "tiny", num_heads=2, seed=0)
        args.steps, args.train, args.heldout, args.layers, args.timing_layers, args.timing_steps = (
            2,
            64,
            16,
            1,
            2,
            1,
        )
        args.configs, args.no_write = args.configs or "head,full-mlp", True
    path = resolve_model(args.model)
    common = {
        "model": path,
        "batch": args.batch,
        "factor": args.factor,
        "train": args.train,
        "heldout": args.heldout,
        "drift": args.drift,
        "threads": args.threads,
    }
    quality = {"steps": args.steps, "layers": args.layers, "quality": True}
    timing = {"steps": args.timing_steps, "layers": args.timing_layers, "quality": False}
    layers_q, layers_t = args.layers or "all", args.timing_layers or "all"
    configs = {
        "head": {
            "label": f"head, linear, {layers_q} layers",
            "train_mode": "head",
            "head": "linear",
            **quality,
        },
        "head-mlp": {
            "label": f"head, mlp, {layers_q} layers",
            "train_mode": "head",
            "head": "mlp",
            **quality,
        },
        "full": {
            "label": f"full, linear, {layers_q} layers",
            "train_mode": "full",
            "head": "linear",
            **quality,
        },
        "full-mlp": {
            "label": f"full, mlp, {layers_q} layers",
            "train_mode": "full",
            "head": "mlp",
            **quality,
        },
        "full-mlp-headlr": {
            "label": f"full, mlp, {layers_q} layers, head lr 1e-3",
            "train_mode": "full",
            "head": "mlp",
            "head_lr": 1e-3,
            **quality,
        },
        "timing-head": {
            "label": f"head, linear, {layers_t} layers",
            "train_mode": "head",
            "head": "linear",
            **timing,
        },
        "timing-full": {
            "label": f"full, linear, {layers_t} layers",
            "train_mode": "full",
            "head": "linear",
            **timing,
        },
    }
    wanted = [c.strip() for c in args.configs.split(",") if c.strip()] or list(configs)
    results = []
    for key in wanted:
        options = configs[key]
        start = time.perf_counter()
        result = run_child({**common, **options})
        print(
            f"{options['label']}: {time.perf_counter() - start:.0f} s {json.dumps(result)}", file=sys.stderr
        )
        results.append((options, result))

    epoch = max(1, args.train // (args.batch * args.factor))

    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.2f}" if values else "-"

    rows = []
    for options, r in results:
        cold, warm = r["select_s"][:epoch], r["select_s"][epoch:]
        q = options["quality"]
        rows.append(
            [
                options["label"],
                cell(cold),
                cell(warm),
                cell(r["observe_s"]),
                f"{r['peak_rss_mb'] - r['rss_before_mb']:.0f}",
                f"{r['mse']:.4f}" if q else "-",
                f"{r['ev']:.2f}" if q else "-",
                f"{r['distance_to_half']:.3f}" if q else "-",
            ]
        )
    body = render_table(
        [
            "value model",
            "select s (1st epoch)",
            "select s (later)",
            "observe + fit s",
            "MB added (peak RSS)",
            "held-out MSE",
            "held-out EV",
            "\\|p − ½\\| selected",
        ],
        rows,
    )
    reference = [r for o, r in results if o["quality"]]
    if reference:
        r = reference[0]
        body += (
            f"\n\nreference: explained variance of 3 rollouts {r['three_rollouts_ev']:.2f}, of the oracle "
            f"(level and step known) {r['oracle_ev']:.2f}; |p − ½| of a random choice {r['random_distance']:.3f}"
        )
    body += (
        f"\n\nB = {args.batch}, k = {args.factor}, {args.train} prompts ({epoch} steps an epoch), "
        f"{args.heldout} held out, drift {args.drift}, {args.steps} steps (quality rows), "
        f"{args.timing_steps} steps (timing rows)"
    )
    print(body)
    print(f"\nmachine: {machine()}")
    if not args.no_write:
        update_benchmarks_md("pcl_value_model", "PCL value model: train: head against train: full", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
