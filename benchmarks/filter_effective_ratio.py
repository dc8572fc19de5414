"""Effective ratio with and without the balanced filter, same model, data and seed.

    python benchmarks/filter_effective_ratio.py [--config configs/arith_balanced.yaml] [--steps 3]

Trains ``--steps`` steps of the config twice, once with its ``filter`` section (``balanced``) and
once with ``filter: {name: none}``, each in its own ``rlengine train`` process. Reads both runs'
``metrics.jsonl``, prints a table (median effective ratio, kept fraction, rounds, extra rollouts,
time per step) and writes it into the ``filter_effective_ratio`` section of ``BENCHMARKS.md`` at the
repo root (``--no-write`` skips that). Acceptance: balanced reaches effective_ratio >= 0.9 and
``none`` a lower figure. On a 2-core CPU this takes several minutes (engine start ~50 s per run).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- filter_effective_ratio:begin -->", "<!-- filter_effective_ratio:end -->"
COLUMNS = [
    ("effective_ratio", "median effective_ratio", statistics.median),
    ("filter/kept_fraction", "median kept fraction", statistics.median),
    ("filter/rounds", "mean rounds", statistics.fmean),
    ("filter/extra_rollouts", "extra rollouts / step", statistics.fmean),
    ("filter/carried_over", "carried groups / step", statistics.fmean),
    ("rollouts/generated", "responses generated / step", statistics.fmean),
    ("pass_rate/mean", "mean pass rate", statistics.fmean),
    ("time/rollout", "median time/rollout (s)", statistics.median),
    ("time/step", "median time/step (s)", statistics.median),
]


def run(
    config: Path,
    filter_section: dict,
    out_dir: Path,
    steps: int,
    seed: int,
    reuse: bool,
    extra: tuple[str, ...] = (),
) -> list[dict]:
    """One ``rlengine train`` process on ``config`` with its filter section replaced.

    With ``reuse``, a run directory whose resolved ``config.yaml`` is the one this call would write
    and whose ``metrics.jsonl`` holds every step is read instead of trained again.
    """
    from rlengine.config import dump_yaml, load_config

    raw = yaml.safe_load(config.read_text())
    raw["filter"] = filter_section
    out_dir.mkdir(parents=True, exist_ok=True)
    run_config = out_dir / "bench.yaml"
    run_config.write_text(yaml.safe_dump(raw, sort_keys=False))
    run_dir = out_dir / filter_section["name"]
    overrides = [
        f"trainer.max_steps={steps}",
        f"trainer.seed={seed}",
        f"trainer.output_dir={run_dir}",
        "trainer.save_every=0",
        "evaluation.every_n_steps=0",
        "logging.progress=false",
        *extra,
    ]
    done = run_dir / "metrics.jsonl"
    if reuse and done.exists() and (run_dir / "config.yaml").exists():
        metrics = [json.loads(line) for line in done.read_text().splitlines()]
        same = (run_dir / "config.yaml").read_text() == dump_yaml(load_config(run_config, overrides))
        if same and [m["step"] for m in metrics] == list(range(1, steps + 1)):
            print(f"{filter_section['name']}: reusing the finished run in {run_dir}")
            return metrics
    if done.exists():
        done.unlink()
    env = {**os.environ, "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING")}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "rlengine.cli", "train", str(run_config), *overrides], check=True, env=env
    )
    print(f"{filter_section['name']}: {time.perf_counter() - start:.0f} s wall, run directory {run_dir}")
    return [json.loads(line) for line in done.read_text().splitlines()]


def summarise(metrics: list[dict]) -> dict[str, float]:
    return {key: fn([m.get(key, 0.0) for m in metrics]) for key, _, fn in COLUMNS}


def table(rows: dict[str, dict[str, float]]) -> str:
    names = list(rows)
    lines = ["| metric | " + " | ".join(f"`{n}`" for n in names) + " |", "|---|" + "---|" * len(names)]
    for key, label, _ in COLUMNS:
        lines.append(f"| {label} | " + " | ".join(f"{rows[n][key]:.3g}" for n in names) + " |")
    return "\n".join(lines)


def write_section(path: Path, body: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"{BEGIN}\n{body.rstrip()}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs/arith_balanced.yaml"))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=str(ROOT / "runs/bench_filter"))
    parser.add_argument("--machine", default="2-core CPU, no GPU")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument("--note", default="", help="a paragraph added under the table in BENCHMARKS.md")
    parser.add_argument(
        "--reuse", action="store_true", help="reuse a finished run with the same config, steps, seed"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny model, 1 step, no BENCHMARKS.md update (CI)"
    )
    args = parser.parse_args()
    extra: tuple[str, ...] = ()
    if args.smoke:
        import tempfile

        from rlengine.models import make_tiny_model

        tiny = make_tiny_model(Path(tempfile.mkdtemp()) / "tiny", num_heads=2, seed=0)
        extra = (f"model.name={tiny}", "rollout.max_tokens=8", "trainer.batch_size=2")
        args.steps, args.no_write, args.out_dir = 1, True, tempfile.mkdtemp()

    config = Path(args.config).resolve()
    balanced = yaml.safe_load(config.read_text()).get("filter") or {}
    if balanced.get("name") in (None, "none"):
        raise SystemExit(f"{config}: its filter section must select a filter (e.g. balanced), got {balanced}")
    results = {}
    for section in (balanced, {"name": "none"}):
        metrics = run(config, section, Path(args.out_dir), args.steps, args.seed, args.reuse, extra)
        results[section["name"]] = summarise(metrics)
    body = table(results)
    print(body)

    name = balanced["name"]
    passed = (
        results[name]["effective_ratio"] >= 0.9
        and results["none"]["effective_ratio"] < results[name]["effective_ratio"]
    )
    verdict = "met" if passed else "NOT met"
    print(f"acceptance (effective_ratio: {name} >= 0.9 and none lower): {verdict}")
    if not args.no_write:
        rel = config.relative_to(ROOT) if config.is_relative_to(ROOT) else config
        options = ", ".join(f"{k}={v}" for k, v in balanced.items() if k != "name")
        section = "\n".join(
            [
                "## Filter: effective ratio with `balanced` vs `none`",
                "",
                f"- command: `python benchmarks/filter_effective_ratio.py --config {rel} --steps {args.steps}"
                f" --seed {args.seed}`",
                f"- machine: {args.machine}; date: {datetime.date.today().isoformat()}",
                f"- config: `{rel}` (`{name}`: {options}); the `none` run replaces only the filter section.",
                f"- {args.steps} steps per run; per-step figures from each run's `metrics.jsonl`.",
                "",
                body,
                "",
                f"Acceptance (`{name}` effective_ratio >= 0.9, `none` lower): **{verdict}**.",
                *([f"\n{args.note}"] if args.note else []),
            ]
        )
        write_section(ROOT / "BENCHMARKS.md", section)
        print(f"updated {ROOT / 'BENCHMARKS.md'}")
    return 0 if passed or args.smoke else 1


if __name__ == "__main__":
    sys.exit(main())
