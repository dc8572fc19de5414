"""Every benchmark script still runs, at its smallest size (``--smoke``: tiny model, no timing
assertions, BENCHMARKS.md untouched). Speed itself is measured by the scripts, not by tests."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GRADING_SMOKE_CLASSES = {  # the answer classes of every 40th pair of the grading corpus (its --smoke)
    json.loads(line)["class"]
    for line in (ROOT / "tests/fixtures/grading_corpus.jsonl").read_text().splitlines()[::40]
}
SMOKE_TABLES = {
    # script: (column naming the rows, the rows it prints, columns that must be numbers > 0);
    # every number in the table must be finite and >= 0
    "learner_throughput.py": ("impl", {"rlengine", "plain"}, ["s/step (median)", "tokens/s", "peak GiB"]),
    "step_anatomy.py": (
        "part",
        {"time/rollout", "time/reward", "time/stages", "time/train", "time/sync", "overhead", "time/step"},
        [],
    ),
    "rollout_throughput.py": ("implementation", {"pool", "direct"}, ["tokens/s (median)", "vs direct vLLM"]),
    "rollout_balance.py": (
        "balance",
        {"even", "tokens", "throughput"},
        ["seconds per request (median)", "engine imbalance", "speed-up vs even"],
    ),
    "vs_trl.py": ("trainer", {"trl", "rlengine"}, ["s/step (median, after step 1)"]),
    "pcl_selection.py": (
        "method",
        {"rollout", "pcl (cold)", "pcl (cached)", "random choice"},
        ["mean \\|p̂ − 0.5\\| of the chosen"],
    ),
    "grading_accuracy.py": ("class", {*GRADING_SMOKE_CLASSES, "stress", "all"}, ["pairs"]),
    "pcl_value_model.py": (
        "value model",
        {"head, linear, 1 layers", "full, mlp, 1 layers"},
        ["MB added (peak RSS)"],
    ),
}
SCRIPTS = list(SMOKE_TABLES)


def number(cell: str) -> float | None:
    """``"1,234"``, ``"0.29 ms"``, ``"8.8 %"``, ``"1.38x"`` -> the number; None for ``"-"`` or text."""
    try:
        return float(
            cell.replace(",", "").removesuffix("x").removesuffix("%").removesuffix("s").removesuffix("m")
        )
    except ValueError:
        return None


def first_table(stdout: str) -> tuple[list[str], list[list[str]]]:
    """The header and body rows of the first markdown table a script printed."""
    lines = stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), len(lines))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    assert end - start >= 3, stdout[-2000:]
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines[start:end]]
    return cells[0], cells[2:]


pytestmark = pytest.mark.slow


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_runs_at_smallest_size(script: str) -> None:
    if script == "vs_trl.py" and importlib.util.find_spec("trl") is None:
        pytest.skip("TRL is not installed (pip install -e '.[bench]')")
    before = (ROOT / "BENCHMARKS.md").read_text()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "VLLM_LOGGING_LEVEL": "ERROR"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    label, rows, positive = SMOKE_TABLES[script]
    header, body = first_table(out.stdout)
    assert all(len(row) == len(header) for row in body), (header, body)
    table = {row[header.index(label)]: dict(zip(header, row)) for row in body}
    assert set(table) == rows, table
    for name, row in table.items():
        for column in positive:
            if name != "random choice" or column.startswith("mean"):
                value = number(row[column])
                assert value is not None and value > 0, (script, name, column, row[column])
        numbers = [number(c) for c in row.values()]
        assert all(math.isfinite(x) and x >= 0 for x in numbers if x is not None), (script, row)
    assert (ROOT / "BENCHMARKS.md").read_text() == before


def report_rows(script: str, *args: str) -> dict[str, list[str]]:
    """Run a benchmark script on finished runs (``--reuse --no-write``); its table rows by first cell.

    ``RLENGINE_REPORT_ONLY=1`` makes a run the script would have to train an error (benchmarks/common.py),
    so a faked run the script does not find fails at once instead of training."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--reuse", "--no-write", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RLENGINE_REPORT_ONLY": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("| ")][1:]  # past the header
    return {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in lines}


