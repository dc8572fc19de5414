"""Atomic checkpoints: ``checkpoints/step_N/`` holds an HF model dir and the trainer state.

Everything is written under ``step_N.tmp`` and renamed at the end, so a crash never leaves a
half checkpoint; resume only ever sees complete ones.

Layout::

    step_N/model/             Hugging Face model + tokenizer (AutoModelForCausalLM loads it)
    step_N/deepspeed/         DeepSpeed engine state of every rank (optimizer, scheduler, RNG)
    step_N/trainer_state.pt   step, stage states (incl. data cursor), driver RNG states
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_dirs(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = STEP_DIR.match(path.name)
        if match and (path / "trainer_state.pt").is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = checkpoint_dirs(run_dir)
    return found[-1][1] if found else None


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(
    run_dir: str | Path, step: int, learner: Any, tokenizer: Any, state: dict, keep_last: int
) -> Path:
    """Write ``checkpoints/step_<step>`` atomically and prune to the newest ``keep_last``."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step}"
    tmp = root / f"step_{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    learner.save_checkpoint(str((tmp / "deepspeed").resolve()), str((tmp / "model").resolve()))
    tokenizer.save_pretrained(tmp / "model")
    torch.save({**state, "step": step, "rng": rng_state()}, tmp / "trainer_state.pt")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep_last > 0:
        for _, old in checkpoint_dirs(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_trainer_state(path: str | Path) -> dict:
    state = torch.load(Path(path) / "trainer_state.pt", weights_only=False)
    set_rng_state(state["rng"])
    return state
