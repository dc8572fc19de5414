"""benchmarks/stage_evidence.py: its statistics, its arms' configs, its report on finished runs
(fast, no training) and its smoke run (slow: one real training run and the untrained model's
pass-rate histogram)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.stage_evidence import TASKS, arm_config, interval, t_quantile, time_to, verdict  # noqa: E402


def test_interval_is_the_student_t_interval_of_the_mean() -> None:
    mean, low, high = interval([1.0, 2.0, 3.0])
    half = 4.303 * 1.0 / math.sqrt(3)  # t(0.975, 2) x sd / sqrt(n)
    assert mean == 2.0 and low == pytest.approx(2.0 - half) and high == pytest.approx(2.0 + half)
    assert math.isnan(interval([0.5])[1])
    assert t_quantile(11) == 2.228 and t_quantile(100) == 1.96 and t_quantile(1) == 12.706


def test_verdict_separates_only_when_the_interval_excludes_zero() -> None:
    assert verdict(0.01, 0.2) == "better" and verdict(-0.2, -0.01) == "worse"
    assert verdict(-0.01, 0.2) == "not separated" and verdict(math.nan, math.nan) == "not separated"
    assert verdict(0.01, 0.2, higher_is_better=False) == "worse"


def test_time_to_target_is_the_first_point_that_reaches_it() -> None:
    points = [(0.0, 0.1), (40.0, 0.29), (80.0, 0.3), (120.0, 0.2)]
    assert time_to(points, 0.3) == 80.0 and time_to(points, 0.31) is None


def test_arms_replace_stage_sections_and_keep_the_configs_own() -> None:
    curriculum = TASKS["curriculum"]
    uniform = arm_config(curriculum, "uniform")
    assert uniform["curriculum"] == {"name": "uniform"} and uniform["filter"] == {"name": "none"}
    assert uniform["data"]["synthetic_max_digits"] == 4  # the task's wide difficulty spread
    pcl_balanced = arm_config(curriculum, "pcl_balanced")
    assert pcl_balanced["curriculum"]["name"] == "pcl" and pcl_balanced["filter"]["name"] == "balanced"
    assert pcl_balanced["curriculum"]["value_model"]["layers"] == 8
    assert arm_config(curriculum, "pcl_balanced", smoke=True)["curriculum"]["value_model"]["layers"] is None
    off = arm_config(TASKS["off_policy"], "decoupled")
    assert (
        off["rollout"]["mode"] == "one_step_off_policy" and off["rollout"]["n"] == 8
    )  # merged, not replaced
    assert off["algorithm"] == {"preset": "grpo", "kl_coef": 0.0, "off_policy_correction": "decoupled"}
    assert arm_config(TASKS["replay"], "recap")["replay"]["sources"]  # the config's own recap section


def fake_run(run_dir: Path, accuracy: dict[int, float], objectives: dict[int, dict] | None = None) -> None:
    """A finished run: 8 steps of 10 s, held-out evaluations at the given steps."""
    (run_dir / "eval").mkdir(parents=True)
    lines = [
        {
            "step": i + 1,
            "time/step": 10.0,
            "reward/mean": 0.2,
            "rollouts/generated": 16,
            "effective_ratio": 0.5,
        }
        for i in range(8)
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    for step, acc in accuracy.items():
        summary = {"pass@1": acc, "mean_response_tokens": 9.0, "objectives": (objectives or {}).get(step, {})}
        data = {"meta": {"step": step}, "benchmarks": {"heldout": summary}}
        (run_dir / "eval" / f"step_{step}.json").write_text(json.dumps(data))
    (run_dir / ".finished").write_text("")


def report(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "stage_evidence.py"),
            "--report",
            "--no-write",
            "--out-dir",
            str(out),
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RLENGINE_REPORT_ONLY": "1"},
    )


def rows(stdout: str) -> dict[str, list[str]]:
    """The first table's rows by arm."""
    lines = stdout[stdout.index("| arm | seeds |") :].split("\n\n")[0].splitlines()[2:]
    return {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in lines}


