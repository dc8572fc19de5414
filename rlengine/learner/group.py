"""LearnerGroup: M DeepSpeed ranks as Ray actors, and the driver-side batch planning.

Planning happens here, once, so every rank runs the same number of micro-batches per
optimizer step: responses are split into mini-batches (``learner.mini_batch_size``), each
mini-batch is spread over ranks balanced by tokens, and each rank's share is packed into
micro-batches whose padded size stays within ``learner.micro_batch_tokens``.
"""

from __future__ import annotations

import random
import socket
from typing import Any

import ray

from rlengine.learner.worker import LearnerRank
from rlengine.rollout.engine import QUIET_ENV
from rlengine.rollout.pool import available_cpus


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pack_micro_batches(indices: list[int], lengths: list[int], token_budget: int) -> list[list[int]]:
    """Greedy packing of samples (sorted by length) so that ``rows * longest <= token_budget``.

    A single sample longer than the budget gets a micro-batch of its own.
    """
    order = sorted(indices, key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        longest_if_added = max(longest, lengths[i])
        if current and longest_if_added * (len(current) + 1) > token_budget:
            batches.append(current)
            current, longest = [], 0
            longest_if_added = lengths[i]
        current.append(i)
        longest = longest_if_added
    if current:
        batches.append(current)
    return batches


def split_over_ranks(indices: list[int], lengths: list[int], ranks: int) -> list[list[int]]:
    """Longest-first assignment to the rank with the fewest tokens so far."""
    shares: list[list[int]] = [[] for _ in range(ranks)]
    load = [0] * ranks
    for i in sorted(indices, key=lambda i: -lengths[i]):
        r = load.index(min(load))
        shares[r].append(i)
        load[r] += lengths[i]
    return shares


def plan_updates(
    lengths: list[int],
    *,
    ranks: int,
    mini_batch_size: int | None,
    ppo_epochs: int,
    token_budget: int,
    seed: int,
) -> list[list[list[list[int]]]]:
    """plan[rank][optimizer_step] = list of micro-batches (sample indices; [] = padding)."""
    count = len(lengths)
    size = mini_batch_size or count
    rng = random.Random(seed)
    plan: list[list[list[list[int]]]] = [[] for _ in range(ranks)]
    for epoch in range(ppo_epochs):
        order = list(range(count))
        if epoch > 0 or mini_batch_size:
            rng.shuffle(order)
        for start in range(0, count, size):
            mini = order[start : start + size]
            per_rank = [
                pack_micro_batches(share, lengths, token_budget) if share else []
                for share in split_over_ranks(mini, lengths, ranks)
            ]
            steps = max(1, max(len(p) for p in per_rank))
            for r in range(ranks):
                plan[r].append(per_rank[r] + [[] for _ in range(steps - len(per_rank[r]))])
    return plan


def step_denominators(samples: list[dict], plan: list[list[list[list[int]]]], agg: str) -> list[float]:
    """Global aggregation denominator of every optimizer step (summed over ranks)."""
    result = []
    for step in range(len(plan[0])):
        total = 0.0
        for rank_plan in plan:
            for micro in rank_plan[step]:
                for i in micro:
                    s = samples[i]
                    active = len(s["response_ids"]) if not s.get("loss_masked") else 0
                    if agg == "token_mean":
                        total += active
                    elif agg == "seq_mean_token_sum_norm":
                        total += 1
                    else:
                        total += 1 if active > 0 else 0
        result.append(total)
    return result


class LearnerGroup:
    """The DeepSpeed world. All calls fan out to every rank and wait."""

    def __init__(self, model_path: str, options: dict[str, Any], *, num_ranks: int, use_gpu: bool) -> None:
        port = free_port()
        cores = len(available_cpus())
        threads = options.get("threads") or max(1, cores // num_ranks)
        self.num_ranks = num_ranks
        self.options = options
        self.ranks = []
        for rank in range(num_ranks):
            env = {
                **QUIET_ENV,
                "RANK": str(rank),
                "LOCAL_RANK": "0" if use_gpu else str(rank),
                "WORLD_SIZE": str(num_ranks),
                "LOCAL_WORLD_SIZE": str(num_ranks),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "OMP_NUM_THREADS": str(threads),
            }
            if not use_gpu:
                env["DS_ACCELERATOR"] = "cpu"
                env["CUDA_VISIBLE_DEVICES"] = ""
            actor = LearnerRank.options(num_gpus=1 if use_gpu else 0, runtime_env={"env_vars": env}).remote(
                model_path, {**options, "threads": threads, "gpu": use_gpu}
            )
            self.ranks.append(actor)
        ray.get([r.ready.remote() for r in self.ranks])

    def _shares(self, samples: list[dict]) -> list[list[list[int]]]:
        """Each rank's micro-batches for one pass over ``samples`` (a one-step plan)."""
        lengths = [len(s["prompt_ids"]) + len(s["response_ids"]) for s in samples]
        plan = plan_updates(
            lengths,
            ranks=self.num_ranks,
            mini_batch_size=None,
            ppo_epochs=1,
            token_budget=self.options["micro_batch_tokens"],
            seed=0,
        )
        return [rank_plan[0] for rank_plan in plan]

    def compute_logprobs(self, samples: list[dict], which: str = "policy") -> list[list[float]]:
        """Per-sample response-token logprobs under the policy or the reference model."""
        ref = ray.put(samples)
        parts = ray.get(
            [
                rank.compute_logprobs.remote(ref, share, which)
                for rank, share in zip(self.ranks, self._shares(samples))
            ]
        )
        merged: dict[int, list] = {}
        for part in parts:
            merged.update(part)
        return [merged[i] for i in range(len(samples))]

    def train(self, samples: list[dict], seed: int) -> dict[str, float]:
        """PPO epochs x mini-batches over ``samples`` (each has prompt_ids, response_ids,
        rollout_logprobs, advantage, loss_masked and optionally old_logprobs)."""
        opts = self.options
        lengths = [len(s["prompt_ids"]) + len(s["response_ids"]) for s in samples]
        plan = plan_updates(
            lengths,
            ranks=self.num_ranks,
            mini_batch_size=opts["mini_batch_size"],
            ppo_epochs=opts["ppo_epochs"],
            token_budget=opts["micro_batch_tokens"],
            seed=seed,
        )
        denominators = step_denominators(samples, plan, opts["agg"])
        ref = ray.put(samples)
        results = ray.get(
            [rank.train.remote(ref, plan[r], denominators) for r, rank in enumerate(self.ranks)]
        )
        return merge_rank_metrics(results)

    def export_weights(self, path: str) -> None:
        ray.get([r.export_weights.remote(path) for r in self.ranks])

    def save_checkpoint(self, directory: str, hf_dir: str) -> None:
        ray.get([r.save_checkpoint.remote(directory, hf_dir) for r in self.ranks])

    def load_checkpoint(self, directory: str) -> None:
        ray.get([r.load_checkpoint.remote(directory) for r in self.ranks])

    def parameter_checksum(self) -> float:
        return ray.get([r.parameter_checksum.remote() for r in self.ranks])[0]

    def shutdown(self) -> None:
        for r in self.ranks:
            ray.kill(r)
        self.ranks = []


def merge_rank_metrics(results: list[dict]) -> dict[str, float]:
    """Weighted means over ranks (maxima for ``*_max`` keys); the loss is averaged over ranks."""
    merged: dict[str, float] = {}
    keys = {k for r in results for k in r if not k.startswith("_")}
    for key in keys:
        values = [(r[key], r.get("_weights", {}).get(key, 1.0)) for r in results if key in r]
        if key.endswith("_max"):
            merged[key] = max(v for v, _ in values)
        elif key in ("lr", "grad_norm", "time/learner_compute"):
            merged[key] = max(v for v, _ in values) if key != "lr" else values[0][0]
        elif key == "loss/policy":
            merged[key] = sum(v for v, _ in values)
        else:
            total = sum(w for _, w in values)
            merged[key] = sum(v * w for v, w in values) / total if total else 0.0
    return merged
