"""Named algorithm presets: the ``algorithm.*`` values that reproduce a paper's objective.

``algorithm.preset: dapo`` in YAML selects one; any ``algorithm.<key>`` given explicitly
overrides the preset's value (see :func:`apply_preset`). Every preset sets every key in
:data:`ALGORITHM_KEYS`, so a resolved preset does not depend on other defaults.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

#: The algorithm config keys a preset may set (field names of the AlgorithmConfig dataclass).
ALGORITHM_KEYS: tuple[str, ...] = (
    "advantage",
    "loss",
    "agg",
    "clip_low",
    "clip_high",
    "dual_clip",
    "kl_coef",
    "kl_kind",
    "kl_placement",
    "entropy_coef",
    "overlong_shaping",
    "overlong_cache",
    "mask_truncated",
    "tis_cap",
)


@dataclass(frozen=True)
class Preset:
    """A named algorithm recipe.

    ``paper``: arXiv id and title of the source. ``description``: what it does and which parts
    live outside these keys (e.g. a filter stage). ``values``: the ``algorithm.*`` keys it sets.
    """

    paper: str
    description: str
    values: dict[str, Any] = field(default_factory=dict)


_BASE: dict[str, Any] = {
    "advantage": "grpo",
    "loss": "ppo",
    "agg": "token_mean",
    "clip_low": 0.2,
    "clip_high": 0.2,
    "dual_clip": None,
    "kl_coef": 0.0,
    "kl_kind": "k3",
    "kl_placement": "loss",
    "entropy_coef": 0.0,
    "overlong_shaping": False,
    "overlong_cache": 0,
    "mask_truncated": False,
    "tis_cap": None,
}


def _values(**overrides: Any) -> dict[str, Any]:
    unknown = set(overrides) - set(ALGORITHM_KEYS)
    if unknown:
        raise KeyError(f"preset sets unknown keys {sorted(unknown)}")
    return {**_BASE, **overrides}


PRESETS: dict[str, Preset] = {
    "grpo": Preset(
        paper="arXiv 2402.03300 - DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models",
        description=(
            "Group-normalised advantages, PPO clip 0.2, per-sequence token mean, and the KL "
            "penalty to the reference model (k3, beta = 0.04) in the loss, as in the original GRPO."
        ),
        values=_values(agg="seq_mean_token_mean", kl_coef=0.04, kl_kind="k3"),
    ),
    "dr_grpo": Preset(
        paper="arXiv 2503.20783 - Understanding R1-Zero-Like Training: A Critical Perspective (Dr. GRPO)",
        description=(
            "GRPO without its two biases: no std scaling of advantages and a constant loss "
            "normaliser (sum of token losses / (B * L_max)); no KL."
        ),
        values=_values(advantage="dr_grpo", agg="seq_mean_token_sum_norm"),
    ),
    "dapo": Preset(
        paper="arXiv 2503.14476 - DAPO: An Open-Source LLM Reinforcement Learning System at Scale",
        description=(
            "Clip-higher (0.2 / 0.28), token-level loss, soft overlong punishment (L_cache = 4096 "
            "tokens as in the paper; it must not exceed rollout.max_tokens), no KL. Dynamic "
            "sampling is the filter stage: set `filter.name: nonzero_variance` as well."
        ),
        values=_values(clip_high=0.28, overlong_shaping=True, overlong_cache=4096),
    ),
    "gspo": Preset(
        paper="arXiv 2507.18071 - Group Sequence Policy Optimization",
        description=(
            "Sequence-level importance ratio (geometric mean of token ratios) clipped to "
            "[1 - 3e-4, 1 + 4e-4], group-normalised advantages, sequence mean of token means; "
            "no KL (unverified: the paper does not state a KL term for these runs)."
        ),
        values=_values(loss="gspo", clip_low=3e-4, clip_high=4e-4, agg="seq_mean_token_mean"),
    ),
    "rloo": Preset(
        paper="arXiv 2402.14740 - Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human Feedback in LLMs",
        description=(
            "Leave-one-out baseline, PPO clip 0.2 (a no-op on the first on-policy epoch, where "
            "it equals plain REINFORCE), token mean, no KL. The paper folds a KL penalty into "
            "the reward for RLHF; set kl_coef and kl_placement: reward to reproduce that."
        ),
        values=_values(advantage="rloo"),
    ),
    "reinforce_pp": Preset(
        paper="arXiv 2501.03262 - REINFORCE++: An Efficient RLHF Algorithm with Robustness to Both Prompt and Reward Models",
        description=(
            "No group baseline: rewards whitened over the whole batch, PPO clip 0.2, token mean, "
            "k2 KL in the loss with beta = 1e-3. Unverified: the paper's first version puts a "
            "token-level k1 KL in the reward; k2-in-loss with 1e-3 follows later guidance and "
            "common recipes. Use advantage: reinforce_pp_baseline for REINFORCE++-baseline."
        ),
        values=_values(advantage="reinforce_pp", kl_coef=1e-3, kl_kind="k2"),
    ),
    "cispo": Preset(
        paper="arXiv 2506.13585 - MiniMax-M1: Scaling Test-Time Compute Efficiently with Lightning Attention",
        description=(
            "Clipped IS-weight policy optimisation: every token keeps a gradient, weighted by "
            "sg(min(r, 1 + clip_high)); clip_low = 1.0 means no lower bound (the paper sets "
            "eps_low large). clip_high = 4.0 is unverified (the paper tunes eps_high without "
            "giving a value here; verl's example uses 0.2). Group-normalised advantages, token "
            "mean, no KL."
        ),
        values=_values(loss="cispo", clip_low=1.0, clip_high=4.0),
    ),
}


def apply_preset(preset_name: str, explicit: dict[str, Any]) -> dict[str, Any]:
    """Return the preset's values overridden by ``explicit`` (a new dict; inputs untouched).

    ``explicit`` should hold only the keys the user actually set (an explicit ``None`` does
    override, e.g. ``tis_cap: null``). Keys outside :data:`ALGORITHM_KEYS` are passed through
    unchanged for the config layer to validate. Raises ``ValueError`` for an unknown preset,
    listing the valid names and the closest one.
    """
    if not isinstance(preset_name, str) or preset_name not in PRESETS:
        close = difflib.get_close_matches(str(preset_name), list(PRESETS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"unknown algorithm preset {preset_name!r}; valid presets: {', '.join(PRESETS)}{hint}"
        )
    return {**PRESETS[preset_name].values, **dict(explicit)}
