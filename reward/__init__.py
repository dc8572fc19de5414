"""Verifiable reward functions for rlengine: grading, built-ins, plug-in loading and a process pool.

Quick use::

    from reward import RewardItem, RewardPool, parse_reward_specs

    specs = parse_reward_specs(["math_verify", {"function": "my_rewards.py:brevity", "weight": 0.2}])
    with RewardPool(specs, num_workers=2, timeout_s=10) as pool:
        result = pool.score([RewardItem(prompt, completion, answer, {})])
    result.scores["math_verify"]  # one float per item
"""

from reward.builtin import (
    BUILTIN_REWARDS,
    RewardOutput,
    conciseness_reward,
    format_reward,
    length_reward,
    math_verify_detailed_reward,
    math_verify_reward,
)
from reward.grader import GradeResult, extract_answer, extract_boxed, grade, normalize_answer, parse_gold
from reward.loader import (
    RewardConfigError,
    RewardSpec,
    load_reward_function,
    load_reward_functions,
    parse_reward_specs,
)
from reward.pool import RewardItem, RewardPool, RewardPoolError, RewardResult

__all__ = [
    "BUILTIN_REWARDS",
    "GradeResult",
    "RewardConfigError",
    "RewardItem",
    "RewardOutput",
    "RewardPool",
    "RewardPoolError",
    "RewardResult",
    "RewardSpec",
    "conciseness_reward",
    "extract_answer",
    "extract_boxed",
    "format_reward",
    "grade",
    "length_reward",
    "load_reward_function",
    "load_reward_functions",
    "math_verify_detailed_reward",
    "math_verify_reward",
    "normalize_answer",
    "parse_gold",
    "parse_reward_specs",
]
