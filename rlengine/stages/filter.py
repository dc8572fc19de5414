"""Filter stage: which rolled-out groups the learner trains on.

``none`` keeps every group. Later choices (``nonzero_variance``, ``balanced``) drop groups
whose pass rate is outside a band and call ``refill`` to roll out more prompts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rlengine.batch import Group
from rlengine.stages import StageContext, register

Refill = Callable[[int], list[Group]]
"""``refill(num_prompts)`` selects more prompts from the curriculum, rolls them out and scores them."""


@dataclass
class NoFilterConfig:
    name: str = "none"
    """Stage name."""


@register("filter", "none", NoFilterConfig)
class NoFilter:
    """Keeps every group."""

    def __init__(self, config: NoFilterConfig, context: StageContext) -> None:
        self.config = config

    def keep(self, groups: list[Group], target: int, refill: Refill) -> tuple[list[Group], dict[str, float]]:
        """Return the groups to train on (ideally ``target`` of them) and stage metrics."""
        return groups, {"filter/kept_fraction": 1.0, "filter/rounds": 1.0, "filter/extra_rollouts": 0.0}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
