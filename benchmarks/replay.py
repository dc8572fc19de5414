"""Self-replay: ``none`` vs ``uniform`` vs ``recent`` — reward against wall-clock time at equal steps.

    python benchmarks/replay.py [--config configs/arith_replay.yaml] [--steps 10]

Three ``rlengine train`` runs of the same config (arithmetic, the built-in model, ``loss: bapo``),
same seed and step budget, one after the other, differing only in the ``replay`` section
(``uniform`` and ``recent`` take ``ratio`` of every batch's groups from the buffer, uniformly or the
newest, so they roll out that many fewer fresh prompts). RECAP's replay of other domains is a
different question (forgetting), measured on its own recipe, configs/arith_recap.yaml. Every run evaluates a held-out set (problems from the training
generator with another seed) before training and at the end.

The table gives, per run: training seconds and seconds per step (the sum of ``time/step``, so the
evaluations are not counted), fresh responses rolled out, the training reward over the last 3
steps, when the 3-step mean reward first reached ``none``'s final value, held-out accuracy, the
mean |ratio − 1| of the replayed tokens and the BAPO bounds. Writes the ``replay`` section of
BENCHMARKS.md unless ``--no-write``.
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
from benchmarks.curriculum_efficiency import curve, first_time, run, smoothed, write_heldout  # noqa: E402


def summarise(run_dir: Path) -> dict:
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    points = curve(run_dir)
    rewards = [p[2] for p in points if p[2] is not None]
    accuracy = [p[3] for p in points if p[3] is not None]
    stale = [
        m["actor/stale_ratio_deviation"] for m in metrics if m.get("actor/stale_ratio_deviation") is not None
    ]
    return {
        "steps": metrics[-1]["step"],
        "seconds": sum(m["time/step"] for m in metrics),
        "per_step": statistics.median(m["time/step"] for m in metrics),
        "generated": sum(m["rollouts/generated"] for m in metrics),
        "reward": statistics.fmean(rewards[-3:]),
        "smoothed": [
            (p[0], p[1], r, None) for p, r in zip([p for p in points if p[2] is not None], smoothed(rewards))
        ],
        "accuracy": (accuracy[0], accuracy[-1]) if accuracy else (float("nan"), float("nan")),
        "stale": statistics.fmean(stale) if stale else None,
        "bapo": (
            statistics.fmean(m.get("actor/bapo_low", float("nan")) for m in metrics),
            statistics.fmean(m.get("actor/bapo_high", float("nan")) for m in metrics),
        ),
        "curve": [(p[1], p[2]) for p in points if p[2] is not None],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_training_run_arguments(parser, "configs/arith_replay.yaml", steps=10, out_dir="runs/bench_replay")
    args = parser.parse_args()
    args.minutes, args.max_steps, args.eval_every = 10_000.0, args.steps, args.steps

    base = yaml.safe_load(Path(args.config).read_text())
    section = base.get("replay") or {}
    if section.get("name") not in ("uniform", "recent"):
        raise SystemExit(f"{args.config}: its replay section must be uniform or recent")
    out = Path(args.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    write_heldout(out / "heldout.jsonl", base.get("data") or {}, args.heldout)
    options = {k: v for k, v in section.items() if k != "name"}
    variants = {
        "none": {"name": "none"},
        "uniform": {**options, "name": "uniform"},
        "recent": {**options, "name": "recent"},
    }
    results = {
        name: summarise(run(name, {**base, "replay": replay}, out, args)) for name, replay in variants.items()
    }
    target = results["none"]["reward"]
    rows = []
    for name, r in results.items():
        reached = first_time(r["smoothed"], 2, target)
        rows.append(
            [
                name,
                str(r["steps"]),
                f"{r['seconds']:.0f}",
                f"{r['per_step']:.1f}",
                str(r["generated"]),
                f"{r['reward']:.3f}",
                f"{reached:.0f}" if reached is not None else "not reached",
                f"{r['accuracy'][0]:.3f} → {r['accuracy'][1]:.3f}",
                f"{r['stale']:.4f}" if r["stale"] is not None else "—",
                f"{r['bapo'][0]:.2f} / {r['bapo'][1]:.2f}",
            ]
        )
    text = render_table(
        [
            "replay",
            "steps",
            "training s",
            "median s/step",
            "responses rolled out",
            "reward (last 3 steps)",
            f"s to none's final reward ({target:.3f}, 3-step mean)",
            "held-out acc (start → end)",
            "mean |ratio − 1| of replayed tokens",
            "BAPO bounds (mean low / high)",
        ],
        rows,
    )
    text += "\n\nTraining reward against training seconds:\n\n" + "\n".join(
        f"- `{name}`: " + ", ".join(f"{s:.0f} s: {v:.2f}" for s, v in r["curve"])
        for name, r in results.items()
    )
    print(text)
    if not args.no_write:
        note = (
            f"\n\nConfig {Path(args.config).relative_to(ROOT)} (loss bapo, replay ratio {section.get('ratio')}, "
            f"max_staleness {section.get('max_staleness')}), seed {args.seed}, {args.steps} steps per run; "
            f"held-out: {args.heldout} problems from the training generator with another seed, greedy, before "
            "training and at the end. Training reward is the scalar over the trained groups (replayed ones "
            "included, re-scalarised with the current weights)."
        )
        update_benchmarks_md("replay", "Self-replay: none vs uniform vs recent", text + note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
