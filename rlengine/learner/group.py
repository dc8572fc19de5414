"""LearnerGroup: the DeepSpeed world as Ray actors, each wrapping one :class:`LearnerRank`.

The driver plans every update here (see :mod:`rlengine.learner.batching`), then fans the same
batch and each rank's share of the plan out to every rank and waits.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any

import ray

from rlengine.actors import Actor, call_all, wait_started
from rlengine.learner.driver import LearnerDriver
from rlengine.learner.rank import LearnerRank
from rlengine.learner.spec import LearnerSpec
from rlengine.placement import in_bundle
from rlengine.runtime import QUIET_ENV, available_cpus
from rlengine.samples import Sample

RankActor = ray.remote(num_cpus=0)(LearnerRank)
"""A :class:`LearnerRank` in its own Ray actor process."""


class LearnerGroup(LearnerDriver):
    """``num_ranks`` DeepSpeed ranks as Ray actors. Every call fans out to all ranks (or rank 0)
    and waits (the calls themselves are :class:`LearnerDriver`'s).

    Stages get this object typed as :class:`rlengine.stages.LearnerHandle`: logprobs, per-objective
    gradients and room for their own model in rank 0's process, never ``train`` or the weights."""

    def __init__(
        self,
        spec: LearnerSpec,
        *,
        num_ranks: int,
        actor_timeout_s: float = 1800.0,
        placement: Any = None,
        rendezvous_dir: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        """``placement`` (a :class:`rlengine.placement.LearnerPlacement`, GPU only): rank i goes to
        bundle i of its group, with its share of the GPU (half when colocated with an engine).
        ``rendezvous_dir``: where the ranks meet (a file store; on a multi-node cluster a folder
        every node sees, such as the run directory); default a fresh local temporary folder."""
        # the ranks meet through a file, not a TCP store listening on every interface (so no
        # MASTER_ADDR / MASTER_PORT); their gloo connections stay on loopback
        self.rendezvous = Path(tempfile.mkdtemp(prefix="rlengine-rendezvous-", dir=rendezvous_dir))
        self.actor_timeout_s = actor_timeout_s
        threads = spec.threads or max(1, len(available_cpus()) // num_ranks)
        self.spec = dataclasses.replace(spec, threads=threads)
        self.num_ranks = num_ranks
        self.ranks = []
        for rank in range(num_ranks):
            env = {
                **QUIET_ENV,
                "RANK": str(rank),
                "LOCAL_RANK": "0" if spec.gpu else str(rank),
                "WORLD_SIZE": str(num_ranks),
                "LOCAL_WORLD_SIZE": str(num_ranks),
                "RLENGINE_INIT_METHOD": f"file://{self.rendezvous / 'store'}",
                "OMP_NUM_THREADS": str(threads),
            }
            if not spec.gpu:
                env.update(DS_ACCELERATOR="cpu", CUDA_VISIBLE_DEVICES="", GLOO_SOCKET_IFNAME="lo")
            env.update(extra_env or {})
            options: dict[str, Any] = {"num_gpus": 1 if spec.gpu else 0}
            if placement is not None:
                options = in_bundle(placement.group, rank, placement.share)
            actor = RankActor.options(**options, runtime_env={"env_vars": env})
            self.ranks.append(Actor(actor.remote(self.spec), f"learner rank {rank}"))
        wait_started(self.ranks, timeout_s=self.actor_timeout_s)

    def call(self, method: str, *args: Any, what: str, per_rank: list[tuple] | None = None) -> list[Any]:
        """``method(*args)`` on every rank (or ``method(*per_rank[r])`` on rank r), in rank order."""
        arguments = per_rank if per_rank is not None else [args] * self.num_ranks
        return call_all(self.ranks, method, arguments, what=what, timeout_s=self.actor_timeout_s)

    def call_first(self, method: str, *args: Any, what: str) -> Any:
        """``method(*args)`` on rank 0 only (where hosted models live)."""
        return call_all(self.ranks[:1], method, [args], what=what, timeout_s=self.actor_timeout_s)[0]

    def share(self, samples: list[Sample]) -> Any:
        """The samples in Ray's object store once, for every rank to read."""
        return ray.put(samples)

    def shutdown(self) -> None:
        for r in self.ranks:
            ray.kill(r.handle)
        self.ranks = []
        shutil.rmtree(self.rendezvous, ignore_errors=True)
