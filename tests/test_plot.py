"""``rlengine plot``: which panels are drawn from run directories, what each holds (the values of
metrics.jsonl and eval/step_N.json), and bad input is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlengine.cli import main
from rlengine.plot import Panel, build_panels, eval_points, plot_runs, render, training_seconds

STEPS = list(range(1, 7))
EVAL_STEPS = (0, 3, 4, 6)


def write_run(root: Path, name: str, lines: list[dict], evals: dict[int, dict]) -> Path:
    """A run directory with ``lines`` as metrics.jsonl and ``evals`` (step -> summary of benchmark
    ``heldout``) as eval/step_N.json."""
    run = root / name
    (run / "eval").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    for step, summary in evals.items():
        data = {"meta": {"step": step}, "benchmarks": {"heldout": summary}}
        (run / "eval" / f"step_{step}.json").write_text(json.dumps(data))
    return run


def multi_objective_run(root: Path, name: str = "multi", moving_weights: bool = True) -> Path:
    """Two objectives (math_verify, format), weights that move (or stay 0.5 / 0.5), evaluations
    with both objectives; step 4's evaluation is dominated by step 3's."""
    lines = [
        {
            "step": s,
            "time/step": 10.0 + s,
            "reward/mean": 0.1 * s,
            "reward/math_verify/mean": 0.15 * s,
            "reward/format/mean": 0.5 - 0.01 * s,
            "weights/math_verify": 0.5 + (0.01 * s if moving_weights else 0.0),
            "weights/format": 0.5 - (0.01 * s if moving_weights else 0.0),
            "reward_weighting/multiplier": 1.5,  # a stage metric, not a weight
        }
        for s in STEPS
    ]
    objectives = {0: (0.2, 0.9), 3: (0.35, 0.6), 4: (0.3, 0.5), 6: (0.5, 0.3)}
    evals = {
        s: {"pass@1": mv, "mean_response_tokens": 30 - s, "objectives": {"math_verify": mv, "format": f}}
        for s, (mv, f) in objectives.items()
    }
    return write_run(root, name, lines, evals)


def single_objective_run(root: Path, name: str = "single") -> Path:
    """One objective (its mean is reward/mean), static weight 1.0, evaluations without objectives;
    step 4's is the shortest, step 6's the most accurate (both on the front), 0 and 3 dominated."""
    lines = [
        {
            "step": s,
            "time/step": 20.0,
            "reward/mean": 0.05 * s,
            "reward/math_verify/mean": 0.05 * s,
            "weights/math_verify": 1.0,
        }
        for s in STEPS
    ]
    evals = {
        0: {"pass@1": 0.2, "mean_response_tokens": 30.0},
        3: {"pass@1": 0.35, "mean_response_tokens": 27.0},
        4: {"pass@1": 0.3, "mean_response_tokens": 20.0},
        6: {"pass@1": 0.5, "mean_response_tokens": 24.0},
    }
    return write_run(root, name, lines, evals)


def metric(run: Path, key: str) -> list[float]:
    return [json.loads(line)[key] for line in (run / "metrics.jsonl").read_text().splitlines()]


def by_name(panels: list[Panel]) -> dict[str, Panel]:
    return {p.name: p for p in panels}


def lines(panel: Panel) -> dict[str, tuple[list[float], list[float]]]:
    return {s.label: (s.x, s.y) for s in panel.series}


def test_a_multi_objective_run_next_to_a_single_objective_one_draws_every_panel_with_their_values(
    tmp_path,
) -> None:
    multi, single = multi_objective_run(tmp_path), single_objective_run(tmp_path)
    panels = by_name(build_panels([multi, single]))
    assert list(panels) == [
        "reward_step",
        "reward_time",
        "objectives",
        "weights",
        "evals",
        "objective_front",
        "length_front",
    ]
    assert lines(panels["reward_step"]) == {
        "multi": (STEPS, metric(multi, "reward/mean")),
        "single": (STEPS, metric(single, "reward/mean")),
    }
    # training seconds: the running sum of time/step (11, 12, ... for multi; 20 each for single)
    assert lines(panels["reward_time"])["multi"] == ([11, 23, 36, 50, 65, 81], metric(multi, "reward/mean"))
    assert lines(panels["reward_time"])["single"][0] == [20.0 * s for s in STEPS]
    assert lines(panels["objectives"]) == {
        "multi: math_verify": (STEPS, metric(multi, "reward/math_verify/mean")),
        "multi: format": (STEPS, metric(multi, "reward/format/mean")),
        "single: math_verify": (STEPS, metric(single, "reward/math_verify/mean")),
    }
    assert [s.style for s in panels["objectives"].series] == ["-", "--", "-"]  # a style per objective
    # only weights: the stage's reward_weighting/multiplier is not one
    assert lines(panels["weights"]) == {
        "multi: math_verify": (STEPS, metric(multi, "weights/math_verify")),
        "multi: format": (STEPS, metric(multi, "weights/format")),
        "single: math_verify": (STEPS, [1.0] * 6),
    }
    # pass@1 at each evaluation, against the training seconds at its step (step 0: 0 s)
    assert lines(panels["evals"]) == {
        "multi: heldout": ([0.0, 36.0, 50.0, 81.0], [0.2, 0.35, 0.3, 0.5]),
        "single: heldout": ([0.0, 60.0, 80.0, 120.0], [0.2, 0.35, 0.3, 0.5]),
    }
    front = panels["objective_front"]  # only the run whose evaluations have two objectives
    assert (front.xlabel, front.ylabel) == ("math_verify", "format")
    assert lines(front) == {
        "multi": ([0.2, 0.35, 0.3, 0.5], [0.9, 0.6, 0.5, 0.3]),
        "multi: front": ([0.2, 0.35, 0.5], [0.9, 0.6, 0.3]),  # step 4's (0.3, 0.5) is dominated
    }
    assert lines(panels["length_front"]) == {
        "single": ([30.0, 27.0, 20.0, 24.0], [0.2, 0.35, 0.3, 0.5]),
        "single: front": ([20.0, 24.0], [0.3, 0.5]),  # shorter is better
    }
    assert [s.colour for s in panels["reward_step"].series] == ["C0", "C1"]  # one colour per run


def test_a_single_objective_run_draws_no_objective_weight_or_objective_front_panel(tmp_path) -> None:
    single = single_objective_run(tmp_path)
    panels = by_name(build_panels([single]))
    assert list(panels) == ["reward_step", "reward_time", "evals", "length_front"]
    assert lines(panels["reward_step"]) == {"single": (STEPS, metric(single, "reward/mean"))}


def test_constant_weights_draw_no_weights_panel_and_runs_without_time_or_evals_fewer(tmp_path) -> None:
    static = multi_objective_run(tmp_path, "static", moving_weights=False)
    assert [p.name for p in build_panels([static])] == [
        "reward_step",
        "reward_time",
        "objectives",
        "evals",
        "objective_front",
    ]
    bare = write_run(tmp_path, "bare", [{"step": s, "reward/mean": 0.1 * s} for s in STEPS], {})
    panels = build_panels([bare])
    assert [p.name for p in panels] == ["reward_step"]  # no time/step, no evaluations
    # an older run's weights: reward_weighting/<objective> (and not the stage's other metrics)
    old = [
        {
            "step": s,
            "reward/mean": 0.1,
            "reward/a/mean": 0.1,
            "reward/b/mean": 0.2,
            "reward_weighting/a": 0.1 * s,
            "reward_weighting/b": 1 - 0.1 * s,
            "reward_weighting/multiplier": 0.5 * s,
        }
        for s in STEPS
    ]
    weights = by_name(build_panels([write_run(tmp_path, "old", old, {})]))["weights"]
    assert list(lines(weights)) == ["old: a", "old: b"]


def test_the_figure_holds_one_axes_per_panel_with_the_panels_values(tmp_path) -> None:
    multi, single = multi_objective_run(tmp_path), single_objective_run(tmp_path)
    panels = build_panels([multi, single])
    figure = render(panels)
    try:
        assert [ax.get_title() for ax in figure.axes] == [p.title for p in panels]
        reward = figure.axes[0]
        drawn = {line.get_label(): list(line.get_ydata()) for line in reward.get_lines()}
        assert drawn == {"multi": metric(multi, "reward/mean"), "single": metric(single, "reward/mean")}
        front = figure.axes[[p.name for p in panels].index("objective_front")]
        assert [list(c.get_offsets()[:, 1]) for c in front.collections] == [[0.9, 0.6, 0.5, 0.3]]
        assert [list(line.get_xdata()) for line in front.get_lines()] == [[0.2, 0.35, 0.5]]
    finally:
        import matplotlib.pyplot as plt

        plt.close(figure)


def test_plot_runs_writes_the_panels_it_builds(tmp_path) -> None:
    """The written picture: a PNG, and in an SVG with text kept as text exactly the panels'
    titles (a single-objective run has no objective or weights panel)."""
    import matplotlib

    out = plot_runs([multi_objective_run(tmp_path), single_objective_run(tmp_path)], tmp_path / "p" / "c.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        svg = plot_runs([single_objective_run(tmp_path / "s")], tmp_path / "single.svg").read_text()
    assert "evaluations: pass@1 vs response length (front joined)" in svg
    assert "reward per objective" not in svg and "objective weights" not in svg
    assert training_seconds([{"step": 1, "time/step": 2.0}, {"step": 2, "time/step": 3.0}]) == {
        0: 0.0,
        1: 2.0,
        2: 5.0,
    }
    points = eval_points(tmp_path / "multi")
    assert [p["step"] for p in points] == [0, 3, 4, 6]
    assert points[1]["objectives"]["format"] == pytest.approx(0.6)


def test_plot_rejects_two_runs_of_the_same_name(tmp_path) -> None:
    a = single_objective_run(tmp_path / "x", "run")
    b = single_objective_run(tmp_path / "y", "run")
    with pytest.raises(ValueError, match="same directory name"):
        build_panels([a, b])


def test_plot_cli_names_a_directory_that_is_not_a_run(tmp_path, capsys) -> None:
    run = single_objective_run(tmp_path)
    assert main(["plot", str(run), "--output", str(tmp_path / "x.svg")]) == 0
    assert (tmp_path / "x.svg").read_text().lstrip().startswith("<?xml")
    assert main(["plot", str(tmp_path), "--output", str(tmp_path / "y.png")]) == 2
    assert "has no metrics.jsonl" in capsys.readouterr().err
