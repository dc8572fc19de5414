"""Built-in reward functions.

Every reward function, built-in or user-written, has the signature::

    fn(prompt: str, completion: str, answer: str, metadata: dict, **kwargs) -> float

``kwargs`` are the ``kwargs:`` of the reward entry in the YAML config. A function may instead return
a :class:`RewardOutput` (score plus a small picklable ``info`` dict); the pool reports the score like
any float and hands ``info`` back in ``RewardResult.info`` (evaluation uses this to get the extracted
answer and the timeout flag along with correctness).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reward.grader import extract_boxed, grade

__all__ = [
    "BUILTIN_REWARDS",
    "RewardOutput",
    "format_reward",
    "length_reward",
    "math_verify_detailed_reward",
    "math_verify_reward",
]


@dataclass
class RewardOutput:
    """A score plus extra per-call information (must be picklable: it crosses processes)."""

    score: float
    info: dict[str, Any] = field(default_factory=dict)


def _answer_pattern(metadata: dict | None, kwargs: dict[str, Any]) -> str | None:
    """``answer_pattern`` from the reward kwargs, else from the item's metadata (per-benchmark)."""
    pattern = kwargs.get("answer_pattern")
    if pattern is None and metadata:
        pattern = metadata.get("answer_pattern")
    return pattern


def math_verify_reward(prompt: str, completion: str, answer: str, metadata: dict, **kwargs: Any) -> float:
    """1.0 if the completion's final answer is math-equivalent to ``answer``, else 0.0.

    Kwargs:
        answer_pattern: regex used when there is no ``\\boxed{}`` (default: from metadata, else none).
        timeout_s: math-verify timeout in seconds (default 5).
    """
    result = grade(
        completion,
        str(answer),
        answer_pattern=_answer_pattern(metadata, kwargs),
        timeout_s=float(kwargs.get("timeout_s", 5.0)),
    )
    return 1.0 if result.correct else 0.0


def math_verify_detailed_reward(
    prompt: str, completion: str, answer: str, metadata: dict, **kwargs: Any
) -> RewardOutput:
    """Same score as ``math_verify``, with ``info = {"extracted": str|None, "timed_out": bool}``."""
    result = grade(
        completion,
        str(answer),
        answer_pattern=_answer_pattern(metadata, kwargs),
        timeout_s=float(kwargs.get("timeout_s", 5.0)),
    )
    return RewardOutput(
        1.0 if result.correct else 0.0,
        {"extracted": result.extracted, "timed_out": result.timed_out},
    )


def format_reward(prompt: str, completion: str, answer: str, metadata: dict, **kwargs: Any) -> float:
    """1.0 if the completion holds a complete, non-empty ``\\boxed{...}`` answer, else 0.0."""
    return 1.0 if extract_boxed(completion) is not None else 0.0


def length_reward(prompt: str, completion: str, answer: str, metadata: dict, **kwargs: Any) -> float:
    """Conciseness in [0, 1], measured in characters.

    With ``T = target_length`` (kwarg, default 512) and ``L = len(completion)``: 1.0 when ``L <= T``,
    then linearly down to 0.0 at ``L = 2T`` (``1 - (L - T) / T``), and 0.0 beyond.
    """
    target = float(kwargs.get("target_length", 512))
    if target <= 0:
        raise ValueError(f"length reward: target_length must be > 0, got {target}")
    excess = len(completion) - target
    if excess <= 0:
        return 1.0
    return max(0.0, 1.0 - excess / target)


BUILTIN_REWARDS: dict[str, Callable[..., Any]] = {
    "math_verify": math_verify_reward,
    "math_verify_detailed": math_verify_detailed_reward,
    "format": format_reward,
    "length": length_reward,
}
