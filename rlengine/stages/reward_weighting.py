"""Reward-weighting stage: how several reward objectives become one scalar per response.

``static`` uses the weights written in ``reward.functions`` (default 1.0 each), as written:
R = sum_k w_k r_k. Later choices (``hypervolume``, ``gradient``) adapt the weights online.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlengine.stages.registry import StageContext, register


@dataclass
class StaticWeightingConfig:
    name: str = "static"
    """Stage name."""
    weights: dict[str, float] = field(default_factory=dict)
    """Per-objective weight overrides (objective name -> weight); others keep their reward weight."""


@register("reward_weighting", "static", StaticWeightingConfig)
class StaticWeighting:
    """Fixed linear combination of objectives."""

    def __init__(self, config: StaticWeightingConfig, context: StageContext) -> None:
        self.config = config
        self.weights = dict(zip(context.objectives, context.reward_weights))
        unknown = set(config.weights) - set(self.weights)
        if unknown:
            raise ValueError(
                f"reward_weighting.weights: unknown objective(s) {sorted(unknown)}; objectives are {list(self.weights)}"
            )
        self.weights.update(config.weights)

    def combine(self, scores: dict[str, list[float]]) -> list[float]:
        """Per-response scalar reward from per-objective scores."""
        count = len(next(iter(scores.values()))) if scores else 0
        return [sum(self.weights[k] * scores[k][i] for k in scores) for i in range(count)]

    def observe(self, scores: dict[str, list[float]]) -> dict[str, float]:
        return {f"reward_weighting/{k}": w for k, w in self.weights.items()}

    def state_dict(self) -> dict:
        return {"weights": dict(self.weights)}

    def load_state_dict(self, state: dict) -> None:
        self.weights = dict(state["weights"])
