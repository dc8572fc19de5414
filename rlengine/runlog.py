"""Run logging: ``metrics.jsonl`` (one object per step), TensorBoard, optional W&B, console bar."""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

REQUIRED_METRICS = (
    "step",
    "reward/mean",
    "pass_rate/mean",
    "effective_ratio",
    "rollouts/generated",
    "rollouts/kept",
    "tokens/generated",
    "time/step",
    "time/rollout",
    "time/reward",
    "time/train",
    "time/ref",
    "time/old_logprobs",
    "time/update",
    "time/sync",
    "time/stages",
    "time/reward_weighting",
    "loss/policy",
    "kl/mean",
    "entropy/mean",
    "grad_norm",
    "lr",
)
"""Keys every line of metrics.jsonl carries (plus ``reward/<objective>/mean`` per objective)."""

LEARNER_METRICS = ("loss/policy", "kl/mean", "entropy/mean", "grad_norm", "lr")
"""Required keys that come from the learner; null (NaN) in a step whose update was skipped."""


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLogger:
    """Writes metrics to every configured sink."""

    def __init__(
        self,
        run_dir: Path,
        *,
        tensorboard: bool,
        wandb: bool,
        wandb_project: str,
        run_name: str,
        config: dict,
        resume_step: int = 0,
    ) -> None:
        self.path = run_dir / "metrics.jsonl"
        if resume_step and self.path.exists():
            # drop lines from steps after the checkpoint we resume from
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line and json.loads(line)["step"] <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))
        elif not resume_step:
            self.path.unlink(missing_ok=True)  # a fresh run starts a fresh log
        self.file = open(self.path, "a", buffering=1)  # noqa: SIM115 - closed in close()
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(
                log_dir=str(run_dir / "tensorboard"), purge_step=resume_step + 1 if resume_step else None
            )
        self.wandb = None
        if wandb:
            try:
                import wandb as wandb_module
            except ImportError:
                raise RuntimeError(
                    "logging.wandb is true but wandb is not installed: pip install wandb"
                ) from None
            self.wandb = wandb_module.init(
                project=wandb_project, name=run_name, config=config, resume="allow"
            )

    def log(self, metrics: dict[str, Any], step: int) -> None:
        """One step's line in metrics.jsonl, and its scalars in TensorBoard / W&B."""
        self.file.write(json.dumps({k: _clean(v) for k, v in metrics.items()}) + "\n")
        self.log_scalars(metrics, step)

    def log_scalars(self, metrics: dict[str, Any], step: int) -> None:
        """Scalars to TensorBoard / W&B only (e.g. the evaluation before the first step)."""
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k != "step"}
        if self.tb is not None:
            for key, value in scalars.items():
                self.tb.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def histogram(self, tag: str, values: list[float], step: int) -> None:
        if self.tb is not None and values:
            import numpy as np

            self.tb.add_histogram(tag, np.asarray(values, dtype=float), step, bins=np.linspace(0.0, 1.0, 11))

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def health_problem(
    history: list[dict[str, Any]],
    *,
    max_skipped_steps: int,
    max_failure_fraction: float,
    reward_messages: list[str],
) -> str | None:
    """Why the run should stop now, or None. ``history``: the metrics of the steps so far, newest last.

    - ``max_skipped_steps`` consecutive steps whose every update was skipped (non-finite loss or
      gradient: ``learner/skipped_steps`` = 1);
    - a step in which more than ``max_failure_fraction`` of the reward calls failed.
    """
    last = history[-1]
    failed = last.get("reward/failure_fraction", 0.0)
    if failed > max_failure_fraction:
        shown = "\n".join(f"  {m}" for m in reward_messages) or "  (no message was captured)"
        return (
            f"step {last['step']}: {failed:.0%} of the reward calls failed (reward/errors "
            f"{last.get('reward/errors', 0):.0f}, reward/timeouts {last.get('reward/timeouts', 0):.0f}), more than "
            f"reward.max_failure_fraction = {max_failure_fraction}. The first failures:\n{shown}\n"
            "Fix the reward function (or raise reward.timeout_s), then resume from the last checkpoint."
        )
    streak = 0
    for metrics in reversed(history):
        if metrics.get("learner/skipped_steps", 0.0) < 1.0:
            break
        streak += 1
    if max_skipped_steps and streak >= max_skipped_steps:
        finite = [m for m in history if m.get("learner/skipped_steps", 0.0) < 1.0 and "grad_norm" in m]
        before = (
            f"the last finite step was {finite[-1]['step']} (grad_norm {finite[-1]['grad_norm']:.3g}, "
            f"lr {finite[-1].get('lr', float('nan')):.3g})"
            if finite
            else "no step had a finite loss"
        )
        return (
            f"steps {last['step'] - streak + 1}-{last['step']}: every update was skipped because the loss or "
            f"gradient was not finite ({streak} steps in a row, trainer.max_skipped_steps = {max_skipped_steps}); "
            f"{before}. Try a lower learner.lr, learner.grad_clip > 0, bfloat16 instead of float16, or check "
            "the rewards for inf/NaN; then resume from the last checkpoint."
        )
    return None


def step_line(
    state: Any, batch: list[Any], objectives: list[str], step: int, extra: dict[str, Any]
) -> dict[str, Any]:
    """The metrics line of a finished step (keys in docs/architecture.md) from its
    :class:`~rlengine.producer.StepState` and trained ``batch``; learner keys are NaN when the
    update was skipped because the filter kept nothing. ``extra`` (learner and stage metrics) wins.

    The ``time/*`` phases are exclusive (none counts time inside another), so they add up to about
    ``time/step``; ``time/train`` is the learner's share: ``time/ref + time/old_logprobs + time/update``."""
    trained = [e for g in batch for e in g.episodes]
    generated = [e for g in state.generated for e in g.episodes]
    tokens = sum(len(r.token_ids) for r in generated)
    metrics: dict[str, Any] = {
        "step": step,
        "reward/mean": statistics.fmean(r.reward for r in trained) if trained else float("nan"),
        **{f"reward/{k}/mean": statistics.fmean(r.scores[k] for r in generated) for k in objectives},
        "pass_rate/mean": statistics.fmean(g.pass_rate for g in state.generated),
        "pass_rate/distance_from_half": statistics.fmean(abs(g.pass_rate - 0.5) for g in state.generated),
        "effective_ratio": statistics.fmean(g.informative for g in batch) if batch else 0.0,
        "rollouts/generated": len(generated),
        "rollouts/kept": len(trained),
        "rollouts/rounds": state.rounds,
        "tokens/generated": tokens,
        "tokens/per_second": tokens / max(state.times["time/rollout"], 1e-9),
        "response_length/mean": tokens / max(1, len(generated)),
        "response_length/truncated_fraction": statistics.fmean(r.truncated for r in generated),
        **{
            f"time/{k}": state.times[f"time/{k}"]
            for k in ("rollout", "reward", "ref", "old_logprobs", "update", "sync", "stages", "reward_weighting")
        },
        "time/train": sum(state.times[f"time/{k}"] for k in ("ref", "old_logprobs", "update")),
        **{key: float("nan") for key in LEARNER_METRICS},
        **{key: float(value) for key, value in state.reward_faults.items()},
        "reward/failure_fraction": sum(state.reward_faults.values()) / max(1, state.reward_calls),
        **extra,
    }
    metrics["time/step"] = time.perf_counter() - state.start
    return metrics