def test_report_on_finished_runs_gives_intervals_verdicts_and_the_missing_runs(tmp_path: Path) -> None:
    task = tmp_path / "curriculum"
    for seed, final in enumerate([0.30, 0.32, 0.34]):
        fake_run(task / "uniform" / f"seed{seed}", {0: 0.1, 4: 0.2, 8: final})
    for seed, final in enumerate([0.40, 0.41, 0.43]):
        fake_run(task / "balanced" / f"seed{seed}", {0: 0.1, 4: 0.35, 8: final})
    for seed, final in enumerate([0.30, 0.36]):  # seed 2 missing
        fake_run(task / "pcl" / f"seed{seed}", {0: 0.1, 4: 0.2, 8: final})
    (task / "pcl" / "seed2").mkdir()  # started, never finished: missing
    out = report(tmp_path, "--task", "curriculum", "--arms", "uniform,balanced,pcl", "--seeds", "3")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "missing runs (1): pcl/seed2" in out.stderr
    table = rows(out.stdout)
    assert table["uniform"][:4] == ["3", "8.0", "0.320 [0.270, 0.370]", "—"]  # 0.32 +- 4.303 x 0.02 / sqrt 3
    # balanced - uniform per seed: +0.10, +0.09, +0.09 -> mean 0.0933, half 4.303 x 0.00577 / sqrt 3
    assert table["balanced"][3] == "+0.093 [+0.079, +0.108], better"
    # target: the lowest final of uniform's seeds (0.30), reached at 80 s by uniform, 40 s by balanced
    assert table["balanced"][4:] == ["40 [40, 40]", "0.50 [0.50, 0.50]"]
    assert table["pcl"][0] == "2" and table["pcl"][3].endswith("not separated")
    assert "Untrained model's pass rates: not measured yet." in out.stdout


def test_weighting_report_measures_the_hypervolume_above_the_shared_nadir(tmp_path: Path) -> None:
    task = tmp_path / "weighting"
    for arm, gain in (("gdpo", 0.0), ("gradient", 0.1)):
        for seed in range(2):
            end = {"math_verify": 0.3 + gain + 0.01 * seed, "format": 0.5 + gain}
            fake_run(
                task / arm / f"seed{seed}", {0: 0.1, 8: 0.2}, {0: {"math_verify": 0.1, "format": 0.3}, 8: end}
            )
    out = report(tmp_path, "--task", "weighting", "--arms", "gdpo,gradient", "--seeds", "2")
    assert out.returncode == 0, out.stderr[-3000:]
    volumes = out.stdout.split("every evaluation of every run:\n\n")[1]
    table = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in volumes.splitlines()[2:4]
    }
    # nadir (0.1, 0.3); gdpo seed 0: 0.2 x 0.2 = 0.04, seed 1: 0.21 x 0.2 = 0.042; gradient: 0.3 x 0.3, 0.31 x 0.3
    assert table["gdpo"][0] == "0.0410 [0.0283, 0.0537]"
    assert table["gradient"][0].startswith("0.0915") and table["gradient"][1].endswith("better")


def test_a_report_without_the_baseline_says_so(tmp_path: Path) -> None:
    fake_run(tmp_path / "replay" / "recap" / "seed0", {0: 0.1, 8: 0.2})
    out = report(tmp_path, "--task", "replay", "--seeds", "1")
    assert out.returncode == 1 and "no finished run of the baseline none" in out.stderr
    assert "none/seed0" in out.stderr and "uniform/seed0" in out.stderr


@pytest.mark.slow
def test_smoke_trains_the_baseline_and_measures_the_untrained_pass_rates(tmp_path: Path) -> None:
    before = (ROOT / "BENCHMARKS.md").read_text()
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "stage_evidence.py"), "--task", "curriculum", "--smoke",
         "--seeds", "1", "--arms", "uniform", "--out-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "RAY_AUTH_MODE": "disabled", "VLLM_LOGGING_LEVEL": "ERROR"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = tmp_path / "curriculum" / "uniform" / "seed0"
    assert {p.name for p in run_dir.iterdir()} == {
        ".finished",
        "metrics.jsonl",
        "config.yaml",
        "eval",
    }  # slimmed
    assert all("records" not in json.loads(p.read_text()) for p in (run_dir / "eval").iterdir())
    assert rows(out.stdout)["uniform"][:2] == ["1", "1.0"]  # one seed, one step
    assert "Untrained model, 4 training prompts × 8 samples" in out.stdout
    assert (ROOT / "BENCHMARKS.md").read_text() == before


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_arm_of_the_gpu_recipe_passes_config_check(task: str) -> None:
    """configs/gpu/evidence_<task>.yaml lists each arm's overrides in its header; each must load."""
    from rlengine.config import load_config

    path = ROOT / "configs" / "gpu" / f"evidence_{task}.yaml"
    arms = {}
    for line in path.read_text().splitlines():
        if line.startswith("#   ") and ":" in line and ("..." in line or "rlengine train" in line):
            arm, rest = line[4:].split(":", 1)
            arms[arm.strip()] = [w for w in rest.split("(")[0].split() if "=" in w]
    assert set(arms) == set(TASKS[task].arms), arms
    for arm, overrides in arms.items():
        cfg = load_config(path, overrides)
        assert cfg.model.name == "Qwen/Qwen2.5-Math-1.5B", arm
