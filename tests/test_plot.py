"""``rlengine plot``: the picture is drawn from run directories, and bad input is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlengine.cli import main
from rlengine.plot import eval_points, plot_runs, training_seconds


def fake_run(root: Path, name: str, objectives: bool) -> Path:
    run = root / name
    (run / "eval").mkdir(parents=True)
    lines = [
        {
            "step": s,
            "time/step": 10.0,
            "reward/mean": 0.1 * s,
            "reward/math_verify/mean": 0.1 * s,
            "reward/format/mean": 0.5,
            "weights/math_verify": 0.5 + 0.01 * s,
            "weights/format": 0.5 - 0.01 * s,
        }
        for s in range(1, 7)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    for step in (0, 3, 6):
        summary = {"pass@1": 0.2 + 0.05 * step, "mean_response_tokens": 30 - step}
        if objectives:
            summary["objectives"] = {"math_verify": 0.2 + 0.05 * step, "format": 0.9 - 0.1 * step}
        data = {"meta": {"step": step}, "benchmarks": {"heldout": summary}}
        (run / "eval" / f"step_{step}.json").write_text(json.dumps(data))
    return run


def test_plot_draws_every_panel(tmp_path) -> None:
    a, b = fake_run(tmp_path, "a", objectives=True), fake_run(tmp_path, "b", objectives=False)
    out = plot_runs([a, b], tmp_path / "pics" / "cmp.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    assert training_seconds([{"step": 1, "time/step": 2.0}, {"step": 2, "time/step": 3.0}]) == {
        0: 0.0,
        1: 2.0,
        2: 5.0,
    }
    points = eval_points(a)
    assert [p["step"] for p in points] == [0, 3, 6] and points[1]["objectives"]["format"] == pytest.approx(
        0.6
    )


def test_plot_cli_names_a_directory_that_is_not_a_run(tmp_path, capsys) -> None:
    run = fake_run(tmp_path, "a", objectives=False)
    assert main(["plot", str(run), "--output", str(tmp_path / "x.svg")]) == 0
    assert (tmp_path / "x.svg").read_text().lstrip().startswith("<?xml")
    assert main(["plot", str(tmp_path), "--output", str(tmp_path / "y.png")]) == 2
    assert "has no metrics.jsonl" in capsys.readouterr().err