def fake_run(
    run_dir: Path, rewards: list[float], accuracy: dict[int, float], distances: list[float] | None = None
) -> None:
    (run_dir / "eval").mkdir(parents=True)
    lines = [{"step": i + 1, "time/step": 10.0, "reward/mean": r} for i, r in enumerate(rewards)]
    for line, distance in zip(lines, distances or []):
        line["pass_rate/distance_from_half"] = distance
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    for step, acc in accuracy.items():
        data = {
            "meta": {"step": step},
            "benchmarks": {"heldout": {"pass@1": acc, "mean_response_tokens": 9.0}},
        }
        (run_dir / "eval" / f"step_{step}.json").write_text(json.dumps(data))


def test_curriculum_efficiency_reports_time_to_plain_grpos_best(tmp_path) -> None:
    """The report of benchmarks/curriculum_efficiency.py on finished runs (``--reuse``): the
    training itself is the trainer's, covered by the end-to-end tests."""
    fake_run(tmp_path / "uniform", [0.1, 0.2, 0.3, 0.3], {0: 0.1, 2: 0.2, 4: 0.4}, [0.4, 0.4, 0.4, 0.35])
    fake_run(tmp_path / "balanced", [0.3, 0.3, 0.3], {0: 0.1, 3: 0.3}, [0.3, 0.2, 0.1])
    fake_run(
        tmp_path / "pcl", [0.2, 0.4, 0.5, 0.1, 0.2], {0: 0.1, 2: 0.45, 4: 0.3}, [0.4, 0.3, 0.2, 0.1, 0.2]
    )
    rows = report_rows("curriculum_efficiency.py", "--out-dir", str(tmp_path))
    # plain GRPO's best held-out is 0.4 (reached at 40 s); its best 3-step mean reward is 0.2667 (at 40 s);
    # the prompts it trained on after 3 warm-up steps were 0.35 from a pass rate of 1/2
    assert rows["uniform"][3:] == ["0.400", "40", "40", "0.350"]
    # balanced: every 3-step mean reward is 0.3 >= 0.2667 from step 1 on; held-out never reaches 0.4;
    # no step after the warm-up
    assert rows["balanced"][2:] == ["0.100 → 0.300", "0.300", "not reached", "10", "-"]
    assert rows["pcl"][2:] == ["0.100 → 0.300", "0.450", "20", "20", "0.150"]  # mean of steps 4 and 5


