"""Pure tensor functions of the GRPO family (no Ray, no model).

Advantages (``compute_advantages``), policy losses (``compute_policy_loss``) and their
aggregation, KL to a reference policy, entropy, DAPO overlong shaping, truncated importance
sampling, BAPO bound adaptation, multi-objective weighting (hypervolume, mirror descent), and
the named presets. Estimators and losses are registered functions (``registry.py``), so
``algorithm.advantage`` / ``algorithm.loss`` may also name a plug-in ``file.py:function``. See
``docs/algorithms.md``.
"""

from .advantages import (
    compute_advantages,
    group_constant,
    group_mean,
    group_size,
    group_std,
    group_sum,
    overlong_reward_penalty,
    whiten,
)
from .kl import KL_KINDS, KL_PLACEMENTS, entropy_from_logits, kl_penalty
from .losses import (
    AGGREGATIONS,
    BAPO_SHARES,
    aggregate_loss,
    bapo_adapt_bounds,
    bapo_positive_share,
    clipped_surrogate,
    compute_policy_loss,
    sequence_weights,
    tis_weights,
    token_log_ratio,
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
from .registry import (
    ADVANTAGES,
    POLICY_LOSSES,
    AdvantageEstimator,
    PolicyLoss,
    PolicyLossOutput,
    advantage_estimator,
    policy_loss,
    register_advantage,
    register_policy_loss,
    with_absolute_plugins,
)

__all__ = [
    "ADVANTAGES",
    "AGGREGATIONS",
    "KL_KINDS",
    "KL_PLACEMENTS",
    "POLICY_LOSSES",
    "PRESETS",
    "AdvantageEstimator",
    "PolicyLoss",
    "PolicyLossOutput",
    "Preset",
    "advantage_estimator",
    "aggregate_loss",
    "apply_preset",
    "BAPO_SHARES",
    "bapo_adapt_bounds",
    "bapo_positive_share",
    "clipped_surrogate",
    "compute_advantages",
    "compute_policy_loss",
    "entropy_from_logits",
    "group_constant",
    "group_mean",
    "group_size",
    "group_std",
    "group_sum",
    "hypervolume",
    "hypervolume_contribution",
    "hypervolume_multiplier",
    "influence_scores",
    "kl_penalty",
    "mirror_descent_weights",
    "overlong_reward_penalty",
    "pareto_front",
    "policy_loss",
    "recap_weights",
    "register_advantage",
    "register_policy_loss",
    "sequence_weights",
    "tis_weights",
    "token_log_ratio",
    "whiten",
    "with_absolute_plugins",
]
