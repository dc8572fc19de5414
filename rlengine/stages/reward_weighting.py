"""Reward-weighting stages: how several reward objectives become one scalar per response.

R = Σ_k w_k r_k for every response, with Σ_k w_k = 1 (arXiv 2509.11452; the official code asserts
it; docs/reward_weighting.md has a "paper vs rlengine" table per stage). Four stages:

- ``static``: the weights written in ``reward.functions`` (default 1.0 each), normalised to sum to 1.
- ``gdpo``: static weights; the advantages are GDPO's (arXiv 2601.05242): each objective
  normalised within its group, the weighted sum normalised over the batch.
- ``hypervolume``: static weights, and every ``every_n_steps`` the objective vector measured on the
  held-out validation slice (``data.validation_size``) is compared with a Pareto buffer. Its
  hypervolume contribution HVC, in units of the per-objective ``scale`` (so it is of order 1 when
  the front moves), gives m = 0.5 + 1.5·tanh(HVC), which scales the **advantages** of the
  following steps. Scaling the rewards instead would do nothing under GRPO (the group std
  normalisation divides any batch-wide scale out), so m acts as a step size on the policy-gradient
  term: bigger steps while the front moves out, half steps while it does not.
- ``gradient``: weights on the simplex, moved by mirror descent toward the objectives whose policy
  gradients agree most with the others': s_k = Σ_j ⟨g_k, g_j⟩ averaged over ``every_n_steps``
  steps, w ← softmax(log w + η·s/λ), with g_k the gradient of the policy loss under objective k's
  own advantages, on the chosen ``layers`` blocks, computed by the learner ranks (any ZeRO stage,
  any number of ranks). The new weights also re-scalarise the batch they were measured on.

Every stage logs ``weights/<objective>`` each step. ``before_update(groups, samples)`` is the
hook the trainer calls between building the learner samples and the update (it returns the
advantages to train with); the trainer reports its time as ``time/reward_weighting``. Every
``before_update`` also takes an empty ``samples`` (a step with nothing to train): it returns no
advantages and still counts the step, so the measurement and update schedules do not shift.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Annotated

import torch

from rlengine.algorithms.multi_objective import (
    gdpo_advantages,
    hypervolume_multiplier,
    influence_scores,
    mirror_descent_weights,
    pareto_front,
    scaled_contribution,
    scaled_hypervolume,
    scaled_reference,
)
from rlengine.episode import Group
from rlengine.errors import ConfigError
from rlengine.samples import Sample, advantages, group_ids, kl_in_reward, objective_advantages
from rlengine.schema import Count, NonNegativeInt, Positive, Range
from rlengine.stages.registry import RewardWeighting, StageContext, register, unchanged_advantages


@dataclass
class StaticWeightingConfig:
    name: str = "static"
    """Stage name."""
    weights: dict[str, float] = field(default_factory=dict)
    """Per-objective weight overrides (objective name -> weight); others keep their reward weight.
    The weights are normalised to sum to 1 (the sum must be > 0)."""


@dataclass
class GdpoWeightingConfig:
    name: str = "gdpo"
    """Stage name."""
    weights: dict[str, float] = field(default_factory=dict)
    """Per-objective weight overrides, as for ``static`` (normalised to sum to 1)."""
    batch_normalize: bool = True
    """Normalise the weighted sum of the per-objective group-normalised advantages over the batch,
    (S − mean S) / (std S + ε), as the GDPO paper (arXiv 2601.05242) and TRL's
    ``normalize_then_sum`` do; false keeps the weighted sum as it is."""


@dataclass
class HypervolumeWeightingConfig:
    name: str = "hypervolume"
    """Stage name."""
    weights: dict[str, float] = field(default_factory=dict)
    """Per-objective weight overrides, as for ``static`` (normalised to sum to 1)."""
    every_n_steps: Count = 5
    """Measure the validation slice every N steps (at step 0, then N, 2N ...); the multiplier holds
    until the next measurement. The official code measures every step."""
    responses: Count = 4
    """Responses rolled out per validation prompt."""
    scale: Positive = 0.05
    """Objective change that counts as one unit of the hypervolume: every validation objective is
    divided by its scale before HV and HVC are taken (HVC in units of Π scale_k), and the reference
    point sits one unit below the first measurement. About one standard error of a validation mean,
    sqrt(p(1 − p) / (validation_size · responses)), is a good value: 0.05 for 32 × 4 responses."""
    scales: dict[str, Positive] = field(default_factory=dict)
    """Per-objective overrides of ``scale`` (objective name -> scale > 0)."""
    length_objectives: list[str] | None = None
    """Objectives measured on the validation slice from the raw response length instead of their
    reward (a stationary scale): the share of validation responses shorter than
    ``length_threshold`` tokens. Null = ``[conciseness]`` when ``conciseness`` is an objective,
    else none; ``[]`` measures every objective by its reward."""
    length_threshold: Count | None = None
    """Token threshold of ``length_objectives``; null = frozen at the first measurement, as the mean
    token length of that validation rollout's responses (checkpointed)."""


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
    """Update the weights every N steps from the influence averaged over those N steps (the official
    ``weight_accumulation_steps``). The per-objective gradients are taken every step: one forward
    and one backward per objective over the batch, down to the first of the chosen layers."""
    layers: NonNegativeInt | list[NonNegativeInt] = 2
    """Blocks whose parameters the gradients are taken on: an int N = the last N transformer blocks
    (0 = all parameters), or a list of block ids (0-based, e.g. ``[10, 11, ..., 25]``: the official
    code's blocks 10–25 of Qwen3-8B's 36)."""
    min_weight: Annotated[float, Range(0, 1, high_open=True)] = 0.0
    """Floor for every weight (then renormalised), so no objective is switched off for good."""


