"""Replay stage: whether past groups are mixed into the batch, and how they are weighted.

``none`` trains on the fresh groups only. Later choices (``uniform``, ``recap``) keep a
buffer of past groups with their per-objective reward vectors and re-scalarise them.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlengine.batch import Group
from rlengine.stages.registry import StageContext, register


@dataclass
class NoReplayConfig:
    name: str = "none"
    """Stage name."""


@register("replay", "none", NoReplayConfig)
class NoReplay:
    """No replay: the batch is the fresh groups."""

    def __init__(self, config: NoReplayConfig, context: StageContext) -> None:
        self.config = config

    def mix(self, groups: list[Group], step: int) -> list[Group]:
        """Return the groups to train on this step (fresh plus replayed)."""
        return groups

    def observe(self, groups: list[Group], step: int) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
