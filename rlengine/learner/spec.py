"""What a learner rank is built from: the config sections, plus a few facts about the run.

``LearnerSpec`` carries ``algorithm`` and ``learner`` as the config dataclasses themselves, so
their fields and defaults are defined once, in ``rlengine/config.py``. A plug-in
``algorithm.loss`` / ``algorithm.advantage`` (``file.py:function``) is carried with its file made
absolute, so a rank in any process and directory resolves ``compute_policy_loss(algo.loss, ...)``
without a base directory (the function is loaded and checked once per process).
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from rlengine.algorithms.registry import with_absolute_plugins
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
    config_dir: str | None = None
    """Directory of the run's YAML file (``RunConfig.config_dir``), which relative plug-in paths
    were resolved against."""

    @classmethod
    def from_config(cls, cfg: RunConfig, model_path: str, *, gpu: bool = False) -> LearnerSpec:
        responses = cfg.trainer.batch_size * cfg.rollout.n
        mini = cfg.learner.mini_batch_size
        per_epoch = -(-responses // mini) if mini else 1
        return cls(
            model_path=model_path,
            algorithm=with_absolute_plugins(cfg.algorithm, cfg.config_dir),
            learner=cfg.learner,
            dtype=cfg.model.dtype,
            trust_remote_code=cfg.model.trust_remote_code,
            temperature=cfg.rollout.temperature,
            max_response_length=cfg.rollout.max_tokens,
            seed=cfg.trainer.seed,
            total_steps=max(1, cfg.trainer.max_steps * cfg.learner.ppo_epochs * per_epoch),
            gpu=gpu,
            threads=cfg.learner.threads,
            config_dir=cfg.config_dir,
        )


def single_process_env() -> None:
    """Environment for a DeepSpeed world of one rank in this process (no launcher, no Ray)."""
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_WORLD_SIZE", "1")):
        os.environ.setdefault(key, value)
    # a file rendezvous (no MASTER_ADDR / MASTER_PORT): torch's TCP store would listen on every
    # network interface
    if "RLENGINE_INIT_METHOD" not in os.environ:
        store = os.path.join(tempfile.mkdtemp(prefix="rlengine-rendezvous-"), "store")
        os.environ["RLENGINE_INIT_METHOD"] = f"file://{store}"


WORLD_ENV_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "RLENGINE_INIT_METHOD")


@contextlib.contextmanager
def single_process_world() -> Iterator[None]:
    """:func:`single_process_env` for the block only: a rank built inside it keeps its world, and
    the process's environment is as before afterwards, so a subprocess started later (a benchmark
    worker, ``rlengine train``, TRL's accelerate) does not take itself for rank 0 of this world."""
    saved = {key: os.environ.get(key) for key in WORLD_ENV_KEYS}
    single_process_env()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def lr_lambda(schedule: str, warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    """LR multiplier per optimizer step: linear warm-up, then constant or cosine to ``min_ratio``."""

    def fn(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return fn
