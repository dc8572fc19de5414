"""Curriculum efficiency: ``uniform`` vs ``balanced`` vs ``pcl`` at the same seed and wall-clock budget.

    python benchmarks/curriculum_efficiency.py [--config configs/arith_pcl.yaml] [--minutes 7] [--eval-every 4]

Three ``rlengine train`` processes on the same config (mixed-difficulty arithmetic, the built-in
model), one after the other, each stopped by ``trainer.max_minutes``:

- ``uniform``: plain GRPO (``curriculum: uniform``, ``filter: none``);
- ``balanced``: ``filter: balanced`` (pass rate in [0.2, 0.8], up to 4 rollout rounds), uniform prompts;
- ``pcl``: the config's ``curriculum: pcl`` section, ``filter: none``.

Every run evaluates a held-out set (problems from the same generator with another seed, none of
them in the training data) before training and every ``--eval-every`` steps. The tables give
held-out accuracy and training reward against training time (the sum of ``time/step``, so the
evaluations are not counted), and the training time each run needs to reach plain GRPO's best.
Training reward is over the prompts each curriculum chose, so it is not comparable across runs
(PCL and the filter pick prompts near a 0.5 pass rate by design); held-out accuracy is.
Writes the ``curriculum_efficiency`` section of BENCHMARKS.md unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, WORKER_ENV, render_table, update_benchmarks_md  # noqa: E402


def write_heldout(path: Path, data: dict, count: int) -> None:
    """``count`` problems from the training generator's distribution, none in the training set."""
    from rlengine.data import make_arithmetic

    options = dict(
        ops=tuple(data.get("synthetic_ops", ("add", "sub", "mul"))),
        min_digits=data.get("synthetic_min_digits", 1),
        max_digits=data.get("synthetic_max_digits", 4),
    )
    train = {r["problem"] for r in make_arithmetic(data.get("synthetic_num", 2000), seed=0, **options)}
    rows = [r for r in make_arithmetic(count * 4, seed=7919, **options) if r["problem"] not in train][:count]
    path.write_text(
        "".join(json.dumps({k: r[k] for k in ("id", "problem", "answer", "level")}) + "\n" for r in rows)
    )


def run(
    name: str, raw: dict, out: Path, args: argparse.Namespace, benchmarks: list[Path] | None = None
) -> Path:
    """Train ``raw`` as ``out/name`` (``rlengine train`` in a subprocess), evaluating ``benchmarks``
    (default: ``out/heldout.jsonl``); with ``args.reuse`` a run with metrics is read back instead."""
    run_dir = out / name
    config = out / f"{name}.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    overrides = [
        f"trainer.output_dir={run_dir}",
        f"trainer.seed={args.seed}",
        f"trainer.max_minutes={args.minutes}",
        f"trainer.max_steps={args.max_steps}",
        "trainer.save_every=0",
        f"evaluation.every_n_steps={args.eval_every}",
        "evaluation.before_training=true",
        f"evaluation.benchmarks=[{','.join(str(b) for b in benchmarks or [out / 'heldout.jsonl'])}]",
        "evaluation.limit=null",
        "logging.progress=false",
        *args.override,
    ]
    if run_dir.exists() and args.reuse and (run_dir / "metrics.jsonl").exists():
        print(f"{name}: reusing {run_dir}")
    elif os.environ.get("RLENGINE_REPORT_ONLY") == "1":
        raise SystemExit(f"{name}: no finished run in {run_dir} to report on (RLENGINE_REPORT_ONLY=1)")
    else:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "rlengine.cli", "train", str(config), *overrides],
            check=True,
            env={**os.environ, **WORKER_ENV},
            cwd=ROOT,
        )
        print(f"{name}: {time.perf_counter() - start:.0f} s wall")
    return run_dir


def curve(run_dir: Path) -> list[tuple[int, float, float | None, float | None]]:
    """(step, training seconds so far, reward/mean, held-out pass@1) from step 0 (before training)
    on; the accuracy is None at steps without an evaluation (read from ``eval/step_N.json``)."""
    from rlengine.plot import eval_points, training_seconds

    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    seconds = training_seconds(metrics)
    accuracy = {p["step"]: p["pass@1"] for p in eval_points(run_dir) if p["benchmark"] == "heldout"}
    rewards = {m["step"]: m.get("reward/mean") for m in metrics}
    return [(step, seconds[step], rewards.get(step), accuracy.get(step)) for step in sorted(seconds)]


def selection_distance(run_dir: Path, warmup: int = 3) -> float | None:
    """Mean ``pass_rate/distance_from_half`` (|p̂ − ½| of the trained prompts) after the first
    ``warmup`` steps: how near τ = 0.5 the prompts a curriculum picks are once its value model has
    data. None when the run has no step past the warm-up."""
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    values = [
        m["pass_rate/distance_from_half"] for m in metrics[warmup:] if "pass_rate/distance_from_half" in m
    ]
    return statistics.fmean(values) if values else None


def first_time(
    points: list[tuple[int, float, float | None, float | None]], index: int, target: float
) -> float | None:
    return next((p[1] for p in points if p[index] is not None and p[index] >= target - 1e-9), None)


