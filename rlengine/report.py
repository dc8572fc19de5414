"""``rlengine report RUN_DIR``: a run's curves and its evaluations, as text in the terminal.

Reads ``metrics.jsonl`` and ``eval/step_N.json`` of a run directory; imports nothing heavy.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

BARS = " ▁▂▃▄▅▆▇█"


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no metrics.jsonl (is it a run directory?)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def sparkline(values: list[float | None]) -> str:
    """One character per value, scaled between the smallest and the largest (missing values: space)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return ""
    low, high = min(finite), max(finite)
    span = high - low or 1.0
    return "".join(
        " " if v is None or not math.isfinite(v) else BARS[1 + round((v - low) / span * (len(BARS) - 2))]
        for v in values
    )


def curve(metrics: list[dict], key: str, window: int = 1) -> str:
    """``key  first -> last  (min .. max)  sparkline`` with an optional running mean over ``window`` steps."""
    values = [m.get(key) for m in metrics]
    if window > 1:
        smoothed = []
        for i in range(len(values)):
            recent = [v for v in values[max(0, i - window + 1) : i + 1] if v is not None]
            smoothed.append(sum(recent) / len(recent) if recent else None)
        values = smoothed
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return f"{key:<28} (no values)"
    return f"{key:<28} {finite[0]:8.3f} -> {finite[-1]:8.3f}  ({min(finite):.3f} .. {max(finite):.3f})  {sparkline(values)}"


def eval_table(run_dir: str | Path) -> str:
    """avg@n of every benchmark at every evaluated step (``eval/step_N.json``)."""
    files = sorted((Path(run_dir) / "eval").glob("step_*.json"), key=lambda p: int(p.stem.split("_")[1]))
    if not files:
        return "no evaluations in eval/ (set evaluation.every_n_steps or evaluation.before_training)"
    rows = {}
    for path in files:
        data = json.loads(path.read_text())
        for bench, summary in data["benchmarks"].items():
            avg = next((v for k, v in summary.items() if k.startswith("avg@")), None)
            rows.setdefault(bench, {})[int(path.stem.split("_")[1])] = (avg, summary.get("problems", 0))
    steps = sorted({s for r in rows.values() for s in r})
    lines = [f"{'benchmark':<24}" + "".join(f"{'step ' + str(s):>12}" for s in steps)]
    for bench, by_step in rows.items():
        cells = [
            f"{100 * by_step[s][0]:11.1f}%" if s in by_step and by_step[s][0] is not None else f"{'-':>12}"
            for s in steps
        ]
        problems = max(p for _, p in by_step.values())
        lines.append(f"{bench + f' ({problems})':<24}" + "".join(cells))
    return "\n".join(lines)


def report(run_dir: str | Path, window: int = 5) -> str:
    metrics = read_metrics(run_dir)
    if not metrics:
        return f"{run_dir}: no steps logged yet"
    objectives = sorted(
        k for k in metrics[-1] if k.startswith("reward/") and k.endswith("/mean") and k != "reward/mean"
    )
    keys = ["reward/mean", *objectives, "pass_rate/mean", "response_length/mean", "entropy/mean", "time/step"]
    lines = [f"{run_dir}: {len(metrics)} steps (curves: running mean over {window} steps)", ""]
    lines += [curve(metrics, key, window) for key in keys]
    lines += ["", "evaluation (avg@n):", eval_table(run_dir)]
    return "\n".join(lines)