def fake_weighting_run(
    run_dir: Path, evals: dict[int, tuple[float, float, float]], weights: list[float]
) -> None:
    names = ["math_verify", "conciseness", "format"]
    (run_dir / "eval").mkdir(parents=True)
    lines = [
        {
            "step": step,
            "time/step": 10.0,
            "time/reward_weighting": 2.0,
            **{f"reward/{k}/mean": 0.5 for k in names},
            **{f"weights/{k}": w for k, w in zip(names, weights)},
        }
        for step in (1, 2, 3, 4)
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    for step, point in evals.items():
        summary = {"pass@1": point[0], "mean_response_tokens": 40.0, "objectives": dict(zip(names, point))}
        data = {"meta": {"step": step}, "benchmarks": {"heldout": summary}}
        (run_dir / "eval" / f"step_{step}.json").write_text(json.dumps(data))


def test_reward_weighting_report_on_finished_runs(tmp_path) -> None:
    """The report of benchmarks/reward_weighting.py on finished runs: hypervolume of each run's
    evaluations above the nadir of all runs' evaluations, last evaluation, final weights, stage time."""
    start = (0.1, 0.2, 0.3)
    fake_weighting_run(tmp_path / "static", {0: start, 4: (0.2, 0.3, 0.3)}, [1.0, 1.0, 1.0])
    # two boxes above the start: 0.1*0.2*0.1 + 0.2*0.1*0.05 - their overlap 0.1*0.1*0.05 = 0.0025
    fake_weighting_run(
        tmp_path / "hypervolume", {0: start, 2: (0.2, 0.4, 0.4), 4: (0.3, 0.3, 0.35)}, [1, 1, 1]
    )
    fake_weighting_run(tmp_path / "gradient", {0: start, 4: (0.3, 0.4, 0.5)}, [0.5, 0.2, 0.3])  # 0.2^3
    rows = report_rows("reward_weighting.py", "--out-dir", str(tmp_path))
    assert rows["static"] == [
        "4",
        "40",
        "0.200",
        "0.300",
        "0.300",
        "40.0",
        "0.00000",
        "1.00 / 1.00 / 1.00",
        "8",
    ]
    assert rows["hypervolume"][2:7] == ["0.300", "0.300", "0.350", "40.0", "0.00250"]
    assert rows["gradient"][6:] == ["0.00800", "0.50 / 0.20 / 0.30", "8"]
    assert rows["step 0 (all runs)"][2:5] == ["0.100", "0.200", "0.300"]
    assert rows["reference (nadir)"][2:5] == ["0.100", "0.200", "0.300"]  # the worst of every evaluation


def test_replay_report_on_finished_runs(tmp_path) -> None:
    """The report of benchmarks/replay.py on finished runs: responses rolled out, the time to reach
    plain training's final reward, held-out accuracy and the replayed tokens' ratio deviation."""
    for name, rewards, generated in (
        ("none", [0.1, 0.2, 0.3, 0.4], 32),
        ("uniform", [0.1, 0.3, 0.3, 0.3], 24),
        ("recent", [0.2, 0.3, 0.4, 0.5], 24),
    ):
        fake_run(tmp_path / name, rewards, {0: 0.1, 4: 0.2})
        lines = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        for i, m in enumerate(lines):
            m.update(
                {"rollouts/generated": generated if i else 32, "actor/bapo_low": 0.6, "actor/bapo_high": 1.2}
            )
            if name != "none" and i:
                m["actor/stale_ratio_deviation"] = 0.01 * i
        (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    rows = report_rows("replay.py", "--steps", "4", "--out-dir", str(tmp_path))
    # none's final 3-step mean reward is 0.3 (steps 2-4), first reached at its own step 4 (40 s)
    assert rows["none"] == ["4", "40", "10.0", "128", "0.300", "40", "0.100 → 0.200", "—", "0.60 / 1.20"]
    # uniform's 3-step means: 0.1, 0.2, 0.233, 0.3 -> 40 s; recent's: 0.2, 0.25, 0.3 at step 3 -> 30 s
    assert rows["uniform"][3:7] == ["104", "0.300", "40", "0.100 → 0.200"]
    assert rows["recent"][5] == "30" and rows["recent"][7] == "0.0200"
    assert set(rows) == {"none", "uniform", "recent"}


def test_filter_effective_ratio_table_from_run_metrics() -> None:
    """benchmarks/filter_effective_ratio.py's summary of two runs' metrics (its trainings are the
    trainer's own, covered by the combined real-stack run in test_e2e.py)."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.filter_effective_ratio import summarise, table

    balanced = [
        {"effective_ratio": 1.0, "filter/rounds": 2, "time/step": 30.0, "rollouts/generated": 48},
        {"effective_ratio": 0.75, "filter/rounds": 3, "time/step": 50.0, "rollouts/generated": 64},
        {"effective_ratio": 1.0, "filter/rounds": 1, "time/step": 20.0, "rollouts/generated": 32},
    ]
    none = [{"effective_ratio": 0.5, "time/step": 10.0}, {"effective_ratio": 0.25, "time/step": 12.0}]
    rows = {"balanced": summarise(balanced), "none": summarise(none)}
    assert rows["balanced"]["effective_ratio"] == 1.0 and rows["none"]["effective_ratio"] == 0.375  # medians
    assert rows["balanced"]["filter/rounds"] == 2.0 and rows["none"]["filter/rounds"] == 0.0  # missing -> 0
    assert rows["balanced"]["rollouts/generated"] == 48.0 and rows["balanced"]["time/step"] == 30.0
    lines = table(rows).splitlines()
    assert lines[0] == "| metric | `balanced` | `none` |"
    assert "| median effective_ratio | 1 | 0.375 |" in lines