class ObjectiveWeights(RewardWeighting):
    """Weights per objective, the weighted sum, the ``weights/<objective>`` metrics and the state.
    ``reward_weighting.weights`` names only objectives of ``reward.functions`` (rlengine/validation.py).

    The weights are normalised to Σ_k w_k = 1, as the official code of arXiv 2509.11452 asserts.
    Under std-normalised GRPO (and GDPO) a common scale of the weights cancels; under ``dr_grpo``,
    ``rloo`` or the reinforce_pp estimators it scales the advantages, so a run with K objectives of
    weight 1 trains with advantages 1/K of what unnormalised weights gave."""

    def __init__(self, config: StaticWeightingConfig, context: StageContext) -> None:
        self.config, self.context = config, context
        self.weights = normalised_weights(
            {**dict(zip(context.objectives, context.reward_weights)), **config.weights}
        )

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


@register("reward_weighting", "gdpo", GdpoWeightingConfig)
class GdpoWeighting(ObjectiveWeights):
    """Static weights; GDPO's advantages (arXiv 2601.05242) in place of the estimator's.

    For each objective k, A_k = (r_k − mean_g r_k) / (std_g r_k + ε) within every group (GRPO's
    normalisation, ε = ``algorithm.eps``); S = Σ_k w_k A_k; with ``batch_normalize`` the
    advantage is (S − mean S) / (std S + ε) over the batch. Unlike GRPO on the weighted sum,
    responses with different objective vectors but the same weighted sum keep different
    advantages (GDPO's "reward collapse"). ``algorithm.advantage`` must be ``grpo``; the scalar
    rewards (``combine``) are still the weighted sum, for the logs and for replay.
    """

    def before_update(
        self, groups: list[Group], samples: list[Sample]
    ) -> tuple[list[float], dict[str, float]]:
        """GDPO's advantage of every sample (in the order of ``groups``' episodes)."""
        if not samples:
            return [], {}
        names = list(self.weights)
        scores = [[e.scores[k] for g in groups for e in g.episodes] for k in names]
        eps = getattr(self.context.algorithm, "eps", 1e-6)
        values = gdpo_advantages(
            scores,
            [self.weights[k] for k in names],
            group_ids(groups).tolist(),
            eps=eps,
            batch_normalize=self.config.batch_normalize,
        )
        if len(values) != len(samples):
            raise ValueError(f"gdpo: {len(values)} responses in the groups for {len(samples)} samples")
        # the share of groups in which objective k varies: only those give it a learning signal
        informative = {
            f"reward_weighting/informative/{k}": statistics.fmean(
                len({e.scores[k] for e in g.episodes}) > 1 for g in groups
            )
            for k in names
        }
        return values, informative


