"""The registry of advantage estimators and policy losses, and plug-ins from user files.

Every built-in estimator and loss is a small pure tensor function registered by name, with what
the rest of the engine needs to know about it declared beside it::

    @register_advantage("grpo", group_baseline=True)
    def grpo(rewards, group_index, *, lengths, eps): ...

    @register_policy_loss("bapo", default_clips=(0.6, 1.2), clip_mode="ratio", default_dual_clip=3.0)
    def bapo(logprobs, old_logprobs, advantages, mask, *, lower, upper, dual_clip): ...

``algorithm.advantage`` / ``algorithm.loss`` name a built-in or a plug-in function in the user's
own file (``my_algos.py:my_estimator``), loaded with :func:`rlengine.plugins.load_object` like
reward functions and stages. :func:`advantage_estimator` and :func:`policy_loss` look either up;
a plug-in is imported, checked (its signature, then one call on tiny tensors) and cached once per
process. ``compute_advantages`` / ``compute_policy_loss`` keep the validation, aggregation, token
weights and metrics, so a registered function is only the estimator or the per-token loss.

The plug-in signatures (``docs/algorithms.md``, "Writing your own"):

* estimator ``fn(rewards, group_index, *, lengths, eps) -> Tensor[N]``: float32 rewards ``[N]``,
  int64 group ids ``[N]`` numbered ``0..G-1``, float32 response token counts ``[N]`` (ones when the
  caller has none) and the float ``algorithm.eps``. Optional attribute ``group_baseline = True``:
  it compares each response with the others of its prompt, so ``rollout.n >= 2`` is required.
* loss ``fn(logprobs, old_logprobs, advantages, mask, *, lower, upper, dual_clip)``: float32
  ``[B, T]`` tensors that are 0 wherever ``mask`` (float32 0/1) is 0 (``logprobs`` carries the
  gradient; ``advantages`` is broadcast over the tokens), the ratio bounds ``lower <= 1 <= upper``
  and ``dual_clip`` (a float > 1 or None). Returns the per-token loss ``[B, T]`` (minimised), or a
  :class:`PolicyLossOutput` that also gives the ratio and clipped tokens for the metrics.
  Optional attributes ``default_clips = (clip_low, clip_high)`` (default ``(0.2, 0.2)``) and
  ``clip_mode = "epsilon" | "ratio"`` (default ``"epsilon"``: bounds ``1 - clip_low`` and
  ``1 + clip_high``; ``"ratio"``: ``clip_low`` and ``clip_high`` are the bounds themselves).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from rlengine.errors import did_you_mean
from rlengine.plugins import absolute_spec, is_plugin_spec, load_object

ClipMode = Literal["epsilon", "ratio"]
CLIP_MODES: tuple[str, ...] = ("epsilon", "ratio")
PLUGIN_DEFAULT_CLIPS: tuple[float, float] = (0.2, 0.2)
"""``(clip_low, clip_high)`` of a plug-in loss that declares no ``default_clips``."""


class PolicyLossOutput(NamedTuple):
    """What a policy-loss function returns (a plain per-token tensor stands for ``loss`` alone).

    All ``[B, T]``; values at masked-out positions are ignored.
    """

    loss: Tensor
    """Per-token loss to minimise (float32, carries the gradient)."""
    ratio: Tensor | None = None
    """The importance ratio the loss uses, for ``ratio/mean`` and ``ratio/max`` (default: the token
    ratio ``exp(logprobs - old_logprobs)``, log-ratio clamped to +-20)."""
    clipped: Tensor | None = None
    """Bool, tokens whose loss was clipped, for ``clipfrac`` (default: none)."""
    dual_clipped: Tensor | None = None
    """Bool, tokens where the dual clip was the active bound, for ``clipfrac/dual`` (default: none)."""


def as_output(value: object) -> PolicyLossOutput:
    """A loss function's result as a :class:`PolicyLossOutput`: a tensor is the per-token loss
    alone, a tuple holds ``(loss, ratio, clipped, dual_clipped)`` or a prefix of them."""
    if isinstance(value, tuple):
        if not 1 <= len(value) <= 4:
            raise ValueError(
                f"returned a tuple of {len(value)} items; expected (loss, ratio, clipped, dual_clipped) or a prefix"
            )
        return PolicyLossOutput(*value)
    return PolicyLossOutput(value)  # type: ignore[arg-type]


AdvantageFn = Callable[..., Tensor]
PolicyLossFn = Callable[..., "Tensor | PolicyLossOutput"]


@dataclass(frozen=True)
class AdvantageEstimator:
    """A registered (or loaded) advantage estimator."""

    name: str
    """Built-in name, or the plug-in spec as the config gives it."""
    fn: AdvantageFn
    """``fn(rewards, group_index, *, lengths, eps) -> Tensor[N]``."""
    group_baseline: bool = False
    """Compares each response with the others of its prompt (``rollout.n >= 2`` is then required)."""


@dataclass(frozen=True)
class PolicyLoss:
    """A registered (or loaded) per-token policy loss and how it reads its clip settings."""

    name: str
    """Built-in name, or the plug-in spec as the config gives it."""
    fn: PolicyLossFn
    """``fn(logprobs, old_logprobs, advantages, mask, *, lower, upper, dual_clip)``."""
    default_clips: tuple[float, float]
    """``(clip_low, clip_high)`` when ``algorithm.clip_low`` / ``clip_high`` are null."""
    clip_mode: ClipMode = "epsilon"
    """``epsilon``: the ratio bounds are ``1 - clip_low`` and ``1 + clip_high``; ``ratio``: they are
    ``clip_low`` and ``clip_high`` themselves (``0 < clip_low <= 1 <= clip_high``)."""
    default_dual_clip: float | None = None
    """Dual-clip constant used when ``algorithm.dual_clip`` is null (None: off)."""
    dual_clip: bool = True
    """Whether a dual clip applies to this loss at all (a given one is an error otherwise)."""

    def bounds(
        self, clip_low: float, clip_high: float, dual_clip: float | None
    ) -> tuple[float, float, float | None]:
        """``(lower, upper, dual_clip)`` ratio bounds from the clip settings; raises ``ValueError``
        naming the setting when they cannot work (also checked when the config is built)."""
        name = self.name
        for key, val in (("clip_low", clip_low), ("clip_high", clip_high)):
            if not isinstance(val, (int, float)) or not math.isfinite(val) or val < 0:
                raise ValueError(f"{name}: {key} must be a finite number >= 0, got {val}")
        if self.clip_mode == "ratio":
            if not 0 < clip_low <= 1 <= clip_high:
                raise ValueError(
                    f"{name}: clip_low/clip_high are ratio bounds with 0 < clip_low <= 1 <= clip_high "
                    f"(e.g. 0.6 and 1.2), got {clip_low} and {clip_high}"
                )
            lower, upper = float(clip_low), float(clip_high)
        else:
            # cispo's lower bound only truncates a detached IS weight, and the paper runs without one
            # (verl writes that as clip_ratio_low: 10): any clip_low >= 1 is "no lower bound", 0
            if clip_low > 1 and name != "cispo":
                raise ValueError(
                    f"{name}: clip_low is an epsilon below a ratio of 1 (the bound is 1 - clip_low), so it "
                    f"must be <= 1, got {clip_low}"
                )
            lower, upper = max(1.0 - float(clip_low), 0.0), 1.0 + float(clip_high)
        dual_clip = self.default_dual_clip if dual_clip is None else dual_clip
        if dual_clip is not None:
            if not self.dual_clip:
                allowed = ", ".join(n for n, loss in POLICY_LOSSES.items() if loss.dual_clip)
                raise ValueError(f"{name}: dual_clip does not apply (use it with {allowed})")
            if not math.isfinite(dual_clip) or dual_clip <= 1:
                raise ValueError(f"{name}: dual_clip must be a finite number > 1 (e.g. 3.0), got {dual_clip}")
            dual_clip = float(dual_clip)
        return lower, upper, dual_clip


ADVANTAGES: dict[str, AdvantageEstimator] = {}
"""Built-in advantage estimators by name, in registration order."""
POLICY_LOSSES: dict[str, PolicyLoss] = {}
"""Built-in policy losses by name, in registration order."""

_PLUGINS: dict[tuple[str, str], AdvantageEstimator | PolicyLoss] = {}
"""Loaded and checked plug-ins of this process, by (kind, absolute spec)."""


def register_advantage(name: str, *, group_baseline: bool = False) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator: register ``fn`` as the advantage estimator ``name`` (see the module docstring for
    the signature). ``group_baseline``: it compares each response with the others of its prompt."""

    def decorator(fn: AdvantageFn) -> AdvantageFn:
        if name in ADVANTAGES or is_plugin_spec(name):
            raise ValueError(f"advantage estimator {name!r} is already registered or not a plain name")
        ADVANTAGES[name] = AdvantageEstimator(name, fn, group_baseline)
        return fn

    return decorator


