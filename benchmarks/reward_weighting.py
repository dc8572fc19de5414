"""Reward weighting: ``static`` vs ``hypervolume`` vs ``gradient`` at equal steps.

    python benchmarks/reward_weighting.py [--config examples/multi_objective/config.yaml] [--steps 12]

Three ``rlengine train`` runs of the same config (accuracy + conciseness + format on arithmetic,
the built-in model), same seed and step budget, one after the other, differing only in the
``reward_weighting`` section. Every run evaluates a held-out set (problems from the training
generator with another seed, none of them in the training data) before training and every
``--eval-every`` steps, with every objective scored on the evaluation completions.

The table gives, per run, the last evaluation's objective means, the mean response length, the
hypervolume of the run's evaluation points (one point per evaluation, in objective space) above
the shared reference (the nadir: the worst value of each objective over every evaluation of every
run), the final weights,
and the learner or rollout time the stage added (``time/reward_weighting``). Writes the
``reward_weighting`` section of BENCHMARKS.md and docs/images/reward_weighting.png unless
``--no-write``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    ROOT,
    add_training_run_arguments,
    render_table,
    update_benchmarks_md,
)
from benchmarks.curriculum_efficiency import run, write_heldout  # noqa: E402

VARIANTS = {
    "static": {"name": "static"},
    "hypervolume": {"name": "hypervolume", "every_n_steps": 2, "responses": 2},
    "gradient": None,  # the config's own section
}


def eval_vectors(run_dir: Path, objectives: list[str]) -> list[list[float]]:
    """One objective vector per evaluation of the held-out set, in step order."""
    from rlengine.plot import eval_points

    points = [p for p in eval_points(run_dir) if p["benchmark"] == "heldout"]
    return [[p["objectives"][k] for k in objectives] for p in points]


def summarise(run_dir: Path, objectives: list[str], reference: list[float]) -> dict:
    """Last evaluation, hypervolume of all evaluations above ``reference``, final weights and
    stage time of one run."""
    from rlengine.algorithms.multi_objective import hypervolume
    from rlengine.plot import eval_points

    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = [p for p in eval_points(run_dir) if p["benchmark"] == "heldout"][-1]
    return {
        "steps": metrics[-1]["step"],
        "seconds": sum(m["time/step"] for m in metrics),
        "weighting_seconds": sum(m.get("time/reward_weighting", 0.0) for m in metrics),
        "last": {k: last["objectives"][k] for k in objectives},
        "length": last["length"],
        "hypervolume": hypervolume(eval_vectors(run_dir, objectives), reference),
        "weights": {k: metrics[-1][f"weights/{k}"] for k in objectives},
        "train": {k: statistics.fmean(m[f"reward/{k}/mean"] for m in metrics[-3:]) for k in objectives},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_training_run_arguments(
        parser, "examples/multi_objective/config.yaml", steps=8, out_dir="runs/bench_reward_weighting"
    )
    parser.add_argument("--eval-every", type=int, default=4)
    args = parser.parse_args()
    args.minutes, args.max_steps = 10_000.0, args.steps  # the step budget decides, not the clock

    base = yaml.safe_load(Path(args.config).read_text())
    base["evaluation"] = {**base.get("evaluation", {}), "limit": None}
    objectives = [
        f if isinstance(f, str) else f.get("name", f["function"]) for f in base["reward"]["functions"]
    ]
    out = Path(args.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    write_heldout(out / "heldout.jsonl", base.get("data") or {}, args.heldout)
    runs = {}
    for name, section in VARIANTS.items():
        raw = {**base, "reward_weighting": section or base["reward_weighting"]}
        runs[name] = run(name, raw, out, args)
    vectors = {name: eval_vectors(run_dir, objectives) for name, run_dir in runs.items()}
    first = vectors["static"][0]  # step 0: the same policy in every run
    # the nadir of every evaluation of every run: each run's hypervolume is measured from one corner
    reference = [min(v[i] for points in vectors.values() for v in points) for i in range(len(objectives))]
    results = {name: summarise(run_dir, objectives, reference) for name, run_dir in runs.items()}
    if not args.no_write:
        from rlengine.plot import plot_runs

        plot_runs(list(runs.values()), ROOT / "docs" / "images" / "reward_weighting.png")

    rows = [
        ["step 0 (all runs)", "0", "", *(f"{v:.3f}" for v in first), "", "", "", ""],
        ["reference (nadir)", "", "", *(f"{v:.3f}" for v in reference), "", "0", "", ""],
        *[
            [
                name,
                str(r["steps"]),
                f"{r['seconds']:.0f}",
                *(f"{r['last'][k]:.3f}" for k in objectives),
                f"{r['length']:.1f}",
                f"{r['hypervolume']:.5f}",
                " / ".join(f"{r['weights'][k]:.2f}" for k in objectives),
                f"{r['weighting_seconds']:.0f}",
            ]
            for name, r in results.items()
        ],
    ]
    headers = [
        "run",
        "steps",
        "training s",
        *(f"held-out {k}" for k in objectives),
        "mean tokens",
        "hypervolume of evals",
        f"final weights ({' / '.join(objectives)})",
        "s in time/reward_weighting",
    ]
    text = render_table(headers, rows)
    text += "\n\nTraining-batch objective means over the last 3 steps:\n\n" + "\n".join(
        f"- `{name}`: " + ", ".join(f"{k} {r['train'][k]:.3f}" for k in objectives)
        for name, r in results.items()
    )
    print(text)
    if not args.no_write:
        note = (
            f"\n\nConfig {Path(args.config).relative_to(ROOT)}, seed {args.seed}, {args.steps} steps per run; "
            f"held-out: {args.heldout} problems from the training generator with another seed, evaluated "
            f"greedily before training and every {args.eval_every} steps, every objective scored on the "
            "completions. Hypervolume: of each run's evaluation points in (accuracy, conciseness, format) "
            "space, above the nadir of all runs' evaluations (the step-0 evaluation, identical in every run, "
            "is one of each run's points). `hypervolume` measures the "
            f"{base['data'].get('validation_size')} held-out validation prompts every 2 steps (2 responses each). Plot: "
            "docs/images/reward_weighting.png (`rlengine plot` of the three runs). One held-out accuracy "
            f"near 0.3 on {args.heldout} problems has a standard error of about "
            f"{(0.3 * 0.7 / args.heldout) ** 0.5:.3f}."
        )
        update_benchmarks_md(
            "reward_weighting", "Reward weighting: static vs hypervolume vs gradient", text + note
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
