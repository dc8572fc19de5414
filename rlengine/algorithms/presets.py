"""Named algorithm presets: the settings that reproduce a paper's objective.

``algorithm.preset: dapo`` in YAML selects one. A preset lists only what differs from the
defaults of ``AlgorithmConfig`` (``rlengine/config.py``, the one place defaults live), plus
the stage sections the recipe needs (DAPO's dynamic sampling is ``filter: nonzero_variance``).
Anything the user writes explicitly, in ``algorithm`` or in a stage section, wins over the
preset (see :func:`apply_preset`). Clip ranges not set by the preset or the user come from
the loss (its ``default_clips``, declared where it is registered, ``rlengine/algorithms/losses.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rlengine.errors import did_you_mean


@dataclass(frozen=True)
class Preset:
    """A named recipe.

    ``paper``: arXiv id and title of the source. ``description``: what it does and what it
    leaves out. ``values``: the ``algorithm.*`` keys it sets. ``stages``: stage sections it sets
    (``{"filter": {"name": "nonzero_variance"}}``); a user section without a ``name`` is merged
    into it (``filter: {max_rounds: 8}`` tunes the preset's filter), one with a ``name`` replaces it.
    """

    paper: str
    description: str
    values: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    "grpo": Preset(
        paper="arXiv 2402.03300 - DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models",
        description=(
            "Group-normalised advantages, PPO clip 0.2, per-sequence token mean, and the KL "
            "penalty to the reference model (k3, beta = 0.04) in the loss, as in the original GRPO."
        ),
        values={"agg": "seq_mean_token_mean", "kl_coef": 0.04},
    ),
    "dr_grpo": Preset(
        paper="arXiv 2503.20783 - Understanding R1-Zero-Like Training: A Critical Perspective (Dr. GRPO)",
        description=(
            "GRPO without its two biases: no std scaling of advantages and a constant loss "
            "normaliser (sum of token losses / (B * L_max)); no KL."
        ),
        values={"advantage": "dr_grpo", "agg": "seq_mean_token_sum_norm"},
    ),
    "dapo": Preset(
        paper="arXiv 2503.14476 - DAPO: An Open-Source LLM Reinforcement Learning System at Scale",
        description=(
            "Clip-higher (0.2 / 0.28), token-level loss, soft overlong punishment (L_cache = 4096 "
            "tokens as in the paper; it must not exceed rollout.max_tokens), no KL, and dynamic "
            "sampling (filter: nonzero_variance, refilling until the batch is full)."
        ),
        values={"clip_low": 0.2, "clip_high": 0.28, "overlong_shaping": True, "overlong_cache": 4096},
        stages={"filter": {"name": "nonzero_variance"}},
    ),
    "gspo": Preset(
        paper="arXiv 2507.18071 - Group Sequence Policy Optimization",
        description=(
            "Sequence-level importance ratio (geometric mean of token ratios) clipped to "
            "[1 - 3e-4, 1 + 4e-4], group-normalised advantages, sequence mean of token means; "
            "no KL (unverified: the paper does not state a KL term for these runs)."
        ),
        values={"loss": "gspo", "clip_low": 3e-4, "clip_high": 4e-4, "agg": "seq_mean_token_mean"},
    ),
    "rloo": Preset(
        paper="arXiv 2402.14740 - Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human Feedback in LLMs",
        description=(
            "Leave-one-out baseline, PPO clip 0.2 (a no-op on the first on-policy epoch, where "
            "it equals plain REINFORCE), token mean, no KL. The paper folds a KL penalty into "
            "the reward for RLHF; set kl_coef and kl_placement: reward to reproduce that."
        ),
        values={"advantage": "rloo"},
    ),
    "reinforce_pp": Preset(
        paper="arXiv 2501.03262 - REINFORCE++: An Efficient RLHF Algorithm with Robustness to Both Prompt and Reward Models",
        description=(
            "No group baseline: rewards whitened over all response tokens of the batch, PPO clip "
            "0.2, token mean, k2 KL in the loss with beta = 1e-3. Unverified: the paper's first "
            "version puts a token-level k1 KL in the reward; k2-in-loss with 1e-3 follows later "
            "guidance and common recipes. Use advantage: reinforce_pp_baseline for "
            "REINFORCE++-baseline."
        ),
        values={"advantage": "reinforce_pp", "kl_coef": 1e-3, "kl_kind": "k2"},
    ),
    "cispo": Preset(
        paper="arXiv 2506.13585 - MiniMax-M1: Scaling Test-Time Compute Efficiently with Lightning Attention",
        description=(
            "Clipped IS-weight policy optimisation: every token keeps a gradient, weighted by "
            "sg(min(r, 1 + clip_high)). clip_low = 1.0 means no lower bound; clip_high = 3.0 caps "
            "the weight at 4.0, the default of Thinking Machines' Tinker cispo loss (the paper "
            "tunes epsilon_high without giving a value). Group-normalised advantages, token mean, "
            "no KL."
        ),
        values={"loss": "cispo", "clip_low": 1.0, "clip_high": 3.0},
    ),
}


def apply_preset(preset_name: str, explicit: dict[str, Any]) -> dict[str, Any]:
    """The preset's ``algorithm`` values overridden by ``explicit`` (a new dict; inputs untouched).

    ``explicit`` holds only the keys the user actually set (an explicit ``None`` does override,
    e.g. ``tis_cap: null``). Keys the preset does not set keep the ``AlgorithmConfig`` default.
    Raises ``ValueError`` for an unknown preset, listing the valid names and the closest one.
    """
    if not isinstance(preset_name, str) or preset_name not in PRESETS:
        raise ValueError(
            f"unknown algorithm preset {preset_name!r}; valid presets: {', '.join(PRESETS)}"
            f"{did_you_mean(preset_name, PRESETS)}"
        )
    return {**PRESETS[preset_name].values, **dict(explicit)}
