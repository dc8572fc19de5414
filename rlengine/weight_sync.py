"""The learner's weights into the rollout engines after every update (``rollout.weight_sync``).

``file`` (every CPU run, and a choice on GPU): learner rank 0 streams the policy into one
safetensors file in shared memory (rlengine/learner/export.py), every engine reloads it
(rlengine/rollout/worker_ext.py), and the file is deleted. ``nccl`` / ``ipc`` (GPU): vLLM's
weight-transfer API from the learner ranks straight into the engines' workers
(rlengine/learner/weight_transfer.py). The engines are awake (``placement: colocated`` wakes them
at the end of the update, ``RolloutPool.asleep``), and generation is never running during a
sync: a step's rollout has finished, and under ``one_step_off_policy`` the prefetch was collected
first (``Producer.settle``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from rlengine.errors import ConfigError


def resolve_backend(rollout: Any, gpu: bool) -> str:
    """``rollout.weight_sync`` for this machine (``auto``: file on CPU, ipc when colocated, nccl
    when split). GPU-only settings on a machine without CUDA are a ConfigError."""
    if not gpu:
        for key, value, default in (
            ("weight_sync", rollout.weight_sync, ("auto", "file")),
            ("placement", rollout.placement, ("split",)),
        ):
            if value not in default:
                raise ConfigError(
                    f"rollout.{key}: {value!r} needs CUDA GPUs, and this machine has none; "
                    f"use rollout.{key}: {default[0]} on CPU"
                )
        return "file"
    if rollout.weight_sync != "auto":
        return rollout.weight_sync
    return "ipc" if rollout.placement == "colocated" else "nccl"


class WeightSync:
    """Pushes the learner's current weights to the pool's engines; ``bytes`` is the last sync's size."""

    def __init__(self, backend: str, learner: Any, pool: Any, tensor_parallel_size: int) -> None:
        self.backend, self.learner, self.pool = backend, learner, pool
        self.tensor_parallel_size = tensor_parallel_size
        self.bytes = 0
        """Size of the latest sync (the file every engine loaded, or what rank 0 sent)."""
        self.transfer_engines: list[Any] = []
        """The engine actors the open transfer group holds (nccl / ipc)."""
        shm = Path("/dev/shm")
        self.weights_dir = Path(tempfile.mkdtemp(prefix="rlengine-", dir=shm if shm.is_dir() else None))

    def __call__(self, engines: list[int] | None = None) -> None:
        """Sync every engine, or only ``engines`` (a restarted one) on the file path; the transfer
        path opens its group again when the engines changed, then sends to all."""
        if self.backend == "file":
            weights = self.weights_dir / "policy.safetensors"  # a full copy of the weights in RAM
            self.learner.export_weights(str(weights))
            self.bytes = weights.stat().st_size
            self.pool.sync_weights(str(weights), engines)
            weights.unlink(missing_ok=True)
        else:
            if self.transfer_engines != self.pool.engines:  # the first sync, or after a restart
                engines_now = list(self.pool.engines)
                self.learner.open_weight_transfer(self.backend, engines_now, self.tensor_parallel_size)
                self.transfer_engines = engines_now
            self.bytes = int(self.learner.push_weights()["bytes"])

    def close(self) -> None:
        shutil.rmtree(self.weights_dir, ignore_errors=True)
