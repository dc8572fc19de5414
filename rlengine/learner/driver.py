"""The learner as the driver sees it: plan an update (rlengine/learner/batching.py), hand every
rank the same samples and its share of the plan, merge what the ranks return.

:class:`LearnerDriver` holds those calls; how a call reaches the ranks is its subclass's:
:class:`rlengine.learner.group.LearnerGroup` fans out to Ray actors, :class:`LocalLearner`
calls one :class:`~rlengine.learner.rank.LearnerRank` in this process (a DeepSpeed world of one:
tests, benchmarks and GPU checks without Ray).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rlengine.learner.batching import (
    plan_updates,
    planning_lengths,
    prompt_groups,
    source_scales,
    step_denominators,
)
from rlengine.learner.metrics import merge_rank_metrics
from rlengine.learner.spec import LearnerSpec
from rlengine.samples import Sample


class LearnerDriver:
    """The learner's calls over ``num_ranks`` ranks; subclasses define :meth:`call`,
    :meth:`call_first`, :meth:`share` and :meth:`shutdown`."""

    spec: LearnerSpec
    num_ranks: int

    def call(self, method: str, *args: Any, what: str, per_rank: list[tuple] | None = None) -> list[Any]:
        """``method(*args)`` on every rank (or ``method(*per_rank[r])`` on rank r), in rank order."""
        raise NotImplementedError

    def call_first(self, method: str, *args: Any, what: str) -> Any:
        """``method(*args)`` on rank 0 only (where hosted models live)."""
        raise NotImplementedError

    def share(self, samples: list[Sample]) -> Any:
        """``samples`` in the form every rank reads them from."""
        raise NotImplementedError

    def shutdown(self) -> None:
        raise NotImplementedError

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
        ref = self.share(samples)
        parts = self.call(
            "compute_logprobs", what=f"{which} logprobs", per_rank=[(ref, p[0], which) for p in plan]
        )
        merged: dict[int, list] = {}
        for part in parts:
            merged.update(part)
        return [merged[i] for i in range(len(samples))]

    def train(self, samples: list[Sample], seed: int) -> dict[str, float]:
        """``ppo_epochs`` x mini-batches over ``samples`` (one optimizer step per mini-batch)."""
        opts = self.spec.learner
        plan = self.plan(samples, mini_batch_size=opts.mini_batch_size, ppo_epochs=opts.ppo_epochs, seed=seed)
        denominators = step_denominators(samples, plan, self.spec.algorithm.agg)
        scales = source_scales(samples, plan, self.spec.algorithm.agg)  # RECAP's sources (else empty)
        ref = self.share(samples)
        per_rank = [(ref, p, denominators, scales) for p in plan]
        results = self.call("train", what="the policy update", per_rank=per_rank)
        return merge_rank_metrics(results)

    def objective_gradients(self, samples: list[Sample], advantages: list[list[float]], layers: int | list[int]) -> dict:
        """Gram matrix of per-objective policy gradients over all ranks (see
        :meth:`LearnerRank.objective_gradients`), with the current learning rate."""
        plan = self.plan(samples, mini_batch_size=None, ppo_epochs=1, seed=0)
        denominator = step_denominators(samples, plan, self.spec.algorithm.agg)[0]
        ref = self.share(samples)
        arguments = [(ref, p[0], denominator, advantages, layers) for p in plan]
        return self.call("objective_gradients", what="per-objective gradients", per_rank=arguments)[0]

    def weights_checksums(self) -> list[list[float]]:
        """:meth:`LearnerRank.weights_checksum` of every rank, in rank order."""
        return self.call("weights_checksum", what="the weight checksum")

    def export_weights(self, path: str) -> dict[str, float]:
        """Rank 0 writes the policy to ``path`` (see :meth:`LearnerRank.export_weights`)."""
        return self.call("export_weights", path, what="the weight export")[0]

    def open_weight_transfer(self, backend: str, engines: list[Any], tensor_parallel_size: int) -> None:
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


class LocalLearner(LearnerDriver):
    """One :class:`~rlengine.learner.rank.LearnerRank` in this process, with the calls of a
    :class:`~rlengine.learner.group.LearnerGroup` of one rank (no Ray)."""

    def __init__(self, spec: LearnerSpec) -> None:
        from rlengine.learner.rank import LearnerRank
        from rlengine.learner.spec import single_process_world

        self.spec = dataclasses.replace(spec)
        self.num_ranks = 1
        with single_process_world():
            self.rank = LearnerRank(self.spec)

    def call(self, method: str, *args: Any, what: str, per_rank: list[tuple] | None = None) -> list[Any]:
        return [getattr(self.rank, method)(*(per_rank[0] if per_rank is not None else args))]

    def call_first(self, method: str, *args: Any, what: str) -> Any:
        return getattr(self.rank, method)(*args)

    def share(self, samples: list[Sample]) -> Any:
        return samples

    def shutdown(self) -> None:
        self.rank = None
