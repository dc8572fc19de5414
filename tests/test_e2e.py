"""End to end on the real stack (Ray + vLLM-CPU pool + DeepSpeed learner + reward pool).

Two runs cover every stage and every path of the step, so CI starts the stack as few times as it
can: a training run with a plug-in estimator and loss from the example, mini-batches and two PPO
epochs, KL and an evaluation; and one run with PCL, the balanced filter with carry-over, replay,
adaptive BAPO and KL that is resumed from its second checkpoint and must continue exactly.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from rlengine.checkpoint import latest_checkpoint
from rlengine.config import load_config
from rlengine.episode import unpack_groups
from rlengine.runlog import REQUIRED_METRICS
from tests.conftest import tiny_run_overrides

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "custom_algorithm" / "algos.py"

PLUGIN = """
def text_length(prompt, completion, answer, metadata):
    # varies across random completions, so groups carry a learning signal
    return float(len(completion) % 5) / 4.0
"""

RECORDING_ALGOS = f'''
"""The example's estimator and loss, recording every call (process id, sizes) in a log file."""
import importlib.util
import os

_spec = importlib.util.spec_from_file_location("example_algos", {str(EXAMPLE)!r})
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)
LOG = os.path.join(os.path.dirname(__file__), "calls.log")


def _record(line):
    with open(LOG, "a") as f:
        f.write(line + "\\n")


def estimator(rewards, group_index, *, lengths, eps):
    _record(f"advantage {{os.getpid()}} {{rewards.numel()}}")
    return example.opo_advantages(rewards, group_index, lengths=lengths, eps=eps)


def loss(logprobs, old_logprobs, advantages, mask, *, lower, upper, dual_clip):
    _record(f"loss {{os.getpid()}} {{int(mask.sum())}} {{'x'.join(map(str, mask.shape))}}")
    return example.kl_cov_loss(logprobs, old_logprobs, advantages, mask, lower=lower, upper=upper, dual_clip=dual_clip)


