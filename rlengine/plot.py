"""``rlengine plot RUN [RUN ...] --output FILE.png``: one figure comparing runs.

Panels (each run one colour, named by its directory):

1. ``reward/mean`` against step, and 2. against training time (the sum of ``time/step``, so
   evaluations are not counted);
3. every ``reward/<objective>/mean`` against step (one line style per objective);
4. the objective weights against step (``weights/<objective>``, or the static stage's
   ``reward_weighting/<objective>``);
5. pass@1 of every evaluated benchmark (``eval/step_N.json``, step 0 included) against training time;
6. the Pareto front of the evaluations: with two or more reward objectives per benchmark in the
   eval files (``objectives`` of ``eval/step_N.json``), the first two (in ``reward.functions`` order) at every evaluation, the
   non-dominated ones joined; otherwise pass@1 against mean response length (higher and shorter
   are better), which is a front of accuracy against conciseness.

Reads ``metrics.jsonl`` and ``eval/step_N.json`` only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from rlengine.algorithms.multi_objective import pareto_front
from rlengine.report import read_metrics

OBJECTIVE_STYLES = ["-", "--", ":", "-."]


def _series(metrics: list[dict], key: str, x: str = "step") -> tuple[list[float], list[float]]:
    """(x, value) of every finite ``key``; x is the step or, with ``x="time"``, the training seconds."""
    seconds = training_seconds(metrics)
    xs, ys = [], []
    for m in metrics:
        value = m.get(key)
        if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        step = m.get("step", 0)
        xs.append(step if x == "step" else seconds[step])
        ys.append(float(value))
    return xs, ys


def training_seconds(metrics: list[dict]) -> dict[int, float]:
    """Step -> training seconds at its end (sum of ``time/step``); step 0 -> 0."""
    out, total = {0: 0.0}, 0.0
    for m in metrics:
        total += m.get("time/step") or 0.0
        out[m.get("step", 0)] = total
    return out


def _keys(metrics: list[dict], prefix: str, suffix: str = "") -> list[str]:
    keys = dict.fromkeys(k for m in metrics for k in m if k.startswith(prefix) and k.endswith(suffix))
    return list(keys)


def eval_points(run_dir: Path) -> list[dict]:
    """Per evaluation file: ``{"step", "benchmark", "pass@1", "length", "objectives": {...}}``."""
    points = []
    for path in sorted((run_dir / "eval").glob("step_*.json"), key=lambda p: int(p.stem.split("_")[1])):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for name, summary in (data.get("benchmarks") or {}).items():
            points.append(
                {
                    "step": data.get("meta", {}).get("step", int(path.stem.split("_")[1])),
                    "benchmark": name,
                    "pass@1": summary.get("pass@1"),
                    "length": summary.get("mean_response_tokens"),
                    "objectives": summary.get("objectives") or {},
                }
            )
    return points


def plot_runs(run_dirs: list[str | Path], output: str | Path) -> Path:
    """Draw the six panels for ``run_dirs`` into ``output`` (PNG, SVG or PDF by its suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {Path(d).resolve().name: (Path(d), read_metrics(d)) for d in run_dirs}
    if len(runs) < len(run_dirs):
        raise ValueError("rlengine plot: two runs have the same directory name; rename one")
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    (reward_step, reward_time, objectives), (weights, evals, front) = axes
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, (run_dir, metrics)) in enumerate(runs.items()):
        colour = colours[i % len(colours)]
        reward_step.plot(*_series(metrics, "reward/mean"), color=colour, label=name)
        reward_time.plot(*_series(metrics, "reward/mean", x="time"), color=colour, label=name)
        for j, key in enumerate(k for k in _keys(metrics, "reward/", "/mean") if k != "reward/mean"):
            style = OBJECTIVE_STYLES[j % len(OBJECTIVE_STYLES)]
            objectives.plot(*_series(metrics, key), style, color=colour, label=f"{name}: {key[7:-5]}")
        weight_keys = _keys(metrics, "weights/") or _keys(metrics, "reward_weighting/")
        for j, key in enumerate(weight_keys):
            style = OBJECTIVE_STYLES[j % len(OBJECTIVE_STYLES)]
            weights.plot(*_series(metrics, key), style, color=colour, label=f"{name}: {key.split('/', 1)[1]}")
        points = eval_points(run_dir)
        seconds = training_seconds(metrics)
        for j, benchmark in enumerate(dict.fromkeys(p["benchmark"] for p in points)):
            mine = [p for p in points if p["benchmark"] == benchmark and p["pass@1"] is not None]
            xs = [seconds.get(p["step"], math.nan) for p in mine]
            style = OBJECTIVE_STYLES[j % len(OBJECTIVE_STYLES)]
            label = f"{name}: {benchmark}"
            evals.plot(xs, [p["pass@1"] for p in mine], style, marker="o", color=colour, label=label)
        _draw_front(front, points, colour, name)
    titles = [
        (reward_step, "reward/mean", "step"),
        (reward_time, "reward/mean", "training seconds"),
        (objectives, "reward per objective", "step"),
        (weights, "objective weights", "step"),
        (evals, "evaluation pass@1", "training seconds"),
    ]
    for ax, title, xlabel in titles:
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
    front.grid(alpha=0.3)
    if front.get_legend_handles_labels()[0]:
        front.legend(fontsize=7)
    fig.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output


def _draw_front(ax, points: list[dict], colour: str, name: str) -> None:
    """Pareto front of one run's evaluations (see the module docstring for the axes)."""
    objective_names = list(
        dict.fromkeys(k for p in points for k in p["objectives"])
    )  # reward.functions order
    if len(objective_names) >= 2:
        xk, yk = objective_names[:2]
        pairs = [
            (p["objectives"][xk], p["objectives"][yk]) for p in points if {xk, yk} <= set(p["objectives"])
        ]
        ax.set_title(f"evaluations: {xk} vs {yk} (Pareto front joined)")
        ax.set_xlabel(xk)
        ax.set_ylabel(yk)
        maximise = pairs
    else:
        pairs = [
            (p["length"], p["pass@1"]) for p in points if p["length"] is not None and p["pass@1"] is not None
        ]
        ax.set_title("evaluations: pass@1 vs response length (front joined)")
        ax.set_xlabel("mean response tokens (shorter is better)")
        ax.set_ylabel("pass@1")
        maximise = [(-x, y) for x, y in pairs]
    if not pairs:
        return
    ax.scatter([x for x, _ in pairs], [y for _, y in pairs], color=colour, alpha=0.5, s=18, label=name)
    front = sorted(pareto_front(maximise))
    if maximise is not pairs:
        front = [(-x, y) for x, y in front]
    front.sort()
    ax.plot([x for x, _ in front], [y for _, y in front], color=colour, linewidth=1.5)
