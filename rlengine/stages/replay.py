"""Replay stages: whether past groups are mixed into the batch, and how objectives are weighted.

- ``none``: the batch is the fresh groups.
- ``uniform``: a buffer of past groups; each step ``ratio`` of the batch's groups are drawn from
  it uniformly (among those at most ``max_staleness`` policy versions old), and that many fewer
  fresh prompts are rolled out.
- ``recap``: ``uniform`` plus RECAP objective reweighting (arXiv 2510.21978): per-objective
  weights λ_k from each objective's convergence and instability over a window, applied to the
  per-objective advantage terms A = Σ_k λ_k · w_k · A(r_k).

A replayed group keeps what it was sampled with: prompt and response token ids, vLLM's behaviour
logprobs, the reward **vector**, the pass rate and the policy version. The trainer recomputes its
scalar reward with the current weights and its advantages. It is a stale sample, trained with
``algorithm.off_policy_correction`` (default ``decoupled``: the ratio against the proximal policy
recomputed by the learner, each token weighted by min(π_prox / π_behaviour, C); see
docs/algorithms.md). See docs/replay.md.
"""

from __future__ import annotations

import random
import statistics
import warnings
from collections import deque
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np

from rlengine.algorithms.multi_objective import recap_weights
from rlengine.episode import Group, pack_groups, unpack_groups
from rlengine.samples import Sample, objective_advantages
from rlengine.schema import Count, Positive, Range
from rlengine.stages.registry import Replay, StageContext, register


@dataclass
class NoReplayConfig:
    name: str = "none"
    """Stage name."""


@register("replay", "none", NoReplayConfig)
class NoReplay(Replay):
    """No replay: the batch is the fresh groups."""

    def __init__(self, config: NoReplayConfig, context: StageContext) -> None:
        self.config = config

    def mix(self, groups: list[Group], step: int) -> list[Group]:
        """Return the groups to train on this step (fresh plus replayed)."""
        return groups


@dataclass
class UniformReplayConfig:
    name: str = "uniform"
    """Stage name."""
    capacity: Count = 256
    """Groups the buffer holds; when full, the oldest group is evicted first."""
    ratio: Annotated[float, Range(0, 1, high_open=True)] = 0.25
    """Share of each batch's groups taken from the buffer, in [0, 1): round(ratio · batch_size)
    groups, as long as that many are eligible; that many fewer fresh prompts are rolled out."""
    max_staleness: Count = 4
    """Oldest policy version a replayed group may come from, in steps before the current one;
    older groups are dropped from the buffer."""
    store: Literal["all", "informative"] = "informative"
    """Which trained fresh groups enter the buffer: all, or only those whose rewards differ (a
    group with equal rewards has zero advantages and teaches nothing)."""
    checkpoint_max_mb: Positive = 512.0
    """Size limit of the buffer in a checkpoint; past it the oldest groups are left out (warned)."""


@dataclass
class RecapReplayConfig(UniformReplayConfig):
    name: str = "recap"
    """Stage name."""
    window: Count = 10
    """RECAP's window W: convergence compares the mean loss of the last W steps with the W before."""
    temperature: Positive = 5.0
    """RECAP's softmax temperature T."""


