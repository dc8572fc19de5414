"""LearnerGroup: the DeepSpeed world as Ray actors, each wrapping one :class:`LearnerRank`.

The driver plans every update here (see :mod:`rlengine.learner.batching`), then fans the same
batch and each rank's share of the plan out to every rank and waits.
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import ray

from rlengine.actors import Actor, wait_all
from rlengine.learner.batching import plan_updates, planning_lengths, prompt_groups, step_denominators
from rlengine.learner.metrics import merge_rank_metrics
from rlengine.learner.rank import LearnerRank
from rlengine.learner.spec import LearnerSpec
from rlengine.placement import in_bundle
from rlengine.runtime import QUIET_ENV, available_cpus

RankActor = ray.remote(num_cpus=0)(LearnerRank)
"""A :class:`LearnerRank` in its own Ray actor process."""


def jemalloc_env() -> dict[str, str]:
    """Preload Ray's bundled jemalloc, keeping freed pages (no page faults on the next step)."""
    library = Path(ray.__file__).parent / "core" / "libjemalloc.so"
    if not library.is_file():
        raise FileNotFoundError(f"learner.jemalloc: Ray's jemalloc is not at {library}")
    return {"LD_PRELOAD": str(library), "MALLOC_CONF": "retain:true,dirty_decay_ms:-1,muzzy_decay_ms:-1"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LearnerGroup:
    """``num_ranks`` DeepSpeed ranks. Every call fans out to all ranks and waits."""

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
        port = free_port()
        # the ranks meet through a file, not a TCP store listening on every interface; their
        # gloo connections stay on loopback
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
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "RLENGINE_INIT_METHOD": f"file://{self.rendezvous / 'store'}",
                "OMP_NUM_THREADS": str(threads),
            }
            if not spec.gpu:
                env.update(DS_ACCELERATOR="cpu", CUDA_VISIBLE_DEVICES="", GLOO_SOCKET_IFNAME="lo")
                if spec.learner.jemalloc:
                    env.update(jemalloc_env())
            env.update(extra_env or {})
            options: dict[str, Any] = {"num_gpus": 1 if spec.gpu else 0}
            if placement is not None:
                options = in_bundle(placement.group, rank, placement.share)
            actor = RankActor.options(**options, runtime_env={"env_vars": env})
            self.ranks.append(Actor(actor.remote(self.spec), f"learner rank {rank}"))
        self.wait([r.handle.ready.remote() for r in self.ranks], "start-up")
        for rank_actor in self.ranks:
            rank_actor.lookup_pid()

    def wait(self, refs: list[ray.ObjectRef], what: str, ranks: list[Actor] | None = None) -> list[Any]:
        """Results of one call per rank (``ranks``, default all), within ``actor_timeout_s``."""
        return wait_all(list(zip(ranks or self.ranks, refs)), what=what, timeout_s=self.actor_timeout_s)

    def plan(self, samples: list[dict], *, mini_batch_size: int | None, ppo_epochs: int, seed: int):
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

    def compute_logprobs(self, samples: list[dict], which: str = "policy") -> list[list[float]]:
        """Per-sample response-token logprobs under the policy or the reference model."""
        plan = self.plan(samples, mini_batch_size=None, ppo_epochs=1, seed=0)
        ref = ray.put(samples)
        parts = self.wait(
            [
                rank.handle.compute_logprobs.remote(ref, plan[r][0], which)
                for r, rank in enumerate(self.ranks)
            ],
            f"{which} logprobs",
        )
        merged: dict[int, list] = {}
        for part in parts:
            merged.update(part)
        return [merged[i] for i in range(len(samples))]

    def train(self, samples: list[dict], seed: int) -> dict[str, float]:
        """``ppo_epochs`` x mini-batches over ``samples`` (each has prompt_ids, response_ids,
        rollout_logprobs, advantage, loss_masked and optionally old_logprobs)."""
        opts = self.spec.learner
        plan = self.plan(samples, mini_batch_size=opts.mini_batch_size, ppo_epochs=opts.ppo_epochs, seed=seed)
        denominators = step_denominators(samples, plan, self.spec.algorithm.agg)
        ref = ray.put(samples)
        results = self.wait(
            [rank.handle.train.remote(ref, plan[r], denominators) for r, rank in enumerate(self.ranks)],
            "the policy update",
        )
        return merge_rank_metrics(results)

    def objective_gradients(self, samples: list[dict], advantages: list[list[float]], layers: int) -> dict:
        """Gram matrix of per-objective policy gradients over all ranks (see
        :meth:`LearnerRank.objective_gradients`), with the current learning rate."""
        plan = self.plan(samples, mini_batch_size=None, ppo_epochs=1, seed=0)
        denominator = step_denominators(samples, plan, self.spec.algorithm.agg)[0]
        ref = ray.put(samples)
        results = self.wait(
            [
                rank.handle.objective_gradients.remote(ref, plan[r][0], denominator, advantages, layers)
                for r, rank in enumerate(self.ranks)
            ],
            "per-objective gradients",
        )
        return results[0]

    def weights_checksums(self) -> list[list[float]]:
        """:meth:`LearnerRank.weights_checksum` of every rank, in rank order."""
        return self.wait([r.handle.weights_checksum.remote() for r in self.ranks], "the weight checksum")

    def export_weights(self, path: str) -> dict[str, float]:
        """Rank 0 writes the policy to ``path`` (see :meth:`LearnerRank.export_weights`)."""
        return self.wait([r.handle.export_weights.remote(path) for r in self.ranks], "the weight export")[0]

    def open_weight_transfer(self, backend: str, engines: list[Actor], tensor_parallel_size: int) -> None:
        """Every rank joins vLLM's weight transfer (``nccl`` / ``ipc``) with ``engines``; rank 0's
        machine hosts the NCCL store (rlengine/learner/weight_transfer.py)."""
        address, port = self.wait(
            [self.ranks[0].handle.transfer_endpoint.remote()], "the transfer endpoint", self.ranks[:1]
        )[0]
        refs = [
            r.handle.open_weight_transfer.remote(
                backend, engines, tensor_parallel_size, address, port, self.actor_timeout_s
            )
            for r in self.ranks
        ]
        self.wait(refs, "opening the weight transfer")

    def push_weights(self) -> dict[str, float]:
        """Send the weights to the engines through the open transfer; rank 0's seconds and bytes."""
        return self.wait([r.handle.push_weights.remote() for r in self.ranks], "the weight transfer")[0]

    def save_checkpoint(self, directory: str, hf_dir: str) -> None:
        self.wait(
            [r.handle.save_checkpoint.remote(directory, hf_dir) for r in self.ranks], "the checkpoint save"
        )

    def load_checkpoint(self, directory: str) -> None:
        self.wait([r.handle.load_checkpoint.remote(directory) for r in self.ranks], "the checkpoint load")

    def host(self, name: str, cls: type, *args: Any) -> str:
        """Build ``cls(*args)`` inside rank 0's process (it shares that rank's GPU); see ``call_hosted``."""
        return self.wait(
            [self.ranks[0].handle.host.remote(name, cls, *args)], f"hosting {name}", self.ranks[:1]
        )[0]

    def call_hosted(self, name: str, method: str, *args: Any) -> Any:
        """Call ``method(*args)`` on the object hosted as ``name`` and wait for the result."""
        ref = self.ranks[0].handle.call_hosted.remote(name, method, *args)
        return self.wait([ref], f"{name}.{method}", self.ranks[:1])[0]

    def unhost(self, name: str) -> None:
        if self.ranks:
            self.wait([self.ranks[0].handle.unhost.remote(name)], f"removing {name}", self.ranks[:1])

    def shutdown(self) -> None:
        for r in self.ranks:
            ray.kill(r.handle)
        self.ranks = []
        shutil.rmtree(self.rendezvous, ignore_errors=True)


class LearnerView:
    """The learner handle stages get (:class:`rlengine.stages.LearnerHandle`): logprobs, per-objective
    gradient Gram matrices, and room for a stage's own model in rank 0's process; never ``train`` or
    the weights."""

    def __init__(self, group: LearnerGroup) -> None:
        self._group = group

    @property
    def num_ranks(self) -> int:
        return self._group.num_ranks

    def compute_logprobs(self, samples: list[dict], which: str = "policy") -> list[list[float]]:
        return self._group.compute_logprobs(samples, which)

    def host(self, name: str, cls: type, *args: Any) -> str:
        return self._group.host(name, cls, *args)

    def call_hosted(self, name: str, method: str, *args: Any) -> Any:
        return self._group.call_hosted(name, method, *args)

    def unhost(self, name: str) -> None:
        self._group.unhost(name)

    def objective_gradients(self, samples: list[dict], advantages: list[list[float]], layers: int) -> dict:
        return self._group.objective_gradients(samples, advantages, layers)
