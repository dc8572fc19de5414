"""Rollout generation: a pool of vLLM engines as Ray actors."""

from rlengine.rollout.pool import RolloutPool

__all__ = ["RolloutPool"]