def register_policy_loss(
    name: str,
    *,
    default_clips: tuple[float, float],
    clip_mode: ClipMode = "epsilon",
    default_dual_clip: float | None = None,
    dual_clip: bool = True,
) -> Callable[[PolicyLossFn], PolicyLossFn]:
    """Decorator: register ``fn`` as the policy loss ``name`` with its clip defaults and how
    ``clip_low`` / ``clip_high`` are read (the fields of :class:`PolicyLoss`)."""

    def decorator(fn: PolicyLossFn) -> PolicyLossFn:
        if name in POLICY_LOSSES or is_plugin_spec(name):
            raise ValueError(f"policy loss {name!r} is already registered or not a plain name")
        loss = PolicyLoss(name, fn, tuple(default_clips), clip_mode, default_dual_clip, dual_clip)  # type: ignore[arg-type]
        loss.bounds(*loss.default_clips, None)
        POLICY_LOSSES[name] = loss
        return fn

    return decorator


def unknown_name(kind: str, name: object, builtins: dict) -> str:
    """The message for a name that is neither a built-in nor a plug-in spec."""
    return (
        f"unknown {kind} {name!r}; allowed: {', '.join(builtins)}, or a plug-in 'file.py:function'"
        f"{did_you_mean(name, builtins)}"
    )


