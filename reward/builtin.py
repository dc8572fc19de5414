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

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reward.grader import extract_boxed, grade

__all__ = [
    "BUILTIN_KWARGS",
    "BUILTIN_REWARDS",
    "CONCISENESS_REFERENCES",
    "FORMAT_MODES",
    "RewardOutput",
    "conciseness_reward",
    "format_reward",
    "length_reward",
    "math_verify_detailed_reward",
    "math_verify_reward",
    "step_markers",
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


_ENUMERATOR_RE = re.compile(
    r"^[ \t>]*(?:\(?(?:step[ \t]*)?(?:\d+|[a-z]|[ivxlc]+)[).:-]|[-*\u2022])(?=\s|$)",
    re.IGNORECASE | re.MULTILINE,
)
"""A line that starts with a step marker: ``1.``, ``2)``, ``Step 3:``, ``(a)``, ``iv.``, or a bullet."""

_ORDINAL_RE = re.compile(
    r"\b(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|next|then)\b", re.IGNORECASE
)
"""Words that order steps in prose."""

FORMAT_MODES = ("partial", "binary")
"""``format`` reward modes: half credits (the default), or the official code's all-or-nothing form."""


def step_markers(completion: str) -> int:
    """Step markers of ``completion``: the larger of the count of lines starting with an enumerator
    or bullet and the count of ordering words (first, second, next, then ...)."""
    return max(len(_ENUMERATOR_RE.findall(completion)), len(_ORDINAL_RE.findall(completion)))


def format_reward(prompt: str, completion: str, answer: str, metadata: dict, **kwargs: Any) -> float:
    """Structure of the answer, in one of two modes (kwarg ``mode``):

    * ``partial`` (default): 0.5 for visible steps plus 0.5 for a complete ``\\boxed{...}`` answer.
      Steps are the non-empty lines before the line that holds the last box (without a box, before
      the last non-empty line). The half credits give a small model a signal before it does both.
    * ``binary``: the form of the official code of arXiv 2509.11452: 1.0 when the completion has a
      complete, non-empty box and at least ``min_steps`` step markers (lines starting with ``1.``,
      ``2)``, ``Step 3:``, ``(a)`` or a bullet; or as many ordering words such as first, next,
      then), else 0.0.

    Kwargs:
        mode: ``partial`` or ``binary``.
        min_steps: steps needed (partial: step lines, default 1, 0 grants the steps half always;
            binary: step markers, default 2 as in the official code).
    """
    mode = kwargs.get("mode", "partial")
    if mode not in FORMAT_MODES:
        raise ValueError(f"format reward: mode must be one of {', '.join(FORMAT_MODES)}, got {mode!r}")
    binary = mode == "binary"
    min_steps = int(kwargs.get("min_steps", 2 if binary else 1))
    boxed = extract_boxed(completion) is not None
    if binary:
        return 1.0 if boxed and step_markers(completion) >= min_steps else 0.0
    box_at = max(completion.rfind("\\boxed"), completion.rfind("\\fbox")) if boxed else -1
    lines = completion[: box_at + 1 if boxed else len(completion)].rstrip().splitlines()
    steps = sum(1 for line in lines[:-1] if line.strip())
    return 0.5 * (steps >= min_steps) + 0.5 * boxed


CONCISENESS_REFERENCES = {"correct": "mean_correct_length", "all": "mean_length"}
"""``conciseness`` reference lengths: the kwarg value and the metadata key that holds it."""


def conciseness_reward(prompt: str, completion: str, answer: str, metadata: dict, **kwargs: Any) -> float:
    """1.0 if the response is shorter than a reference length, else 0.0 (kwarg ``reference``):

    * ``correct`` (default): the running mean length of correct responses,
      ``metadata["mean_correct_length"]``, which the trainer keeps as run state (a momentum mean
      over steps, checkpointed; see ``reward.length_momentum``). It follows the current policy, so
      the objective stays informative, and it asks for "shorter than it takes to be right".
    * ``all``: the form of the official code of arXiv 2509.11452, the cumulative mean length of all
      training responses so far, ``metadata["mean_length"]`` (the rollouts must provide it: a
      ValueError, counted in ``reward/errors``, says so when they do not).

    Lengths are in tokens: ``metadata["response_tokens"]`` against the reference. Outside training
    (no ``response_tokens``) the completion's length in characters is used. Until a reference
    exists (no correct response yet, or no response yet) the score is 0.0.
    """
    choice = kwargs.get("reference", "correct")
    if choice not in CONCISENESS_REFERENCES:
        raise ValueError(
            f"conciseness reward: reference must be one of {', '.join(CONCISENESS_REFERENCES)}, "
            f"got {choice!r}"
        )
    key = CONCISENESS_REFERENCES[choice]
    if key not in metadata and "response_tokens" in metadata:
        raise ValueError(
            f"conciseness reward: reference {choice!r} needs metadata[{key!r}], which these rollouts "
            "do not provide"
        )
    reference = metadata.get(key)
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
    "format": frozenset({"min_steps", "mode"}),
    "conciseness": frozenset({"reference"}),
    "length": frozenset({"target_length"}),
}
"""The ``kwargs`` each built-in understands (checked when the config is built: a typo is an error)."""
