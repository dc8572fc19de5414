"""Built-in reward functions.

Every reward function, built-in or user-written, has the signature::

    fn(prompt: str, completion: str, answer: str, metadata: dict, **kwargs) -> float

``kwargs`` are the ``kwargs:`` of the reward entry in the YAML config. ``metadata`` holds the prompt
row's fields, plus, during training and evaluation, ``response_tokens`` (the response's length in
tokens) and ``mean_correct_length`` (the running mean token length of correct responses, None until
one is seen; see ``reward.length_momentum``). A function may instead return
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
    "BUILTIN_KWARGS",
    "BUILTIN_REWARDS",
    "RewardOutput",
    "conciseness_reward",
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
    """Structure of the answer: 0.5 for visible steps plus 0.5 for a complete ``\\boxed{...}`` answer.

    Steps are the non-empty lines before the line that holds the last box (without a box, before
    the last non-empty line). The half credits give a small model a signal before it does both.

    Kwargs:
        min_steps: how many step lines earn the steps half (default 1; 0 grants it always).
    """
    min_steps = int(kwargs.get("min_steps", 1))
    boxed = extract_boxed(completion) is not None
    box_at = max(completion.rfind("\\boxed"), completion.rfind("\\fbox")) if boxed else -1
    lines = completion[: box_at + 1 if boxed else len(completion)].rstrip().splitlines()
    steps = sum(1 for line in lines[:-1] if line.strip())
    return 0.5 * (steps >= min_steps) + 0.5 * boxed


def conciseness_reward(prompt: str, completion: str, answer: str, metadata: dict, **kwargs: Any) -> float:
    """1.0 if the response is shorter than the running mean length of correct responses, else 0.0.

    Lengths are in tokens: ``metadata["response_tokens"]`` against ``metadata["mean_correct_length"]``,
    which the trainer keeps as run state (a running mean over steps, checkpointed; see
    ``reward.length_momentum``). Outside training (no ``response_tokens``) the completion's length in
    characters is used. Until a correct response has been seen there is no mean and the score is 0.0.
    """
    reference = metadata.get("mean_correct_length")
    if reference is None:
        return 0.0
    length = metadata.get("response_tokens", len(completion))
    return 1.0 if length < float(reference) else 0.0


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
    "conciseness": conciseness_reward,
    "length": length_reward,
}

BUILTIN_KWARGS: dict[str, frozenset[str]] = {
    "math_verify": frozenset({"answer_pattern", "timeout_s"}),
    "math_verify_detailed": frozenset({"answer_pattern", "timeout_s"}),
    "format": frozenset({"min_steps"}),
    "conciseness": frozenset(),
    "length": frozenset({"target_length"}),
}
"""The ``kwargs`` each built-in understands (checked when the config is built: a typo is an error)."""