def advantage_estimator(name: str, base_dir: str | os.PathLike[str] | None = None) -> AdvantageEstimator:
    """The estimator ``name`` names: a built-in (:data:`ADVANTAGES`) or a plug-in
    ``file.py:function`` / ``package.module:function``, a relative file looked up in ``base_dir``
    (the YAML's directory) first, then the current directory. A plug-in is imported and checked
    once per process. Raises ``ValueError`` (a :class:`rlengine.plugins.PluginError` for a file or
    attribute that cannot be loaded) with a message that says what is wrong."""
    if isinstance(name, str) and name in ADVANTAGES:
        return ADVANTAGES[name]
    if not isinstance(name, str) or not is_plugin_spec(name):
        raise ValueError(unknown_name("advantage estimator", name, ADVANTAGES))
    key = ("advantage", absolute_spec(name, base_dir))
    if key not in _PLUGINS:
        fn = load_object(key[1], what="advantage estimator")
        try:
            _check_estimator(fn)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from e.__cause__
        _PLUGINS[key] = AdvantageEstimator(name, fn, bool(getattr(fn, "group_baseline", False)))
    return _PLUGINS[key]  # type: ignore[return-value]


def policy_loss(name: str, base_dir: str | os.PathLike[str] | None = None) -> PolicyLoss:
    """The policy loss ``name`` names: a built-in (:data:`POLICY_LOSSES`) or a plug-in, looked up
    and checked as in :func:`advantage_estimator`. Raises ``ValueError`` saying what is wrong."""
    if isinstance(name, str) and name in POLICY_LOSSES:
        return POLICY_LOSSES[name]
    if not isinstance(name, str) or not is_plugin_spec(name):
        raise ValueError(unknown_name("policy loss", name, POLICY_LOSSES))
    key = ("loss", absolute_spec(name, base_dir))
    if key not in _PLUGINS:
        fn = load_object(key[1], what="policy loss")
        try:
            loss = _plugin_loss(name, fn)
            _check_loss(loss)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from e.__cause__
        _PLUGINS[key] = loss
    return _PLUGINS[key]  # type: ignore[return-value]


def with_absolute_plugins(algorithm: Any, base_dir: str | os.PathLike[str] | None) -> Any:
    """``algorithm`` (an ``AlgorithmConfig``) itself when it names built-ins only; else a copy whose
    plug-in ``advantage`` / ``loss`` specs name their files by absolute path (resolved against
    ``base_dir``, then the current directory), so they resolve with no base directory in any
    process and working directory (``LearnerSpec.from_config`` hands the ranks this copy)."""
    changes = {
        key: absolute_spec(value, base_dir)
        for key in ("advantage", "loss")
        if is_plugin_spec(value := getattr(algorithm, key))
    }
    return dataclasses.replace(algorithm, **changes) if changes else algorithm


# --------------------------------------------------------------------------- plug-in checks

ESTIMATOR_CALL = "fn(rewards, group_index, *, lengths, eps)"
LOSS_CALL = "fn(logprobs, old_logprobs, advantages, mask, *, lower, upper, dual_clip)"


