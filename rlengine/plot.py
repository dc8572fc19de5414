"""``rlengine plot RUN [RUN ...] --output FILE.png``: one figure comparing runs.

Each run has one colour, named by its directory. Only panels that carry information are drawn
(:func:`build_panels` decides, :func:`plot_runs` draws what it returns):

1. ``reward/mean`` against step (whenever some run logs it);
2. ``reward/mean`` against training time (the sum of ``time/step``, so evaluations are not
   counted), when some run logs ``time/step``;
3. every ``reward/<objective>/mean`` against step (one line style per objective), when some run
   has two or more objectives (with one, it is ``reward/mean`` again);
4. the objective weights against step (``weights/<objective>``, or an older run's
   ``reward_weighting/<objective>``), when some run's weights change during the run (constant
   weights are a flat line: the config already says them);
5. pass@1 of every evaluated benchmark (``eval/step_N.json``, step 0 included) against training
   time (against step when no run logs ``time/step``), when some run has evaluations;
6. the Pareto front of the evaluations of the runs with two or more reward objectives per
   benchmark in their eval files (``objectives`` of ``eval/step_N.json``): the first two (in
   ``reward.functions`` order) at every evaluation, the non-dominated ones joined; drawn only
   when some run has them;
7. for the evaluated runs without two objectives: pass@1 against mean response length (higher and
   shorter are better), a front of accuracy against conciseness.

Reads ``metrics.jsonl`` and ``eval/step_N.json`` only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlengine.algorithms.multi_objective import pareto_front
from rlengine.report import read_metrics

OBJECTIVE_STYLES = ["-", "--", ":", "-."]
COLUMNS = 3
"""Panels per row of the figure."""


@dataclass
class Series:
    """One drawn line or scatter: its legend label, points, colour, line style and kind."""

    label: str
    x: list[float]
    y: list[float]
    colour: str
    style: str = "-"
    kind: str = "line"
    """``line``, ``markers`` (a line with a dot at every point), ``scatter`` or ``front`` (a line
    without a legend entry: the non-dominated points of the scatter before it)."""


@dataclass
class Panel:
    """One axes of the figure: ``name`` identifies it (tests, callers), the rest is drawn."""

    name: str
    title: str
    xlabel: str
    ylabel: str = ""
    series: list[Series] = field(default_factory=list)


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


def objective_names(metrics: list[dict]) -> list[str]:
    """The reward objectives a run logs (``reward/<objective>/mean``), in first-logged order."""
    return [
        k[len("reward/") : -len("/mean")] for k in _keys(metrics, "reward/", "/mean") if k != "reward/mean"
    ]


def weight_keys(metrics: list[dict]) -> list[str]:
    """``weights/<objective>`` keys, or (older runs) ``reward_weighting/<objective>`` of the logged
    objectives; the stage's other ``reward_weighting/...`` metrics are not weights."""
    keys = _keys(metrics, "weights/")
    if keys:
        return keys
    objectives = set(objective_names(metrics))
    return [k for k in _keys(metrics, "reward_weighting/") if k.split("/", 1)[1] in objectives]


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


def _eval_objectives(points: list[dict]) -> list[str]:
    """Objective names in a run's eval files, in ``reward.functions`` order."""
    return list(dict.fromkeys(k for p in points for k in p["objectives"]))


def _front_series(pairs: list[tuple[float, float]], colour: str, name: str, shorter_x: bool) -> list[Series]:
    """A run's evaluations as a scatter, and its non-dominated ones joined (``shorter_x``: a
    smaller x is better)."""
    maximise = [(-x, y) for x, y in pairs] if shorter_x else pairs
    front = sorted(pareto_front(maximise))
    if shorter_x:
        front = sorted((-x, y) for x, y in front)
    return [
        Series(name, [x for x, _ in pairs], [y for _, y in pairs], colour, kind="scatter"),
        Series(f"{name}: front", [x for x, _ in front], [y for _, y in front], colour, kind="front"),
    ]


