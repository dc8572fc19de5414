"""What a learner rank is built from: the config sections, plus a few facts about the run.

``LearnerSpec`` carries ``algorithm`` and ``learner`` as the config dataclasses themselves, so
their fields and defaults are defined once, in ``rlengine/config.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlengine.config import AlgorithmConfig, LearnerConfig, RunConfig


@dataclass
class LearnerSpec:
    """Everything a learner rank needs (plain data: it is pickled to Ray actors)."""

    model_path: str
    """Local Hugging Face model directory of the initial policy (and the reference model)."""
    algorithm: AlgorithmConfig
    learner: LearnerConfig
    dtype: str = "float32"
    """Parameter dtype: ``bfloat16`` turns on DeepSpeed's bf16 mode (fp32 master weights)."""
    trust_remote_code: bool = False
    temperature: float = 1.0
    """Sampling temperature; logits are divided by it so logprobs match the rollout's."""
    max_response_length: int = 256
    """``rollout.max_tokens``: the constant L of ``seq_mean_token_sum_norm``."""
    seed: int = 0
    total_steps: int = 1
    """Optimizer steps of the whole run (for the LR schedule)."""
    gpu: bool = False
    threads: int | None = None
    """Torch CPU threads of this rank (set by ``LearnerGroup`` from the cores it has)."""

    @classmethod
    def from_config(cls, cfg: RunConfig, model_path: str, *, gpu: bool = False) -> LearnerSpec:
        responses = cfg.trainer.batch_size * cfg.rollout.n
        mini = cfg.learner.mini_batch_size
        per_epoch = -(-responses // mini) if mini else 1
        return cls(
            model_path=model_path,
            algorithm=cfg.algorithm,
            learner=cfg.learner,
            dtype=cfg.model.dtype,
            trust_remote_code=cfg.model.trust_remote_code,
            temperature=cfg.rollout.temperature,
            max_response_length=cfg.rollout.max_tokens,
            seed=cfg.trainer.seed,
            total_steps=max(1, cfg.trainer.max_steps * cfg.learner.ppo_epochs * per_epoch),
            gpu=gpu,
            threads=cfg.learner.threads,
        )
