"""Checkpoint discovery only sees complete checkpoints; RNG state round-trips."""

from __future__ import annotations

import random

import torch

from rlengine.checkpoint import checkpoint_dirs, latest_checkpoint, rng_state, set_rng_state


def test_incomplete_checkpoints_are_ignored(tmp_path) -> None:
    root = tmp_path / "checkpoints"
    for name, complete in (("step_2", True), ("step_10", True), ("step_12.tmp", True), ("step_11", False)):
        (root / name).mkdir(parents=True)
        if complete:
            (root / name / "trainer_state.pt").write_bytes(b"x")
    assert [step for step, _ in checkpoint_dirs(tmp_path)] == [2, 10]
    assert latest_checkpoint(tmp_path).name == "step_10"
    assert latest_checkpoint(tmp_path / "nothing") is None


def test_rng_state_round_trip() -> None:
    state = rng_state()
    first = (random.random(), torch.rand(3))
    set_rng_state(state)
    second = (random.random(), torch.rand(3))
    assert first[0] == second[0] and torch.equal(first[1], second[1])