def build_panels(run_dirs: list[str | Path], colours: list[str] | None = None) -> list[Panel]:
    """The panels worth drawing for ``run_dirs`` (module docstring), with every series' data.

    ``colours`` cycle over the runs (default: matplotlib's colour cycle names ``C0``, ``C1`` ...).
    """
    runs: dict[str, tuple[Path, list[dict]]] = {}
    for d in run_dirs:
        runs[Path(d).resolve().name] = (Path(d), read_metrics(d))
    if len(runs) < len(run_dirs):
        raise ValueError("rlengine plot: two runs have the same directory name; rename one")
    colours = colours or [f"C{i}" for i in range(10)]
    timed = any(m.get("time/step") for _, metrics in runs.values() for m in metrics)
    eval_x = "training seconds" if timed else "step"
    reward_step = Panel("reward_step", "reward/mean", "step")
    reward_time = Panel("reward_time", "reward/mean", "training seconds")
    objectives = Panel("objectives", "reward per objective", "step")
    weights = Panel("weights", "objective weights", "step")
    evals = Panel("evals", "evaluation pass@1", eval_x, "pass@1")
    front = Panel("objective_front", "", "")
    length_front = Panel(
        "length_front",
        "evaluations: pass@1 vs response length (front joined)",
        "mean response tokens (shorter is better)",
        "pass@1",
    )
    show = dict.fromkeys(["objectives", "weights"], False)
    front_axes: tuple[str, str] | None = None
    for i, (name, (run_dir, metrics)) in enumerate(runs.items()):
        colour = colours[i % len(colours)]
        xs, ys = _series(metrics, "reward/mean")
        if ys:
            reward_step.series.append(Series(name, xs, ys, colour))
            if timed:
                reward_time.series.append(Series(name, *_series(metrics, "reward/mean", x="time"), colour))
        names = objective_names(metrics)
        show["objectives"] |= len(names) >= 2
        for j, objective in enumerate(names):
            style = OBJECTIVE_STYLES[j % len(OBJECTIVE_STYLES)]
            xs, ys = _series(metrics, f"reward/{objective}/mean")
            objectives.series.append(Series(f"{name}: {objective}", xs, ys, colour, style))
        for j, key in enumerate(weight_keys(metrics)):
            style = OBJECTIVE_STYLES[j % len(OBJECTIVE_STYLES)]
            xs, ys = _series(metrics, key)
            show["weights"] |= len(set(ys)) > 1
            weights.series.append(Series(f"{name}: {key.split('/', 1)[1]}", xs, ys, colour, style))
        points = eval_points(run_dir)
        seconds = training_seconds(metrics)
        for j, benchmark in enumerate(dict.fromkeys(p["benchmark"] for p in points)):
            mine = [p for p in points if p["benchmark"] == benchmark and p["pass@1"] is not None]
            if not mine:
                continue
            xs = [seconds.get(p["step"], math.nan) if timed else p["step"] for p in mine]
            style = OBJECTIVE_STYLES[j % len(OBJECTIVE_STYLES)]
            evals.series.append(
                Series(f"{name}: {benchmark}", xs, [p["pass@1"] for p in mine], colour, style, "markers")
            )
        eval_objectives = _eval_objectives(points)
        if len(eval_objectives) >= 2:
            front_axes = front_axes or (eval_objectives[0], eval_objectives[1])
            xk, yk = front_axes
            pairs = [
                (p["objectives"][xk], p["objectives"][yk]) for p in points if {xk, yk} <= set(p["objectives"])
            ]
            if pairs:
                front.series += _front_series(pairs, colour, name, shorter_x=False)
        else:
            pairs = [
                (p["length"], p["pass@1"])
                for p in points
                if p["length"] is not None and p["pass@1"] is not None
            ]
            if pairs:
                length_front.series += _front_series(pairs, colour, name, shorter_x=True)
    if front_axes is not None:
        front.title = f"evaluations: {front_axes[0]} vs {front_axes[1]} (Pareto front joined)"
        front.xlabel, front.ylabel = front_axes
    drawn = [reward_step, reward_time]
    drawn += [p for p in (objectives, weights) if show[p.name]]
    drawn += [evals, front, length_front]
    return [p for p in drawn if any(s.y for s in p.series)]


def plot_runs(run_dirs: list[str | Path], output: str | Path) -> Path:
    """Draw the panels of :func:`build_panels` for ``run_dirs`` into ``output`` (PNG, SVG or PDF
    by its suffix)."""
    figure = render(build_panels(run_dirs))
    import matplotlib.pyplot as plt

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        figure.savefig(output, dpi=110)
    finally:
        plt.close(figure)
    return output


def render(panels: list[Panel]) -> Any:
    """A matplotlib figure with one axes per panel, in order (``axes[i].get_title()`` is panel
    i's title), three a row. With no panel, one empty axes says nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(1, min(COLUMNS, len(panels)))
    rows = max(1, math.ceil(len(panels) / columns))
    figure, grid = plt.subplots(rows, columns, figsize=(5.4 * columns, 4.5 * rows), squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax in axes[len(panels) :]:
        ax.remove()
    if not panels:
        axes[0].text(0.5, 0.5, "nothing logged", ha="center", va="center", transform=axes[0].transAxes)
    for ax, panel in zip(axes, panels):
        for s in panel.series:
            if s.kind == "scatter":
                ax.scatter(s.x, s.y, color=s.colour, alpha=0.5, s=18, label=s.label)
            elif s.kind == "front":
                ax.plot(s.x, s.y, color=s.colour, linewidth=1.5)
            else:
                marker = "o" if s.kind == "markers" else None
                ax.plot(s.x, s.y, s.style, marker=marker, color=s.colour, label=s.label)
        ax.set_title(panel.title)
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    figure.tight_layout()
    return figure
