"""Reward-weighting stages: how several reward objectives become one scalar per response.

R = Σ_k w_k r_k for every response (arXiv 2509.11452; docs/reward_weighting.md). Three stages:

- ``static``: the weights written in ``reward.functions`` (default 1.0 each), as written.
- ``hypervolume``: static weights, and every ``every_n_steps`` the objective vector measured on the
  held-out validation slice (``data.validation_size``) is compared with a Pareto buffer. Its
  hypervolume contribution HVC gives m = 0.5 + 1.5·tanh(HVC), which scales the **advantages** of
  the following steps. Scaling the rewards instead would do nothing under GRPO (the group std
  normalisation divides any batch-wide scale out), so m acts as a step size on the policy-gradient
  term: bigger steps while the front moves out, half steps while it does not.
- ``gradient``: weights on the simplex, moved by mirror descent toward the objectives whose policy
  gradients agree most with the others': s_k = Σ_j ⟨g_k, g_j⟩, w ← softmax(log w + η·s/λ), with
  g_k the gradient of the policy loss under objective k's own advantages, on the last ``layers``
  blocks, computed by the learner ranks (any ZeRO stage, any number of ranks).

Every stage logs ``weights/<objective>`` each step. ``before_update(groups, samples)`` is the
hook the trainer calls between building the learner samples and the update (it returns the
advantages to train with); the trainer reports its time as ``time/reward_weighting``.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Annotated

from rlengine.algorithms.multi_objective import (
    hypervolume,
    hypervolume_contribution,
    hypervolume_multiplier,
    influence_scores,
    mirror_descent_weights,
    pareto_front,
)
from rlengine.episode import Group
from rlengine.samples import Sample, objective_advantages
from rlengine.schema import Count, NonNegativeInt, Positive, Range
from rlengine.stages.registry import RewardWeighting, StageContext, register, unchanged_advantages


@dataclass
class StaticWeightingConfig:
    name: str = "static"
    """Stage name."""
    weights: dict[str, float] = field(default_factory=dict)
    """Per-objective weight overrides (objective name -> weight); others keep their reward weight."""


@dataclass
class HypervolumeWeightingConfig:
    name: str = "hypervolume"
    """Stage name."""
    weights: dict[str, float] = field(default_factory=dict)
    """Per-objective weight overrides, as for ``static``."""
    every_n_steps: Count = 5
    """Measure the validation slice every N steps (at step 0, then N, 2N ...); the multiplier holds
    until the next measurement."""
    responses: Count = 4
    """Responses rolled out per validation prompt."""


@dataclass
class GradientWeightingConfig:
    name: str = "gradient"
    """Stage name."""
    weights: dict[str, float] = field(default_factory=dict)
    """Initial weights (objective -> weight, others keep their reward weight), normalised to sum to 1."""
    lambda_: Positive = 1e-4
    """Temperature λ of the mirror-descent step w ← softmax(log w + η·s/λ); η is the policy's
    current learning rate. Smaller moves the weights faster (the paper uses 1e-5 … 1e-4)."""
    every_n_steps: Count = 1
    """Update the weights every N steps (each update costs one forward and one backward per
    objective over the batch, down to the first of the chosen layers)."""
    layers: NonNegativeInt = 2
    """Gradients are taken on the parameters of the last N transformer blocks; 0 = all parameters."""
    min_weight: Annotated[float, Range(0, 1, high_open=True)] = 0.0
    """Floor for every weight (then renormalised), so no objective is switched off for good."""


class ObjectiveWeights(RewardWeighting):
    """Weights per objective, the weighted sum, the ``weights/<objective>`` metrics and the state.
    ``reward_weighting.weights`` names only objectives of ``reward.functions`` (rlengine/validation.py)."""

    def __init__(self, config: StaticWeightingConfig, context: StageContext) -> None:
        self.config, self.context = config, context
        self.weights = {**dict(zip(context.objectives, context.reward_weights)), **config.weights}

    def combine(self, scores: dict[str, list[float]]) -> list[float]:
        """Per-response scalar reward from per-objective scores."""
        count = len(next(iter(scores.values()))) if scores else 0
        return [sum(self.weights[k] * scores[k][i] for k in scores) for i in range(count)]

    def observe(self, scores: dict[str, list[float]]) -> dict[str, float]:
        return {f"weights/{k}": w for k, w in self.weights.items()}

    def state_dict(self) -> dict:
        return {"weights": dict(self.weights)}

    def load_state_dict(self, state: dict) -> None:
        self.weights = dict(state["weights"])


@register("reward_weighting", "static", StaticWeightingConfig)
class StaticWeighting(ObjectiveWeights):
    """Fixed linear combination of objectives."""


@register("reward_weighting", "hypervolume", HypervolumeWeightingConfig)
class HypervolumeWeighting(ObjectiveWeights):
    """Static weights; advantages scaled by how much the last validation point pushed the Pareto front."""

    def __init__(self, config: HypervolumeWeightingConfig, context: StageContext) -> None:
        super().__init__(config, context)
        self.steps = 0
        self.multiplier = 1.0
        self.reference: list[float] | None = None
        self.buffer: list[list[float]] = []
        self.last: dict[str, float] = {}

    def measure(self) -> list[float]:
        """Mean of every objective over the validation slice, under the current policy."""
        groups = self.context.rollout.generate(self.context.validation_rows, self.config.responses)
        return objective_means(groups, self.context.objectives)

    def before_update(self, groups: list[Group], samples: list[Sample]) -> tuple[list[float], dict[str, float]]:
        """Every ``every_n_steps``, measure the validation slice and update the multiplier m; the
        advantages are scaled by m."""
        if self.steps % self.config.every_n_steps == 0:
            point = self.measure()
            if self.reference is None:  # the first point is the reference: nothing dominated yet
                self.reference, self.buffer, self.multiplier = point, [point], 1.0
                contribution = 0.0
            else:
                contribution = hypervolume_contribution(self.buffer, point, self.reference)
                self.multiplier = hypervolume_multiplier(contribution)
                if contribution > 0:
                    self.buffer = [list(p) for p in pareto_front([*self.buffer, point])]
            self.last = {
                "reward_weighting/contribution": contribution,
                **{f"reward_weighting/validation/{k}": v for k, v in zip(self.context.objectives, point)},
            }
        self.steps += 1
        return [self.multiplier * a for a in unchanged_advantages(samples)], {
            **self.last,
            "reward_weighting/multiplier": self.multiplier,
            "reward_weighting/hypervolume": hypervolume(self.buffer, self.reference or [])
            if self.buffer
            else 0.0,
            "reward_weighting/pareto_size": float(len(self.buffer)),
        }

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "steps": self.steps,
            "multiplier": self.multiplier,
            "reference": self.reference,
            "buffer": [list(p) for p in self.buffer],
            "last": dict(self.last),
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.steps, self.multiplier = state["steps"], state["multiplier"]
        self.reference, self.buffer, self.last = state["reference"], state["buffer"], state["last"]


@register("reward_weighting", "gradient", GradientWeightingConfig)
class GradientWeighting(ObjectiveWeights):
    """Weights moved by mirror descent on the influence of each objective's policy gradient."""

    def __init__(self, config: GradientWeightingConfig, context: StageContext) -> None:
        super().__init__(config, context)  # weights >= 0, min_weight < 1/K: rlengine/validation.py
        total = sum(self.weights.values())
        self.weights = {k: w / total for k, w in self.weights.items()}
        self.steps = 0
        self.last: dict[str, float] = {}

    def before_update(self, groups: list[Group], samples: list[Sample]) -> tuple[list[float], dict[str, float]]:
        """Every ``every_n_steps``, one mirror-descent step on the weights from the learner's
        per-objective gradients (the advantages are not changed)."""
        due = self.steps % self.config.every_n_steps == 0
        self.steps += 1
        if due and samples and self.context.learner is not None:
            advantages = objective_advantages(self.context.algorithm, groups, samples, self.context.objectives)
            result = self.context.learner.objective_gradients(
                samples, [a.tolist() for a in advantages], self.config.layers
            )
            self.update(result["gram"], result["lr"])
        return unchanged_advantages(samples), dict(self.last)

    def update(self, gram: list[list[float]], lr: float) -> None:
        """One mirror-descent step from the Gram matrix of the per-objective gradients."""
        names = list(self.weights)
        influence = influence_scores(gram)
        new = mirror_descent_weights([self.weights[k] for k in names], influence, lr, self.config.lambda_)
        floor = self.config.min_weight
        if floor > 0:
            new = [max(w, floor) for w in new]
            new = [w / sum(new) for w in new]
        self.weights = dict(zip(names, new))
        self.last = {
            **{f"reward_weighting/influence/{k}": s for k, s in zip(names, influence)},
            **{
                f"reward_weighting/grad_norm/{k}": math.sqrt(max(gram[i][i], 0.0))
                for i, k in enumerate(names)
            },
        }

    def state_dict(self) -> dict:
        return {**super().state_dict(), "steps": self.steps, "last": dict(self.last)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.steps, self.last = state["steps"], state["last"]


def objective_means(groups: list[Group], objectives: list[str]) -> list[float]:
    """The mean score of every objective over all responses of ``groups``."""
    return [statistics.fmean(e.scores[k] for g in groups for e in g.episodes) for k in objectives]
