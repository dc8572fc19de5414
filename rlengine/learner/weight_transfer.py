"""Weight sync through vLLM's weight-transfer API (GPU): ``rollout.weight_sync: nccl | ipc``.

The learner ranks are the trainer side of vLLM's protocol
(``vllm.distributed.weight_transfer``):

- :class:`PolicySource` is the ``WeightSource``: the policy's HF-named tensors, gathered in buckets
  of ``learner.sync_bucket_mb`` under ZeRO-3 (every rank iterates it, so every rank takes part in
  each gather; the full model never exists in one process).
- :class:`EngineClient` is the ``VLLMWeightSyncClient``: it fans each control call out to every
  rollout engine actor, with the run's actor deadline. With several independent engines it gives
  engine e the NCCL ranks ``1 + e x tp ...`` (vLLM numbers workers within one engine only).
- :class:`WeightTransfer` holds vLLM's trainer engine on one rank. Rank 0 is the sender: for
  ``nccl`` it broadcasts every bucket to all engine workers (``start_weight_update``,
  ``update_weights`` concurrently with the broadcast, ``finish_weight_update``); for ``ipc`` every
  rank shares CUDA IPC handles of its gathered tensors with the engine worker on its own GPU
  (``placement: colocated``).

Both sides use packed transfers (vLLM sends ``packed`` to the workers at init, so the two cannot
disagree) and ``NCCL_CUMEM_ENABLE=0`` (rlengine/learner/group.py and rlengine/rollout/pool.py set
it). CPU runs use the file path instead (rlengine/learner/export.py).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import torch
from vllm.distributed.weight_transfer import ParamMeta, WeightSource, WeightTransferTrainerFactory

from rlengine.actors import Actor, call_all
from rlengine.learner.export import full_shape, gathered_buckets, policy_tensors

BACKENDS = ("nccl", "ipc")
"""The ``rollout.weight_sync`` values served here; ``file`` is rlengine/learner/export.py."""


class PolicySource(WeightSource):
    """The policy's tensors as the engines load them (tied ``lm_head`` left out), in buckets of
    ``bucket_bytes``, gathered one bucket at a time under ZeRO-3. ``bytes`` counts one pass."""

    def __init__(self, model: torch.nn.Module, tied: bool, bucket_bytes: int, zero3: bool) -> None:
        self.named = policy_tensors(model, tied)
        self.bucket_bytes, self.zero3 = bucket_bytes, zero3
        self.bytes = 0

    def metadata(self) -> list[ParamMeta]:
        """Name, dtype and full shape of every tensor, without gathering any."""
        return [ParamMeta(name, tensor.dtype, tuple(full_shape(tensor))) for name, tensor in self.named]

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        self.bytes = 0
        for bucket in gathered_buckets(self.named, self.bucket_bytes, self.zero3):
            for name, tensor in bucket:
                self.bytes += tensor.numel() * tensor.element_size()
                yield name, tensor


class EngineClient:
    """vLLM's ``VLLMWeightSyncClient`` protocol over the rollout engine actors
    (:class:`rlengine.rollout.engine.RolloutEngine`), each call with a deadline."""

    def __init__(self, engines: list[Actor], tensor_parallel_size: int, timeout_s: float) -> None:
        self.engines, self.tensor_parallel_size, self.timeout_s = engines, tensor_parallel_size, timeout_s

    def _all(self, method: str, arguments: list[tuple] | None = None) -> None:
        call_all(
            self.engines, method, arguments, what=f"the weight transfer ({method})", timeout_s=self.timeout_s
        )

    def engine_init_info(self, init_info: dict[str, Any], engine: int) -> dict[str, Any]:
        """``init_info`` for engine ``engine``: its workers' NCCL ranks follow the engines before it."""
        if "rank_offset" not in init_info:  # ipc: no ranks
            return dict(init_info)
        return {**init_info, "rank_offset": init_info["rank_offset"] + engine * self.tensor_parallel_size}

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        self._all(
            "init_weight_transfer_engine",
            [(self.engine_init_info(init_info, e),) for e in range(len(self.engines))],
        )

    def shutdown_weight_transfer_engine(self) -> None:
        self._all("shutdown_weight_transfer_engine")

    def start_weight_update(self) -> None:
        self._all("start_weight_update")

    def update_weights(self, update_info: dict[str, Any] | list[dict[str, Any]]) -> None:
        self._all("update_weights", [(update_info,)] * len(self.engines))

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._all("finish_weight_update")


def endpoint() -> tuple[str, int]:
    """This machine's address as Ray knows it, and a free port: where rank 0's NCCL store listens."""
    import ray

    address = ray.util.get_node_ip_address()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return address, sock.getsockname()[1]


def trainer_init_info(backend: str, rank: int, address: str, port: int, engine_workers: int) -> Any:
    """vLLM's trainer init info for ``backend``; ``engine_workers`` = engines x tensor parallel."""
    if backend == "nccl":
        from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

        return NCCLTrainerInitInfo(
            rank=rank, master_address=address, master_port=port, world_size=1 + engine_workers, packed=True
        )
    if backend == "ipc":
        from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo

        return IPCTrainerInitInfo(rank=rank, packed=True)
    raise ValueError(f"rollout.weight_sync: {backend!r} is not one of {BACKENDS}")


class WeightTransfer:
    """One learner rank's side of the transfer: built on every rank, rank 0 sends."""

    def __init__(
        self,
        backend: str,
        rank: int,
        source: PolicySource,
        client: EngineClient,
        address: str,
        port: int,
    ) -> None:
        workers = len(client.engines) * client.tensor_parallel_size
        info = trainer_init_info(backend, rank, address, port, workers)
        self.source, self.client = source, client
        self.engine = WeightTransferTrainerFactory.trainer_init(info, client=client, source=source)

    def send(self) -> dict[str, float]:
        """Push the current weights to every engine; seconds and bytes (bytes on the sender)."""
        start = time.perf_counter()
        self.engine.send_weights()
        return {"seconds": time.perf_counter() - start, "bytes": float(self.source.bytes)}

    def close(self, engines: list[Actor] | None = None) -> None:
        """Tear down the transfer group on both sides: this rank's, and (sender) the engines'
        ``engines`` (default: the ones it was opened with; after a restart, the live ones)."""
        self.engine.shutdown()
        if self.engine.is_sender:
            client = self.client
            if engines is not None:
                client = EngineClient(engines, client.tensor_parallel_size, client.timeout_s)
            client.shutdown_weight_transfer_engine()