class ReplayBuffer:
    """Past groups, oldest first, with FIFO eviction at ``capacity`` and a staleness limit."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.groups: deque[Group] = deque()

    def __len__(self) -> int:
        return len(self.groups)

    def add(self, groups: list[Group]) -> None:
        for group in groups:
            self.groups.append(group)
            while len(self.groups) > self.capacity:
                self.groups.popleft()

    def drop_stale(self, step: int, max_staleness: int) -> None:
        """Remove groups more than ``max_staleness`` policy versions behind ``step``."""
        self.groups = deque(g for g in self.groups if step - g.policy_version <= max_staleness)

    def sample(self, count: int, rng: random.Random) -> list[Group]:
        """``count`` distinct groups, uniformly (fewer if the buffer holds fewer)."""
        return rng.sample(list(self.groups), min(count, len(self.groups)))


def packed_bytes(packed: dict) -> int:
    return sum(v.nbytes if isinstance(v, np.ndarray) else len(str(v)) for v in packed.values())


@register("replay", "uniform", UniformReplayConfig)
class UniformReplay(Replay):
    """A FIFO buffer of past groups; a share of every batch is drawn from it uniformly."""

    def __init__(self, config: UniformReplayConfig, context: StageContext) -> None:
        self.config, self.context = config, context
        self.buffer = ReplayBuffer(config.capacity)
        self.pending = 0
        self.used: list[Group] = []

    def reserve(self, batch_size: int, step: int) -> int:
        """Groups this step takes from the buffer: round(ratio · batch_size), at most as many as are
        eligible (so the first step, with an empty buffer, rolls out the whole batch)."""
        self.buffer.drop_stale(step, self.config.max_staleness)
        self.pending = min(round(self.config.ratio * batch_size), len(self.buffer))
        return self.pending

    def mix(self, groups: list[Group], step: int) -> list[Group]:
        rng = random.Random(self.context.seed * 1_000_003 + step)
        self.used = self.buffer.sample(self.pending, rng)
        self.pending = 0
        return groups + self.used

    def observe(self, groups: list[Group], step: int) -> dict[str, float]:
        """Store the fresh groups just trained (``step`` is the new policy version)."""
        fresh = [g for g in groups if g.policy_version == step - 1]
        if self.config.store == "informative":
            fresh = [g for g in fresh if g.informative]
        self.buffer.add(fresh)
        staleness = [step - 1 - g.policy_version for g in self.used]
        metrics = {
            "replay/size": float(len(self.buffer)),
            "replay/used": float(len(self.used)),
            "replay/mean_staleness": statistics.fmean(staleness) if staleness else 0.0,
            "replay/max_staleness": float(max(staleness, default=0)),
        }
        self.used = []
        return metrics

    def state_dict(self) -> dict:
        groups = list(self.buffer.groups)
        packed = pack_groups(groups, self.context.objectives)
        limit = self.config.checkpoint_max_mb * 2**20
        if packed_bytes(packed) > limit:
            while groups and packed_bytes(packed) > limit:
                groups = groups[max(1, len(groups) // 8) :]
                packed = pack_groups(groups, self.context.objectives)
            warnings.warn(
                f"replay: the buffer is over replay.checkpoint_max_mb = {self.config.checkpoint_max_mb}; "
                f"the checkpoint keeps its newest {len(groups)} of {len(self.buffer)} groups",
                stacklevel=2,
            )
        return {"buffer": packed}

    def load_state_dict(self, state: dict) -> None:
        self.buffer = ReplayBuffer(self.config.capacity)
        self.buffer.add(unpack_groups(state["buffer"]))


@register("replay", "recap", RecapReplayConfig)
class RecapReplay(UniformReplay):
    """Uniform replay plus RECAP's per-objective weights on the advantage terms."""

    def __init__(self, config: RecapReplayConfig, context: StageContext) -> None:
        super().__init__(config, context)
        self.losses: dict[str, deque[float]] = {
            k: deque(maxlen=2 * config.window) for k in context.objectives
        }

    def weights(self) -> dict[str, float]:
        """λ_k per objective (all 1 until 2W steps of history)."""
        names = list(self.losses)
        values = recap_weights(
            [list(self.losses[k]) for k in names], self.config.window, self.config.temperature
        )
        return dict(zip(names, values))

    def before_update(self, groups: list[Group], samples: list[Sample]) -> tuple[list[float], dict[str, float]]:
        """Each sample's advantage becomes Σ_k λ_k · w_k · A(r_k)."""
        objectives = self.context.objectives
        weights = self.context.objective_weights()
        lambdas = self.weights()
        per_objective = objective_advantages(self.context.algorithm, groups, samples, objectives)
        values = sum(lambdas[k] * weights[k] * per_objective[j] for j, k in enumerate(objectives))
        return values.tolist(), {f"replay/weight/{k}": v for k, v in lambdas.items()}

    def observe(self, groups: list[Group], step: int) -> dict[str, float]:
        """Also record each objective's loss L_k = 1 − mean score over the trained batch."""
        responses = [e for g in groups for e in g.episodes]
        if responses:
            for k, history in self.losses.items():
                history.append(1.0 - statistics.fmean(r.scores[k] for r in responses))
        return super().observe(groups, step)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "losses": {k: list(v) for k, v in self.losses.items()}}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        for k, values in state["losses"].items():
            self.losses[k] = deque(values, maxlen=2 * self.config.window)