@register("reward_weighting", "hypervolume", HypervolumeWeightingConfig)
class HypervolumeWeighting(ObjectiveWeights):
    """Static weights; advantages scaled by how much the last validation point pushed the Pareto front.

    The validation point v_t holds every objective's mean over the validation slice, except that
    the ``length_objectives`` are measured on a stationary scale: the share of responses shorter
    than a fixed token threshold (not the reward's running mean, which drifts and is undefined at
    step 0). Objective k is counted in units of its scale s_k; the reference point is the first
    point less one unit; HVC and HV are in units of Π s_k; m = 0.5 + 1.5·tanh(HVC) (1.0 until
    there is a second point)."""

    def __init__(self, config: HypervolumeWeightingConfig, context: StageContext) -> None:
        super().__init__(config, context)
        self.steps = 0
        self.multiplier = 1.0
        self.reference: list[float] | None = None
        self.buffer: list[list[float]] = []
        self.last: dict[str, float] = {}
        self.threshold: float | None = (
            None if config.length_threshold is None else float(config.length_threshold)
        )
        """Token threshold of the length objectives (frozen at the first measurement when not set)."""
        objectives = context.objectives
        self.scales = [float(config.scales.get(k, config.scale)) for k in objectives]
        chosen = config.length_objectives
        self.length_objectives = (
            (["conciseness"] if "conciseness" in objectives else []) if chosen is None else chosen
        )

    def measure(self) -> list[float]:
        """The validation point under the current policy: the mean of every objective over the
        validation slice, a length objective as the share of responses under the threshold."""
        groups = self.context.rollout.generate(self.context.validation_rows, self.config.responses)
        lengths = [len(e.token_ids) for g in groups for e in g.episodes]
        if self.threshold is None and self.length_objectives and lengths:
            self.threshold = statistics.fmean(lengths)  # frozen from now on
        means = objective_means(groups, self.context.objectives)
        short = statistics.fmean(n < (self.threshold or 0.0) for n in lengths) if lengths else 0.0
        return [short if k in self.length_objectives else m for k, m in zip(self.context.objectives, means)]

    def before_update(
        self, groups: list[Group], samples: list[Sample]
    ) -> tuple[list[float], dict[str, float]]:
        """Every ``every_n_steps`` (counting steps with no samples too), measure the validation slice
        and update the multiplier m; the advantages are scaled by m."""
        if self.steps % self.config.every_n_steps == 0:
            point = self.measure()
            if self.reference is None:  # the first point sets the reference: nothing to compare with yet
                self.reference, self.buffer, self.multiplier = (
                    scaled_reference(point, self.scales),
                    [point],
                    1.0,
                )
                contribution = 0.0
            else:
                contribution = scaled_contribution(self.buffer, point, self.reference, self.scales)
                self.multiplier = hypervolume_multiplier(contribution)
                if contribution > 0:
                    self.buffer = [list(p) for p in pareto_front([*self.buffer, point])]
            self.last = {
                "reward_weighting/contribution": contribution,
                **{f"reward_weighting/validation/{k}": v for k, v in zip(self.context.objectives, point)},
            }
            if self.length_objectives and self.threshold is not None:
                self.last["reward_weighting/length_threshold"] = self.threshold
        self.steps += 1
        return [self.multiplier * a for a in unchanged_advantages(samples)], {
            **self.last,
            **self.front_metrics(),
        }

    def front_metrics(self) -> dict[str, float]:
        """m, the scaled hypervolume of the buffer and its size."""
        volume = (
            scaled_hypervolume(self.buffer, self.reference, self.scales)
            if self.reference is not None
            else 0.0
        )
        return {
            "reward_weighting/multiplier": self.multiplier,
            "reward_weighting/hypervolume": volume,
            "reward_weighting/pareto_size": float(len(self.buffer)),
        }

    def observe(self, scores: dict[str, list[float]]) -> dict[str, float]:
        """The weights and the multiplier the step trained with (logged every step, also when the
        step had nothing to train)."""
        return {**super().observe(scores), "reward_weighting/multiplier": self.multiplier}

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "steps": self.steps,
            "multiplier": self.multiplier,
            "reference": self.reference,
            "buffer": [list(p) for p in self.buffer],
            "last": dict(self.last),
            "threshold": self.threshold,
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.steps, self.multiplier = state["steps"], state["multiplier"]
        self.reference, self.buffer, self.last = state["reference"], state["buffer"], state["last"]
        self.threshold = state.get("threshold", self.threshold)


