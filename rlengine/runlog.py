"""Run logging: ``metrics.jsonl`` (one object per step), TensorBoard, optional W&B, console bar."""

from __future__ import annotations

import json
import math
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
