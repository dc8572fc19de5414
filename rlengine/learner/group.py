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

from rlengine.actors import Actor, call_all
from rlengine.learner.batching import plan_updates, planning_lengths, prompt_groups, step_denominators
from rlengine.learner.metrics import merge_rank_metrics
from rlengine.learner.rank import LearnerRank
from rlengine.learner.spec import LearnerSpec
from rlengine.placement import in_bundle
from rlengine.runtime import QUIET_ENV, available_cpus
from rlengine.samples import Sample

RankActor = ray.remote(num_cpus=0)(LearnerRank)
"""A :class:`LearnerRank` in its own Ray actor process."""


class LearnerGroup:
    """``num_ranks`` DeepSpeed ranks. Every call fans out to all ranks (or rank 0) and waits.

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
        self.call("ready", what="start-up")
        for rank_actor in self.ranks:
            rank_actor.lookup_pid()

    def call(self, method: str, *args: Any, what: str, per_rank: list[tuple] | None = None) -> list[Any]:
        """``method(*args)`` on every rank (or ``method(*per_rank[r])`` on rank r), in rank order."""
        arguments = per_rank if per_rank is not None else [args] * self.num_ranks
        return call_all(self.ranks, method, arguments, what=what, timeout_s=self.actor_timeout_s)

    def call_first(self, method: str, *args: Any, what: str) -> Any:
        """``method(*args)`` on rank 0 only (where hosted models live)."""
        return call_all(self.ranks[:1], method, [args], what=what, timeout_s=self.actor_timeout_s)[0]

    def plan(self, samples: list[Sample], *, mini_batch_size: int | None, ppo_epochs: int, seed: int):
        groups = prompt_groups(samples) if self.spec.learner.shared_prefix else None
        return plan_updates(
            planning_lengths(samples, groups),
            ranks=self.num_ranks,
            mini_batch_size=mini_batch_size,
            ppo_epochs=ppo_epochs,
            token_budget=self.spec.learner.micro_batch_tokens,
            seed=seed,
            packed=self.spec.learner.packing,
            groups=groups,
        )

    def compute_logprobs(self, samples: list[Sample], which: str = "policy") -> list[list[float]]:
        """Per-sample response-token logprobs under the policy or the reference model."""
        plan = self.plan(samples, mini_batch_size=None, ppo_epochs=1, seed=0)
        ref = ray.put(samples)
        parts = self.call("compute_logprobs", what=f"{which} logprobs", per_rank=[(ref, p[0], which) for p in plan])
        merged: dict[int, list] = {}
        for part in parts:
            merged.update(part)
        return [merged[i] for i in range(len(samples))]

    def train(self, samples: list[Sample], seed: int) -> dict[str, float]:
        """``ppo_epochs`` x mini-batches over ``samples`` (one optimizer step per mini-batch)."""
        opts = self.spec.learner
        plan = self.plan(samples, mini_batch_size=opts.mini_batch_size, ppo_epochs=opts.ppo_epochs, seed=seed)
        denominators = step_denominators(samples, plan, self.spec.algorithm.agg)
        ref = ray.put(samples)
        results = self.call("train", what="the policy update", per_rank=[(ref, p, denominators) for p in plan])
        return merge_rank_metrics(results)

    def objective_gradients(self, samples: list[Sample], advantages: list[list[float]], layers: int) -> dict:
        """Gram matrix of per-objective policy gradients over all ranks (see
        :meth:`LearnerRank.objective_gradients`), with the current learning rate."""
        plan = self.plan(samples, mini_batch_size=None, ppo_epochs=1, seed=0)
        denominator = step_denominators(samples, plan, self.spec.algorithm.agg)[0]
        ref = ray.put(samples)
        arguments = [(ref, p[0], denominator, advantages, layers) for p in plan]
        return self.call("objective_gradients", what="per-objective gradients", per_rank=arguments)[0]

    def weights_checksums(self) -> list[list[float]]:
        """:meth:`LearnerRank.weights_checksum` of every rank, in rank order."""
        return self.call("weights_checksum", what="the weight checksum")

    def export_weights(self, path: str) -> dict[str, float]:
        """Rank 0 writes the policy to ``path`` (see :meth:`LearnerRank.export_weights`)."""
        return self.call("export_weights", path, what="the weight export")[0]

    def open_weight_transfer(self, backend: str, engines: list[Actor], tensor_parallel_size: int) -> None:
        """Every rank joins vLLM's weight transfer (``nccl`` / ``ipc``) with ``engines``; rank 0's
        machine hosts the NCCL store (rlengine/learner/weight_transfer.py)."""
        address, port = self.call_first("transfer_endpoint", what="the transfer endpoint")
        arguments = (backend, engines, tensor_parallel_size, address, port, self.actor_timeout_s)
        self.call("open_weight_transfer", *arguments, what="opening the weight transfer")

    def push_weights(self) -> dict[str, float]:
        """Send the weights to the engines through the open transfer; rank 0's seconds and bytes."""
        return self.call("push_weights", what="the weight transfer")[0]

    def save_checkpoint(self, directory: str, hf_dir: str) -> None:
        self.call("save_checkpoint", directory, hf_dir, what="the checkpoint save")

    def load_checkpoint(self, directory: str) -> None:
        self.call("load_checkpoint", directory, what="the checkpoint load")

    def host(self, name: str, cls: type, *args: Any) -> str:
        """Build ``cls(*args)`` inside rank 0's process (it shares that rank's GPU); see ``call_hosted``."""
        return self.call_first("host", name, cls, *args, what=f"hosting {name}")

    def call_hosted(self, name: str, method: str, *args: Any) -> Any:
        """Call ``method(*args)`` on the object hosted as ``name`` and wait for the result."""
        return self.call_first("call_hosted", name, method, *args, what=f"{name}.{method}")

    def unhost(self, name: str) -> None:
        if self.ranks:
            self.call_first("unhost", name, what=f"removing {name}")

    def shutdown(self) -> None:
        for r in self.ranks:
            ray.kill(r.handle)
        self.ranks = []
        shutil.rmtree(self.rendezvous, ignore_errors=True)
