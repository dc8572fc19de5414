"""Replay stages: whether past groups are mixed into the batch, and how objectives are weighted.

- ``none``: the batch is the fresh groups.
- ``uniform``: a buffer of past groups; each step ``ratio`` of the batch's groups are drawn from
  it uniformly (among those at most ``max_staleness`` policy versions old), and that many fewer
  fresh prompts are rolled out.
- ``recent``: as ``uniform``, drawing the newest eligible groups instead.
- ``recap`` (rlengine/stages/recap.py): RECAP's replay of other domains (RL and supervised
  sources) with λ_k on every objective's loss term; self-replay composes with it.

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

from rlengine.episode import Group, pack_groups, unpack_groups
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
class RecentReplayConfig(UniformReplayConfig):
    name: str = "recent"
    """Stage name."""


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

    def newest(self, count: int) -> list[Group]:
        """The ``count`` most recently added groups, oldest first (fewer if the buffer holds fewer)."""
        return list(self.groups)[len(self.groups) - min(count, len(self.groups)) :]


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
        self.used = self.sample_buffer(self.pending, step)
        self.pending = 0
        return groups + self.used

    def sample_buffer(self, count: int, step: int) -> list[Group]:
        """The ``count`` past groups replayed this step: drawn uniformly, seeded by the step."""
        return self.buffer.sample(count, random.Random(self.context.seed * 1_000_003 + step))

    def observe(self, groups: list[Group], step: int) -> dict[str, float]:
        """Store the fresh groups just trained (``step`` is the new policy version)."""
        fresh = [g for g in groups if g.policy_version == step - 1]
        if self.config.store == "informative":
            fresh = [g for g in fresh if g.informative]
        if self.config.ratio > 0:  # nothing is stored when nothing will be replayed (recap's default)
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


@register("replay", "recent", RecentReplayConfig)
class RecentReplay(UniformReplay):
    """As ``uniform``, but each step replays the newest eligible groups of the buffer."""

    def sample_buffer(self, count: int, step: int) -> list[Group]:
        return self.buffer.newest(count)
