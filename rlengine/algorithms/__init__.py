"""Pure tensor functions of the GRPO family (no Ray, no model).

Advantages (``compute_advantages``), policy losses (``compute_policy_loss``) and their
aggregation, KL to a reference policy, entropy, DAPO overlong shaping, truncated importance
sampling, BAPO bound adaptation, multi-objective weighting (hypervolume, mirror descent), and
the named presets. See ``docs/algorithms.md``.
"""

from .advantages import ADVANTAGES, compute_advantages, overlong_reward_penalty
from .kl import KL_KINDS, KL_PLACEMENTS, entropy_from_logits, kl_penalty
from .losses import (
    AGGREGATIONS,
    DEFAULT_CLIPS,
    POLICY_LOSSES,
    aggregate_loss,
    bapo_adapt_bounds,
    compute_policy_loss,
    sequence_weights,
    tis_weights,
)
from .multi_objective import (
    hypervolume,
    hypervolume_contribution,
    hypervolume_multiplier,
    influence_scores,
    mirror_descent_weights,
    pareto_front,
    recap_weights,
)
from .presets import PRESETS, Preset, apply_preset

__all__ = [
    "ADVANTAGES",
    "AGGREGATIONS",
    "DEFAULT_CLIPS",
    "KL_KINDS",
    "KL_PLACEMENTS",
    "POLICY_LOSSES",
    "PRESETS",
    "Preset",
    "hypervolume",
    "hypervolume_contribution",
    "hypervolume_multiplier",
    "influence_scores",
    "mirror_descent_weights",
    "pareto_front",
    "recap_weights",
    "aggregate_loss",
    "apply_preset",
    "bapo_adapt_bounds",
    "compute_advantages",
    "compute_policy_loss",
    "entropy_from_logits",
    "kl_penalty",
    "overlong_reward_penalty",
    "sequence_weights",
    "tis_weights",
]
