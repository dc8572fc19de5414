"""``rlengine eval --compare`` on two result files (no model needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rlengine.eval import ProblemResult, summarize, write_results_json
from rlengine.eval.runner import default_output_dir, is_result


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


def test_default_output_dir_of_a_checkpoint_is_the_runs_eval_dir(tmp_path, monkeypatch) -> None:
    run = tmp_path / "runs" / "exp1"
    model = run / "checkpoints" / "step_40" / "model"
    model.mkdir(parents=True)
    assert default_output_dir(str(model)) == run / "eval" / "step_40"
    monkeypatch.chdir(run / "checkpoints" / "step_40")
    assert default_output_dir("model") == run / "eval" / "step_40"  # relative paths too
    assert default_output_dir(str(tmp_path / "my_model")) == Path("runs") / "eval" / "my_model"
    assert default_output_dir("smollm2-135m-instruct") == Path("runs") / "eval" / "smollm2-135m-instruct"
    # beside the step files of eval during training (eval/step_N.json), without clashing
    write_results_json(result([True]), run / "eval" / "step_40.json", {"step": 40})
    assert is_result(str(run / "eval" / "step_40.json")) and not is_result(str(model))
