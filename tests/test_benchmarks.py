"""Every benchmark script still runs, at its smallest size (``--smoke``: tiny model, no timing
assertions, BENCHMARKS.md untouched). Speed itself is measured by the scripts, not by tests."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = [
    "learner_throughput.py",
    "step_anatomy.py",
    "rollout_throughput.py",
    "filter_effective_ratio.py",
    "vs_trl.py",
    "pcl_selection.py",
    "curriculum_efficiency.py",
]

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
    assert "|" in out.stdout  # it printed its table
    assert (ROOT / "BENCHMARKS.md").read_text() == before