@register("reward_weighting", "gradient", GradientWeightingConfig)
class GradientWeighting(ObjectiveWeights):
    """Weights moved by mirror descent on the influence of each objective's policy gradient."""

    def __init__(self, config: GradientWeightingConfig, context: StageContext) -> None:
        super().__init__(config, context)  # weights >= 0, min_weight < 1/K: rlengine/validation.py
        self.steps = 0
        self.last: dict[str, float] = {}
        self.window_gram: list[list[float]] | None = None
        """Σ of the Gram matrices of the current update window (None: no gradients yet)."""
        self.window_steps = 0
        """Steps whose gradients are in ``window_gram`` (an empty step adds none)."""
        self.window_lr = 0.0
        """The learning rate the learner reported with the window's latest gradients."""

    def before_update(
        self, groups: list[Group], samples: list[Sample]
    ) -> tuple[list[float], dict[str, float]]:
        """Every step with samples, the learner's per-objective gradients of the batch are added to
        the window. Every ``every_n_steps`` steps (steps with no samples count too), one
        mirror-descent step from the window's average influence, and this batch's advantages are
        recomputed with the new weights (as the official code does); on the other steps the
        advantages are left as they are."""
        self.steps += 1
        if samples and self.context.learner is not None:
            per_objective = objective_advantages(
                self.context.algorithm, groups, samples, self.context.objectives
            )
            result = self.context.learner.objective_gradients(
                samples, [a.tolist() for a in per_objective], self.config.layers
            )
            self.accumulate(result["gram"], result["lr"])
        if self.steps % self.config.every_n_steps != 0 or self.window_gram is None:
            return unchanged_advantages(samples), dict(self.last)
        before, count = dict(self.weights), self.window_steps
        self.update([[x / count for x in row] for row in self.window_gram], self.window_lr)
        self.last["reward_weighting/window_steps"] = float(count)
        self.window_gram, self.window_steps = None, 0
        return (self.rescalarised(groups, samples, before) if samples else []), dict(self.last)

    def accumulate(self, gram: list[list[float]], lr: float) -> None:
        """Add one step's Gram matrix to the update window."""
        if self.window_gram is None:
            self.window_gram = [[float(x) for x in row] for row in gram]
        else:
            self.window_gram = [
                [a + float(b) for a, b in zip(mine, row)] for mine, row in zip(self.window_gram, gram)
            ]
        self.window_steps += 1
        self.window_lr = float(lr)

    def rescalarised(
        self, groups: list[Group], samples: list[Sample], before: dict[str, float]
    ) -> list[float]:
        """The advantages of this batch under the current weights: each episode's scalar reward
        moves by Σ_k (w_k − before_k)·r_k, so whatever else it holds (DAPO's overlong shaping)
        stays; β·KL is subtracted again when the KL is in the reward (one reference pass)."""
        names = list(self.weights)
        rewards = torch.tensor(
            [
                e.reward + sum((self.weights[k] - before[k]) * e.scores[k] for k in names)
                for g in groups
                for e in g.episodes
            ],
            dtype=torch.float32,
        )
        algo = self.context.algorithm
        if algo.kl_coef > 0 and algo.kl_placement == "reward":
            reference = self.context.learner.compute_logprobs(samples, "ref")
            rewards = rewards - algo.kl_coef * kl_in_reward(samples, reference, algo.kl_kind)
        return advantages(algo, rewards, groups, samples).tolist()

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
        return {
            **super().state_dict(),
            "steps": self.steps,
            "last": dict(self.last),
            "window_gram": self.window_gram,
            "window_steps": self.window_steps,
            "window_lr": self.window_lr,
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.steps, self.last = state["steps"], state["last"]
        self.window_gram = state.get("window_gram")
        self.window_steps, self.window_lr = state.get("window_steps", 0), state.get("window_lr", 0.0)


def normalised_weights(weights: dict[str, float]) -> dict[str, float]:
    """``weights`` divided by their sum (which must be > 0), so that Σ_k w_k = 1."""
    total = sum(weights.values())
    if not total > 0:
        raise ConfigError(
            f"reward_weighting: the objective weights are normalised to sum to 1, so their sum must be > 0; "
            f"got {weights}"
        )
    return {k: w / total for k, w in weights.items()}


def objective_means(groups: list[Group], objectives: list[str]) -> list[float]:
    """The mean score of every objective over all responses of ``groups``."""
    return [statistics.fmean(e.scores[k] for g in groups for e in g.episodes) for k in objectives]
