"""``rlengine eval --compare`` on two result files (no model needed)."""

from __future__ import annotations

import subprocess
import sys

from rlengine.eval import ProblemResult, summarize, write_results_json


def result(correct: list[bool]) -> dict:
    records = [
        ProblemResult(
            id=f"p{i}",
            problem="q",
            answer="1",
            completions=[
                {
                    "text": "\\boxed{1}" if ok else "\\boxed{2}",
                    "extracted": "1" if ok else "2",
                    "correct": ok,
                    "num_tokens": 5,
                    "finish_reason": "stop",
                    "timed_out": False,
                }
            ],
        )
        for i, ok in enumerate(correct)
    ]
    return {"benchmarks": {"gsm8k": summarize(records)}, "records": {"gsm8k": records}}


def run_compare(a, b) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "rlengine.cli", "eval", "--compare", str(a), str(b)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_compare_reports_delta_and_significance(tmp_path) -> None:
    weak, strong = tmp_path / "step_10.json", tmp_path / "step_100.json"
    write_results_json(result([i % 5 == 0 for i in range(60)]), weak, {"step": 10})
    write_results_json(result([i % 5 != 0 for i in range(60)]), strong, {"step": 100})
    out = run_compare(weak, strong)
    row = next(line for line in out.splitlines() if line.startswith("gsm8k") and "avg@1" in line)
    cells = row.split()
    assert cells[3] == "20.0" and cells[4] == "80.0" and cells[5] == "+60.0" and cells[-1] == "yes"

    same = run_compare(weak, weak)
    row = next(line for line in same.splitlines() if line.startswith("gsm8k") and "avg@1" in line)
    assert row.split()[5] == "+0.0" and row.split()[-1] == "no"
