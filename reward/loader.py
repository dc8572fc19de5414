"""Reward specs from the config and loading of built-in or user reward functions.

A ``function`` string is one of:

* a built-in name (``math_verify``, ``format``, ``length``, ...; see ``reward.builtin``);
* ``path/to/file.py:function``: a Python file; a relative path is looked up against ``base_dir``
  (the directory of the YAML config) first, then the current directory;
* ``package.module:function``: an importable module.

Importing a plug-in runs its module-level code, which can block (a network call, ``input()``, an
endless loop, a lock never released). With ``import_timeout_s`` set (``reward.import_timeout_s``),
the import runs under a deadline: a ``SIGALRM`` timer raises inside the importing code, which stops
it wherever Python code runs or waits (sleeps, sockets, reads, lock waits), but not inside one long
C call. Signals only reach the main thread, so off the main thread (or while another ``ITIMER_REAL``
timer is armed) the file is imported with no time limit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from reward.builtin import BUILTIN_REWARDS
from rlengine.errors import did_you_mean
from rlengine.plugins import PluginError, is_plugin_spec, load_object, resolve_file

__all__ = [
    "RewardConfigError",
    "RewardImportTimeout",
    "RewardSpec",
    "load_reward_function",
    "load_reward_functions",
    "parse_reward_specs",
]

_SPEC_KEYS = ("function", "name", "weight", "kwargs")


IMPORT_HINT = (
    "Module-level code runs at import: look there for network calls, input(), infinite loops or "
    "locks that are never released, and move slow set-up into the function (or raise "
    "reward.import_timeout_s if the import is only slow)"
)
"""What to look for when a reward file does not finish importing in time."""


class RewardConfigError(ValueError):
    """A reward entry in the config is invalid or its function cannot be loaded."""


class RewardImportTimeout(RewardConfigError):
    """A reward file or module did not finish importing within ``reward.import_timeout_s``.

    Attributes:
        target: what was imported, e.g. ``reward file /abs/my_rewards.py``.
        limit_s: the time limit in seconds.
    """

    def __init__(self, target: str, limit_s: float, prefix: str = "") -> None:
        self.target = target
        self.limit_s = limit_s
        super().__init__(
            f"{prefix}{target} did not finish importing within {limit_s:g} s "
            f"(reward.import_timeout_s = {limit_s:g}). {IMPORT_HINT}."
        )


class _ImportDeadline(BaseException):
    """Raised by the import alarm; a BaseException so ``except Exception`` in the module misses it."""


@contextlib.contextmanager
def _import_deadline(seconds: float | None) -> Iterator[None]:
    """Raise :class:`_ImportDeadline` in this thread once ``seconds`` have passed (main thread only;
    elsewhere, with ``seconds=None`` or while another real-time timer is armed: no limit)."""
    if (
        seconds is None
        or threading.current_thread() is not threading.main_thread()
        or signal.getitimer(signal.ITIMER_REAL)[0] > 0
    ):
        yield
        return

    def _on_alarm(signum: int, frame: Any) -> None:
        raise _ImportDeadline()

    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _import_target(function: str, base_dir: str | os.PathLike[str] | None) -> str:
    """``reward file /abs/path.py`` or ``reward module pkg.mod``, for messages."""
    target = function.strip().rpartition(":")[0]
    if target.endswith(".py") or "/" in target or os.sep in target:
        try:
            return f"reward file {resolve_file(target, base_dir)}"
        except PluginError:
            return f"reward file {target}"
    return f"reward module {target}"


@dataclass
class RewardSpec:
    """One reward objective.

    Attributes:
        name: objective name used in metrics (``reward/<name>/mean``) and in ``RewardResult.scores``.
        function: built-in name, ``path/to/file.py:function`` or ``package.module:function``.
        weight: weight used by static reward weighting.
        kwargs: keyword arguments passed to the function on every call.
    """

    name: str
    function: str
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)


def _default_name(function: str) -> str:
    return function.rsplit(":", 1)[1] if ":" in function else function


def _parse_entry(entry: Any, index: int) -> RewardSpec:
    where = f"reward.functions[{index}]"
    if isinstance(entry, str):
        function = entry.strip()
        if not function:
            raise RewardConfigError(f"{where}: empty reward function name")
        return RewardSpec(name=_default_name(function), function=function)
    if not isinstance(entry, dict):
        raise RewardConfigError(
            f"{where}: expected a string (built-in name or 'file.py:function') or a mapping with "
            f"keys {list(_SPEC_KEYS)}, got {type(entry).__name__}: {entry!r}"
        )
    unknown = sorted(set(entry) - set(_SPEC_KEYS))
    if unknown:
        raise RewardConfigError(f"{where}: unknown key(s) {unknown}; allowed keys: {list(_SPEC_KEYS)}")
    if "function" in entry:
        function, name = entry["function"], entry.get("name")
    else:  # {name: math_verify, weight: 0.5}: the name is the function
        function, name = entry.get("name"), None
    if not isinstance(function, str) or not function.strip():
        raise RewardConfigError(f"{where}: 'function' must be a non-empty string, got {function!r}")
    function = function.strip()
    name = _default_name(function) if name is None else name
    if not isinstance(name, str) or not name:
        raise RewardConfigError(f"{where}: 'name' must be a non-empty string, got {name!r}")
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise RewardConfigError(f"{where} ({name}): 'weight' must be a number, got {weight!r}")
    kwargs = entry.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise RewardConfigError(f"{where} ({name}): 'kwargs' must be a mapping, got {kwargs!r}")
    return RewardSpec(name=name, function=function, weight=float(weight), kwargs=dict(kwargs))


def parse_reward_specs(entries: list[Any] | str | dict[str, Any]) -> list[RewardSpec]:
    """Turn ``reward.functions`` config entries into :class:`RewardSpec` objects.

    An entry is a string (``math_verify``, ``my_rewards.py:brevity``) or a mapping with ``function``
    (or just ``name``), optional ``name`` (objective name), ``weight`` and ``kwargs``. The objective
    name defaults to the built-in name or the Python function name. Objective names must be unique.
    Does not import anything; see :func:`load_reward_functions`.
    """
    if isinstance(entries, (str, dict)):
        entries = [entries]
    if not isinstance(entries, (list, tuple)) or not entries:
        raise RewardConfigError(
            f"reward.functions must be a non-empty list of reward entries, got {entries!r}"
        )
    specs = [_parse_entry(entry, i) for i, entry in enumerate(entries)]
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        if spec.name in seen:
            raise RewardConfigError(
                f"reward.functions[{i}]: objective name {spec.name!r} is already used by "
                f"reward.functions[{seen[spec.name]}]; give one of them a distinct 'name:'"
            )
        seen[spec.name] = i
    return specs


def load_reward_function(
    function: str,
    base_dir: str | os.PathLike[str] | None = None,
    *,
    import_timeout_s: float | None = None,
) -> Callable[..., Any]:
    """Resolve a ``function`` string to a callable (see the module docstring for the forms).

    ``import_timeout_s``: time limit for importing a plug-in file or module (None: no limit; the
    limit only applies in the main thread, see the module docstring).

    Raises:
        RewardImportTimeout: the import was still running after ``import_timeout_s``.
        RewardConfigError: unknown built-in (with the closest valid name), missing file, import
            failure, missing attribute or a non-callable attribute.
    """
    function = function.strip()
    if function in BUILTIN_REWARDS:
        return BUILTIN_REWARDS[function]
    if not is_plugin_spec(function):
        valid = sorted(BUILTIN_REWARDS)
        extra = " (a file needs ':function', e.g. my_rewards.py:score)" if function.endswith(".py") else ""
        raise RewardConfigError(
            f"unknown reward function {function!r}{extra}; built-in rewards are {valid}"
            f"{did_you_mean(function, valid, cutoff=0.0)}. "
            "Custom rewards are given as 'path/to/file.py:function' or 'package.module:function'."
        )
    try:
        with _import_deadline(import_timeout_s):
            fn = load_object(function, base_dir, what="reward function")
    except PluginError as exc:
        raise RewardConfigError(str(exc)) from exc
    except _ImportDeadline:
        assert import_timeout_s is not None
        raise RewardImportTimeout(_import_target(function, base_dir), import_timeout_s) from None
    if not callable(fn) or isinstance(fn, type):
        raise RewardConfigError(
            f"{function!r} is not callable as a reward function (it is a {type(fn).__name__})"
        )
    return fn


def load_reward_functions(
    specs: list[RewardSpec],
    base_dir: str | os.PathLike[str] | None = None,
    *,
    import_timeout_s: float | None = None,
) -> list[Callable[..., Any]]:
    """Load the function of every spec, each import under its own ``import_timeout_s`` (errors
    name the objective; a timeout stays a :class:`RewardImportTimeout`)."""
    functions = []
    for spec in specs:
        try:
            functions.append(load_reward_function(spec.function, base_dir, import_timeout_s=import_timeout_s))
        except RewardImportTimeout as exc:
            prefix = f"reward objective {spec.name!r}: "
            raise RewardImportTimeout(exc.target, exc.limit_s, prefix) from None
        except RewardConfigError as exc:
            raise RewardConfigError(f"reward objective {spec.name!r}: {exc}") from exc
    return functions
