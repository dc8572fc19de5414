"""Filter stage: which rolled-out groups the learner trains on.

``none`` keeps every group. ``balanced`` (balanced online difficulty filtering, arXiv 2504.03380)
keeps groups whose pass rate ``p`` lies in ``[low, high]``; ``nonzero_variance`` (DAPO dynamic
sampling) keeps groups with ``0 < p < 1`` and is the same code with an open band. ``p`` is
:attr:`Group.pass_rate`, the fraction of responses whose first objective passed, never the
scalar reward.

Refill. Round 1 is the trainer's initial rollout of ``target`` prompts. Groups carried over from
the previous step are used first, then the new groups that pass. While fewer than ``target``
groups are kept and fewer than ``max_rounds`` rounds were done, one more round asks ``refill``
for ``ceil(shortfall / keep_rate)`` prompts, where ``keep_rate`` is the fraction of this step's
new groups that passed so far, floored at ``1 / max_oversample`` (so a round asks for between
``shortfall`` and ``max_oversample * shortfall`` prompts). When ``max_rounds`` is reached the step
trains on what was kept, possibly fewer than ``target`` groups (possibly none: the trainer then
skips the update); ``filter/shortfall`` records it.

Carry-over (``carry_over: true``; off by default, as in DAPO, which drops surplus groups). Kept
groups beyond ``target`` go to a buffer (at most ``max_carry`` groups, oldest dropped first) that
is part of the stage state, so it is checkpointed, and that is used first at the next step.
Carried groups are older than the current policy (one version with the default ``max_carry``), so
their samples are stale and trained with ``algorithm.off_policy_correction`` (default
``decoupled``: ratio against the learner's proximal logprobs, tokens weighted by
min(π_prox / π_behaviour, C); ``behaviour_as_old``: vLLM's behaviour logprobs as π_old).
Their scalar rewards are recomputed with the current reward weights.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Annotated

from rlengine.episode import Group, pack_groups, unpack_groups
from rlengine.errors import ConfigError
from rlengine.schema import Count, Fraction, NonNegativeInt, Range
from rlengine.stages.registry import Filter, Refill, StageContext, register

log = logging.getLogger(__name__)
_TOL = 1e-9


@dataclass
class NoFilterConfig:
    name: str = "none"
    """Stage name."""


@register("filter", "none", NoFilterConfig)
class NoFilter(Filter):
    """Keeps every group."""

    def __init__(self, config: NoFilterConfig, context: StageContext) -> None:
        self.config = config

    def keep(self, groups: list[Group], target: int, refill: Refill) -> tuple[list[Group], dict[str, float]]:
        """Return the groups to train on (ideally ``target`` of them) and stage metrics."""
        return groups, {
            "filter/kept_fraction": 1.0,
            "filter/rounds": 1.0,
            "filter/extra_rollouts": 0.0,
            "filter/carried_over": 0.0,
        }


@dataclass
class NonzeroVarianceConfig:
    name: str = "nonzero_variance"
    """Stage name."""
    max_rounds: Count = 4
    """Most rollout rounds per step, the initial rollout counting as round 1 (1 = never refill)."""
    carry_over: bool = False
    """Keep kept groups beyond ``trainer.batch_size`` for the next step, where they are used first.
    Off by default, as in DAPO. Carried groups are one policy version old: the learner trains them
    with their behaviour (vLLM) logprobs as ``old_logprobs``, so the PPO ratio sees the staleness."""
    max_carry: NonNegativeInt | None = None
    """Most groups in the carry buffer (oldest dropped first); ``null`` = one batch (``trainer.batch_size``)."""
    max_oversample: Annotated[float, Range(1)] = 4.0
    """A refill round asks for at most ``max_oversample`` x the missing number of groups, in prompts."""


@dataclass
class BalancedFilterConfig(NonzeroVarianceConfig):
    name: str = "balanced"
    """Stage name."""
    low: Fraction = 0.2
    """Smallest pass rate kept (inclusive). 0.2 and 0.8 are the band reported for arXiv 2504.03380 by
    secondary sources, unverified against the paper."""
    high: Fraction = 0.8
    """Largest pass rate kept (inclusive)."""

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ConfigError(f"filter.low ({self.low}) must be <= filter.high ({self.high})")


def refill_size(shortfall: int, kept: int, generated: int, max_oversample: float) -> int:
    """Prompts to ask for when ``shortfall`` groups are missing and ``kept`` of ``generated`` passed.

    ``ceil(shortfall / keep_rate)``, with the keep rate floored at ``1 / max_oversample``.
    """
    cap = math.ceil(shortfall * max_oversample - 1e-9)
    if kept <= 0 or generated <= 0:
        return max(shortfall, cap)
    return max(shortfall, min(cap, -(-shortfall * generated // kept)))


@register("filter", "balanced", BalancedFilterConfig)
class BalancedFilter(Filter):
    """Keeps groups whose pass rate is in ``[low, high]``, refilling and carrying over surplus."""

    def __init__(self, config: BalancedFilterConfig, context: StageContext) -> None:
        self.config = config
        self.objectives = context.objectives
        self.buffer: list[Group] = []

    def accepts(self, group: Group) -> bool:
        p = group.pass_rate
        return self.config.low - _TOL <= p <= self.config.high + _TOL

    def keep(self, groups: list[Group], target: int, refill: Refill) -> tuple[list[Group], dict[str, float]]:
        """Return up to ``target`` groups to train on (carried first) and the stage metrics."""
        cfg = self.config
        carried, self.buffer = self.buffer[:target], self.buffer[target:]
        kept = list(carried)
        passed = [g for g in groups if self.accepts(g)]
        kept += passed
        generated, num_passed, rounds, extra = len(groups), len(passed), 1, 0
        while len(kept) < target and rounds < cfg.max_rounds:
            new = refill(refill_size(target - len(kept), num_passed, generated, cfg.max_oversample))
            rounds += 1
            extra += sum(len(g.episodes) for g in new)
            generated += len(new)
            passed = [g for g in new if self.accepts(g)]
            num_passed += len(passed)
            kept += passed
            if not new:
                break
        batch, surplus = kept[:target], kept[target:]
        leftover = self.buffer + surplus
        cap = (target if cfg.max_carry is None else cfg.max_carry) if cfg.carry_over else 0
        self.buffer = leftover[-cap:] if cap > 0 else []
        dropped = len(leftover) - len(self.buffer)
        shortfall = max(0, target - len(batch))
        if shortfall:
            log.warning(
                "filter %s: %d of %d groups kept after %d rounds; training on what was kept",
                self.stage_name,
                len(batch),
                target,
                rounds,
            )
        return batch, {
            "filter/kept_fraction": num_passed / generated if generated else 0.0,
            "filter/rounds": float(rounds),
            "filter/extra_rollouts": float(extra),
            "filter/carried_over": float(len(carried)),
            "filter/carry_buffer": float(len(self.buffer)),
            "filter/dropped": float(dropped),
            "filter/shortfall": float(shortfall),
        }

    def state_dict(self) -> dict:
        return {"buffer": pack_groups(self.buffer, self.objectives)}

    def load_state_dict(self, state: dict) -> None:
        self.buffer = unpack_groups(state["buffer"])


@register("filter", "nonzero_variance", NonzeroVarianceConfig)
class NonzeroVarianceFilter(BalancedFilter):
    """DAPO dynamic sampling: keeps groups with ``0 < pass rate < 1`` (not all wrong, not all right)."""

    def accepts(self, group: Group) -> bool:
        return _TOL < group.pass_rate < 1.0 - _TOL
