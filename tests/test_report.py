"""``rlengine report``: curves and evaluations of a run directory, as text."""

from __future__ import annotations

import json
from pathlib import Path

from rlengine.cli import main
from rlengine.report import curve, eval_table, sparkline


def make_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    lines = [
        {"step": i + 1, "reward/mean": r, "reward/math_verify/mean": r, "pass_rate/mean": r}
        for i, r in enumerate([0.1, 0.2, 0.4, 0.3])
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    for step, avg in ((0, 0.125), (4, 0.375)):
        summary = {"benchmarks": {"heldout": {"problems": 8, "samples": 1, "avg@1": avg}}, "records": {}}
        (run / "eval" / f"step_{step}.json").write_text(json.dumps(summary))
    return run


def test_sparkline_scales_between_min_and_max() -> None:
    assert sparkline([0.0, 0.5, 1.0]) == "▁▅█"
    assert sparkline([None, 2.0, 2.0]) == " ▁▁"
    assert sparkline([]) == ""


def test_curve_and_eval_table(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert curve(metrics, "reward/mean").split()[1:4] == ["0.100", "->", "0.300"]
    assert curve(metrics, "reward/mean", window=2).split()[1:4] == [
        "0.100",
        "->",
        "0.350",
    ]  # mean of 0.4, 0.3
    table = eval_table(run)
    assert "step 0" in table and "step 4" in table and "12.5%" in table and "37.5%" in table


def test_report_command(tmp_path: Path, capsys) -> None:
    run = make_run(tmp_path)
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "4 steps" in out and "reward/math_verify/mean" in out and "heldout (8)" in out