def _bind(fn: Callable, call: str, *args: object, **kwargs: object) -> None:
    if not callable(fn):
        raise ValueError(f"{type(fn).__name__} {fn!r} is not callable; expected a function {call}")
    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except TypeError as e:
        raise ValueError(f"cannot be called as {call}: {e}") from None
    except ValueError:
        pass  # no signature to inspect (a builtin); the trial call below still runs it


def _trial(fn: Callable, what: str, *args: object, **kwargs: object) -> object:
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        raise ValueError(f"raised {type(e).__name__} on a trial call with {what}: {e}") from e


def _check_tensor(value: object, shape: tuple[int, ...], what: str, mask: Tensor | None) -> Tensor:
    if not isinstance(value, Tensor):
        raise ValueError(f"returned {type(value).__name__} for {what}; expected a tensor")
    if tuple(value.shape) != shape:
        raise ValueError(f"returned shape {tuple(value.shape)} for {what}; expected {list(shape)}")
    if not (value.dtype.is_floating_point or value.dtype == torch.bool):
        raise ValueError(f"returned dtype {value.dtype} for {what}; expected a float tensor")
    finite = torch.isfinite(value.detach().float())
    if mask is not None:
        finite = finite | (mask == 0)
    if not bool(finite.all()):
        raise ValueError(f"returned NaN or inf for {what} (a trial call on finite inputs)")
    return value


def _check_estimator(fn: AdvantageFn) -> None:
    """One call on 5 rewards in 3 groups (sizes 2, 2, 1): a finite float ``[5]`` must come back."""
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, 2.0])
    group_index = torch.tensor([0, 0, 1, 1, 2])
    lengths = torch.tensor([3.0, 1.0, 2.0, 2.0, 4.0])
    _bind(fn, ESTIMATOR_CALL, rewards, group_index, lengths=lengths, eps=1e-6)
    what = "5 rewards in 3 groups"
    out = _trial(fn, what, rewards, group_index, lengths=lengths, eps=1e-6)
    _check_tensor(out, (5,), f"{what} (one advantage per response)", None)


def _plugin_loss(name: str, fn: PolicyLossFn) -> PolicyLoss:
    """A :class:`PolicyLoss` from a plug-in function and its optional attributes."""
    clips = getattr(fn, "default_clips", PLUGIN_DEFAULT_CLIPS)
    if (
        not isinstance(clips, (tuple, list))
        or len(clips) != 2
        or not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in clips)
    ):
        raise ValueError(f"default_clips must be (clip_low, clip_high), got {clips!r}")
    mode = getattr(fn, "clip_mode", "epsilon")
    if mode not in CLIP_MODES:
        raise ValueError(f"clip_mode must be 'epsilon' or 'ratio', got {mode!r}")
    loss = PolicyLoss(name, fn, (float(clips[0]), float(clips[1])), mode)
    try:
        loss.bounds(*loss.default_clips, None)
    except ValueError as e:
        raise ValueError(f"default_clips {tuple(clips)}: {e}") from None
    return loss


def _check_loss(loss: PolicyLoss) -> None:
    """One call on ``[2, 3]`` tensors with one padded token, at the loss's default bounds: a finite
    per-token loss ``[2, 3]`` that depends on ``logprobs`` must come back (and a valid ratio and
    clipped mask, when it returns a :class:`PolicyLossOutput`)."""
    fn = loss.fn
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    old = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, -0.7, 0.0]])
    logprobs = (old + torch.tensor([[0.1, -0.2, 0.05], [0.3, -0.1, 0.0]])).requires_grad_(True)
    advantages = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, 0.0]])
    lower, upper, dual = loss.bounds(*loss.default_clips, None)
    kwargs = {"lower": lower, "upper": upper, "dual_clip": dual}
    _bind(fn, LOSS_CALL, logprobs, old, advantages, mask, **kwargs)
    what = "[B, T] = [2, 3] tensors"
    out = _trial(fn, what, logprobs, old, advantages, mask, **kwargs)
    parts = as_output(out)
    per_token = _check_tensor(parts.loss, (2, 3), f"{what} (the per-token loss)", mask)
    if not per_token.requires_grad:
        raise ValueError(
            "the per-token loss does not depend on logprobs (no gradient would reach the policy)"
        )
    for field in ("ratio", "clipped", "dual_clipped"):
        value = getattr(parts, field)
        if value is not None:
            _check_tensor(value, (2, 3), f"{what} (PolicyLossOutput.{field})", mask)