def smoothed(values: list[float], window: int = 3) -> list[float]:
    return [statistics.fmean(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs/arith_pcl.yaml"))
    parser.add_argument("--minutes", type=float, default=7.0, help="training budget per run")
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=4)
    parser.add_argument("--heldout", type=int, default=150, help="held-out problems")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=str(ROOT / "runs/bench_curriculum"))
    parser.add_argument("--override", action="append", default=[], help="extra key=value for every run")
    parser.add_argument("--reuse", action="store_true", help="read finished runs instead of training again")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny model, 1 step each, no BENCHMARKS.md (CI)")
    args = parser.parse_args()
    if args.smoke:
        import tempfile

        from rlengine.models import make_tiny_model

        tiny = make_tiny_model(Path(tempfile.mkdtemp()) / "tiny", num_heads=2, seed=0)
        args.override += [
            f"model.name={tiny}",
            "rollout.max_tokens=8",
            "rollout.n=2",
            "trainer.batch_size=2",
            "evaluation.max_tokens=8",
        ]
        args.max_steps, args.heldout, args.no_write, args.out_dir = 1, 4, True, tempfile.mkdtemp()

    base = yaml.safe_load(Path(args.config).read_text())
    if (base.get("curriculum") or {}).get("name") != "pcl":
        raise SystemExit(f"{args.config}: its curriculum section must be pcl")
    if args.smoke:
        base["curriculum"]["value_model"]["layers"] = None
    out = Path(args.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    write_heldout(out / "heldout.jsonl", base.get("data") or {}, args.heldout)
    variants = {
        "uniform": {"curriculum": {"name": "uniform"}, "filter": {"name": "none"}},
        "balanced": {
            "curriculum": {"name": "uniform"},
            "filter": {"name": "balanced", "low": 0.2, "high": 0.8, "max_rounds": 4},
        },
        "pcl": {"curriculum": base["curriculum"], "filter": {"name": "none"}},
    }
    run_dirs = {name: run(name, {**base, **sections}, out, args) for name, sections in variants.items()}
    curves = {name: curve(run_dir) for name, run_dir in run_dirs.items()}
    if not args.no_write:
        from rlengine.plot import plot_runs

        plot_runs([out / name for name in variants], ROOT / "docs" / "images" / "curriculum_efficiency.png")

    plain = curves["uniform"]
    best_acc = max(p[3] for p in plain if p[3] is not None)
    best_reward = max(smoothed([p[2] for p in plain if p[2] is not None]))
    summary = []
    for name, points in curves.items():
        accs = [p[3] for p in points if p[3] is not None]
        rewards = [p[2] for p in points if p[2] is not None]
        reward_points = [
            (p[0], p[1], r, None) for p, r in zip([p for p in points if p[2] is not None], smoothed(rewards))
        ]
        to_acc, to_reward = first_time(points, 3, best_acc), first_time(reward_points, 2, best_reward)
        distance = selection_distance(run_dirs[name])
        summary.append(
            [
                name,
                str(points[-1][0]),
                f"{points[-1][1]:.0f}",
                f"{accs[0]:.3f} → {accs[-1]:.3f}",
                f"{max(accs):.3f}",
                f"{to_acc:.0f}" if to_acc is not None else "not reached",
                f"{to_reward:.0f}" if to_reward is not None else "not reached",
                f"{distance:.3f}" if distance is not None else "-",
            ]
        )
    body = [
        render_table(
            [
                "run",
                "steps",
                "training s",
                "held-out acc (start → end)",
                "best held-out",
                f"s to plain GRPO's best held-out ({best_acc:.3f})",
                f"s to plain GRPO's best reward ({best_reward:.3f}, 3-step mean)",
                "mean \\|p̂ − ½\\| of the trained prompts, steps 4+",
            ],
            summary,
        ),
        "",
        "Held-out accuracy (pass@1, greedy) against training seconds:",
        "",
    ]
    for name, points in curves.items():
        body.append(
            f"- `{name}`: " + ", ".join(f"{p[1]:.0f} s: {p[3]:.3f}" for p in points if p[3] is not None)
        )
    body += ["", "Training reward (`reward/mean` of the trained groups) per step:", ""]
    for name, points in curves.items():
        body.append(f"- `{name}`: " + " ".join(f"{p[2]:.2f}" for p in points if p[2] is not None))
    text = "\n".join(body)
    print(text)
    if not args.no_write:
        note = (
            f"\n\nSame config ({Path(args.config).name}), seed {args.seed}, {args.minutes} training minutes per run "
            f"(evaluations included in the budget, excluded from the seconds shown); held-out: {args.heldout} "
            "problems from the training generator with another seed, none in the training set. Training reward "
            "is over the prompts each run chose: PCL and the balanced filter choose prompts near a 0.5 pass rate, "
            "so compare runs by held-out accuracy. The last column is how near τ = ½ each run's trained prompts "
            "were once the value model had three steps of data (PCL's selection claim; uniform is the reference). One held-out accuracy near "
            f"{best_acc:.2f} on {args.heldout} problems has a standard error of about "
            f"{(best_acc * (1 - best_acc) / args.heldout) ** 0.5:.3f}."
        )
        update_benchmarks_md(
            "curriculum_efficiency", "Curriculum efficiency: uniform vs balanced vs pcl", text + note
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
