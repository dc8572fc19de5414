"""Error types shared across rlengine, and the one "did you mean" hint every message uses.

A leaf module: it imports nothing from rlengine, so any module may import it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConfigError(ValueError):
    """A config problem; the message starts with the dotted key path (``learner.lr: ...``)."""


class ActorFailure(RuntimeError):
    """A Ray actor died or did not answer within its deadline.

    Attributes:
        actor: the actor's name (``rollout engine 1``, ``learner rank 0``).
        reason: ``"died"`` or ``"timeout"``.
    """

    def __init__(self, message: str, *, actor: str, reason: str) -> None:
        super().__init__(message)
        self.actor = actor
        self.reason = reason

    def at_step(self, step: int) -> ActorFailure:
        """The same failure, its message prefixed with the training step it happened in."""
        failure = ActorFailure(f"step {step}: {self}", actor=self.actor, reason=self.reason)
        failure.__cause__ = self.__cause__
        return failure


class RunUnhealthy(RuntimeError):
    """The run stopped itself: most reward calls failed in a step, or too many updates in a row
    were skipped for a non-finite loss (the message says which, and what to try)."""


class DataError(ValueError):
    """A prompt source cannot be loaded: missing file or field, empty source, bad option."""


def closest(name: object, options: Iterable[object], cutoff: float = 0.4) -> str | None:
    """The option most similar to ``name`` (difflib ratio >= ``cutoff``), or None."""
    matches = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=cutoff)
    return matches[0] if matches else None


def did_you_mean(name: object, options: Iterable[object], cutoff: float = 0.4) -> str:
    """`` (did you mean 'x'?)`` for the closest option, or ``""`` when nothing is close.

    Every "unknown name" message in rlengine and ``reward`` ends with this hint, e.g.
    ``unknown advantage 'grp'; allowed: grpo, dr_grpo, ... (did you mean 'grpo'?)``.
    """
    match = closest(name, options, cutoff)
    return f" (did you mean '{match}'?)" if match is not None else ""


def require_choice(kind: str, value: object, allowed: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``allowed``; otherwise raise ``ValueError`` naming the
    value, every allowed name and the closest one."""
    allowed = list(allowed)
    if isinstance(value, str) and value in allowed:
        return value
    raise ValueError(f"unknown {kind} {value!r}; allowed: {', '.join(allowed)}{did_you_mean(value, allowed)}")