estimator.group_baseline = True
loss.default_clips = example.kl_cov_loss.default_clips
'''


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def checkpoint_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model" / "model.safetensors"))


def same_state(a: object, b: object, path: str = "") -> list[str]:
    """Where two checkpointed states differ: floats to 1e-4 relative (vLLM's logprobs from two
    engine starts agree to float noise), everything else exactly."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a)} != {sorted(b)}"]
        return [d for k in a for d in same_state(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in same_state(x, y, f"{path}[{i}]")]
    if isinstance(a, torch.Tensor):
        a, b = a.numpy(), b.numpy()
    if isinstance(a, np.ndarray):
        equal = a.shape == b.shape and (
            np.allclose(a, b, rtol=1e-4, atol=1e-5) if a.dtype.kind == "f" else np.array_equal(a, b)
        )
        return [] if equal else [f"{path}: arrays differ"]
    if isinstance(a, float) and isinstance(b, float):
        return [] if math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5) else [f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_training_with_plugin_algorithms_minibatches_kl_and_eval(tiny_model_dir, ray_session, tmp_path) -> None:
    """The run-directory contract and the metric keys; the example's estimator runs in the driver
    once a step and its loss in the learner rank for every micro-batch of 2 mini-batches x 2 PPO
    epochs; the engines hold every new policy (the old-logprob pass agrees with vLLM)."""
    from transformers import AutoModelForCausalLM

    from rlengine.trainer import train

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "my_rewards.py").write_text(PLUGIN)
    (plugins / "recording_algos.py").write_text(RECORDING_ALGOS)
    run = tmp_path / "run"
    cfg = load_config(
        None,
        [
            *tiny_run_overrides(tiny_model_dir, run),
            f"reward.functions=[math_verify,{plugins / 'my_rewards.py'}:text_length]",
            f"algorithm.advantage={plugins / 'recording_algos.py'}:estimator",
            f"algorithm.loss={plugins / 'recording_algos.py'}:loss",
            "algorithm.kl_coef=0.05",
            "learner.mini_batch_size=8",
            "learner.ppo_epochs=2",
            "trainer.max_steps=3",
            "trainer.save_every=1",
            "trainer.keep_last=2",
            "evaluation.every_n_steps=3",
            "evaluation.benchmarks=[gsm8k]",
            "evaluation.limit=3",
            "evaluation.max_tokens=8",
        ],
    )
    assert (cfg.algorithm.clip_low, cfg.algorithm.clip_high) == (0.2, 0.28)  # the plug-in's default clips
    (plugins / "calls.log").unlink(missing_ok=True)  # the config check's trial calls
    history = train(cfg)
    assert [m["step"] for m in history] == [1, 2, 3]

    # run directory contract
    assert (run / "config.yaml").is_file() and any((run / "tensorboard").iterdir())
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    for line in metrics:
        missing = [
            k for k in (*REQUIRED_METRICS, "reward/math_verify/mean", "reward/text_length/mean") if k not in line
        ]
        assert not missing, missing
        assert line["rollouts/generated"] == 16 and line["tokens/generated"] > 0
        assert line["rollout/logprob_diff_mean"] < 1e-3  # engines really got every new policy
        assert line["effective_ratio"] > 0 and line["grad_norm"] > 0
        # learner values are measured, not defaults: entropy of a random 49k-vocab model is large,
        # the constant lr is reported back, the loss is a finite number
        assert line["entropy/mean"] > 1.0 and line["lr"] == 1.0e-3 and math.isfinite(line["loss/policy"])
        assert line["time/update"] > 0 and line["time/old_logprobs"] > 0 and line["time/sync"] > 0
        assert line["time/train"] == pytest.approx(line["time/ref"] + line["time/old_logprobs"] + line["time/update"])
        assert line["sync/bytes"] > 1_000_000 and line["rollout/engine_restarts"] == 0  # 2 layers, a 49k vocab
        assert line["train/stale_fraction"] == 0.0  # ppo_epochs > 1 gives old logprobs, yet no sample is stale
    assert metrics[2]["kl/mean"] > 1e-7  # the policy moved away from the reference

    calls = [line.split() for line in (plugins / "calls.log").read_text().splitlines()]
    assert [(c[0], c[1], int(c[2])) for c in calls if c[0] == "advantage"] == [
        ("advantage", str(os.getpid()), 16)
    ] * 3  # in the driver, once a step, for every response
    losses = [(pid, int(tokens), shape) for kind, pid, *rest in calls if kind == "loss" for tokens, shape in [rest]]
    trial = [c for c in losses if c[2] == "2x3"]  # the registry checks a plug-in once per process
    assert len(trial) == 1 and trial[0][0] != str(os.getpid())  # ... in the learner rank's process
    trained = [c for c in losses if c not in trial]
    assert len(trained) >= 3 * 2 * 2  # 3 steps x 2 mini-batches x 2 epochs
    assert sum(t for _, t, _ in trained) == 2 * sum(m["tokens/generated"] for m in metrics)  # every token, each epoch

    # eval during training: same grader, written to eval/step_N.json and the metrics log
    eval_json = json.loads((run / "eval" / "step_3.json").read_text())
    assert eval_json["benchmarks"]["gsm8k"]["problems"] == 3 and len(eval_json["records"]["gsm8k"]) == 3
    assert metrics[2]["eval/gsm8k/avg@1"] == eval_json["benchmarks"]["gsm8k"]["avg@1"]
    assert "eval/gsm8k/avg@1" not in metrics[0]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_2", "step_3"]  # keep_last=2
    final = latest_checkpoint(run)
    assert final is not None and final.name == "step_3"
    assert AutoModelForCausalLM.from_pretrained(final / "model").config.vocab_size == 49152
    base, initial = checkpoint_tensors(final), AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert any(not torch.equal(base[k], initial[k]) for k in base)  # training changed the weights


def test_every_stage_checkpoints_and_a_resume_continues_exactly(tiny_model_dir, ray_session, tmp_path) -> None:
    """PCL picks the prompts (its value model in a Ray actor), the balanced filter refills through
    it and carries surplus groups over, replay (RECAP) mixes in a past group, adaptive BAPO trains the
    stale tokens, KL is on. Resuming a copy of the run directory from step 2 (``rlengine train
    RUN_DIR``) reproduces step 3: the same prompts, refills, carried and replayed groups, the same
    value-model fit, and the same weights. KL is 0 before the first update and the engines hold
    every new policy."""
    from rlengine.cli import main
    from rlengine.trainer import train

    run = tmp_path / "run"
    overrides = [
        *tiny_run_overrides(tiny_model_dir, run),
        "data.synthetic_num=60",
        "curriculum.name=pcl",
        "curriculum.candidates_factor=3",
        "filter.name=balanced",
        "filter.max_rounds=3",
        "filter.carry_over=true",
        "replay.name=recap",
        "replay.ratio=0.25",
        "replay.store=all",
        "replay.window=1",
        "replay.eval_every=2",
        "replay.sources=[{name: gsm, data: gsm8k_train, limit: 24, share: 0.25, heldout: 4},"
        " {name: sft, kind: supervised, data: gsm8k_train, answer_field: solution, limit: 24, share: 0.5, heldout: 4}]",
        "algorithm.loss=bapo",
        "algorithm.kl_coef=0.05",
        "trainer.max_steps=3",
        "trainer.save_every=1",
    ]
    train(load_config(None, overrides))
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert [m["replay/used"] for m in metrics] == [0.0, 1.0, 1.0]
    for m in metrics:
        rolled_out = m["rollouts/generated"] // 4
        assert m["curriculum/candidates"] == 3 * rolled_out  # k candidates per prompt, refills included
        assert m["curriculum/realised_pass_rate"] == pytest.approx(m["pass_rate/mean"])
        assert m["rollouts/generated"] == 4 * (4 - m["replay/used"]) + m["filter/extra_rollouts"]
        assert m["rollouts/kept"] == 4 * (4 - m["filter/shortfall"])
        assert 0.6 <= m["actor/bapo_low"] <= 0.9 and 1.2 <= m["actor/bapo_high"] <= 3.0
    assert metrics[0]["curriculum/predicted_pass_rate"] == pytest.approx(0.5)  # untrained: every prompt at tau
    assert metrics[1]["curriculum/predicted_pass_rate"] != pytest.approx(0.5)  # fitted after step 1
    # RECAP's other domains: a GSM8K RL group and two reference solutions (NLL) every step, each
    # objective's loss on its own fresh data, λ from the losses once 2W = 2 steps are in
    assert all(m["replay/sft/loss"] > 0 and 0 <= m["replay/gsm/loss"] <= 1 and m["loss/nll"] > 0 for m in metrics)
    assert all(m["replay/gsm/share"] > 0 and m["replay/sft/share"] > 0 for m in metrics)
    assert [m["replay/task/lambda"] for m in metrics[:1]] == [1.0]
    lambdas = [metrics[2][f"replay/{k}/lambda"] for k in ("task", "gsm", "sft")]
    assert sum(lambdas) == pytest.approx(3.0) and any(abs(x - 1.0) > 1e-4 for x in lambdas)
    assert "replay/gsm/heldout_accuracy" in metrics[0] and "replay/sft/heldout_nll" not in metrics[1]
    assert metrics[2]["replay/sft/heldout_nll"] < metrics[0]["replay/sft/heldout_nll"]  # it learns the domain
    for m in metrics[1:]:  # the replayed group: one version old, trained against its behaviour logprobs
        assert m["replay/max_staleness"] >= 1 and m["train/stale_fraction"] >= 0.25
        assert m["actor/stale_ratio_deviation"] > 0  # the policy moved since it was sampled
    assert sum(m["filter/extra_rollouts"] for m in metrics) > 0
    # KL to the reference: exactly 0 before the first update moved the policy, positive after
    assert metrics[0]["kl/mean"] == pytest.approx(0.0, abs=1e-7) and metrics[2]["kl/mean"] > 1e-7
    assert all(m["rollout/logprob_diff_mean"] < 1e-3 for m in metrics)  # engines got every new policy
    state = torch.load(run / "checkpoints/step_3/trainer_state.pt", weights_only=False)
    assert len(unpack_groups(state["stages"]["filter"]["buffer"])) == metrics[-1]["filter/carry_buffer"]
    assert state["stages"]["curriculum"]["value_model"]["fits"] == 3
    assert {k: len(v) for k, v in state["stages"]["replay"]["losses"].items()} == {"task": 2, "gsm": 2, "sft": 2}  # 2W steps kept

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "checkpoints" / "step_3")
    assert main(["train", str(copy), "logging.progress=false"]) == 0
    resumed = read_metrics(copy)
    assert [m["step"] for m in resumed] == [1, 2, 3]
    for key in (
        "rollouts/generated",
        "rollouts/kept",
        "filter/carried_over",
        "filter/carry_buffer",
        "filter/rounds",
        "replay/used",
        "curriculum/candidates",
        "curriculum/realised_pass_rate",
        "reward/mean",
        "tokens/generated",
    ):
        assert resumed[2][key] == metrics[2][key], key
    for key in (
        "curriculum/predicted_pass_rate",
        "curriculum/fit_loss",
        "actor/bapo_low",
        "loss/policy",
        "loss/nll",
        "replay/gsm/loss",
        "replay/sft/loss",
        "replay/sft/heldout_nll",
        "replay/task/lambda",
        "replay/sft/lambda",
    ):
        assert resumed[2][key] == pytest.approx(metrics[2][key], rel=1e-4), key
    state_b = torch.load(copy / "checkpoints/step_3/trainer_state.pt", weights_only=False)
    assert state_b["step"] == 3 and same_state(state_b["stages"], state["stages"]) == []
    weights_a, weights_b = checkpoint_tensors(run / "checkpoints/step_3"), checkpoint_tensors(copy / "checkpoints/step_3")
    assert all(torch.allclose(weights_a[k], weights_b[k], atol=1e-6) for k in weights_a)
