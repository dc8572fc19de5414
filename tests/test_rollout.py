"""The vLLM pool on the real engine: seeded sampling of large batches, reproducibility."""

from __future__ import annotations

import random

import pytest

pytestmark = pytest.mark.slow


def test_large_seeded_batch_samples_reproducibly(rollout_pool) -> None:
    """More prompt tokens than the engine takes in one step, every request seeded: vLLM-CPU used to
    crash here when chunked prefill split a seeded prompt; the same seeds give the same tokens."""
    rng = random.Random(0)
    prompts = [[rng.randint(100, 40000) for _ in range(150)] for _ in range(48)]  # 7,200 prompt tokens
    sampling = {
        "n": 2,
        "temperature": 1.0,
        "top_p": 1.0,
        "max_tokens": 6,
        "seeds": [7919 * i for i in range(48)],
    }
    first = rollout_pool.generate(prompts, sampling)
    second = rollout_pool.generate(prompts, sampling)
    assert len(first) == 48 and all(len(group) == 2 for group in first)
    assert [[o["token_ids"] for o in g] for g in first] == [[o["token_ids"] for o in g] for g in second]
    assert len({tuple(o["token_ids"]) for g in first for o in g}) > 48  # the seeds differ per request
