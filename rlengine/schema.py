"""Typed dataclass schemas from plain mappings: the validation behind every config section.

:func:`from_dict` builds a dataclass from a mapping (YAML), rejecting unknown keys with the
closest valid key and wrong types with the expected type. Both the run config and stage
configs (built-in or plug-in) go through it. A leaf module: it imports only ``errors``.
"""

from __future__ import annotations

import dataclasses
import keyword
import math
import types
import typing
from typing import Annotated, Any, Literal, Union

from rlengine.errors import ConfigError, did_you_mean


class RangeError(ConfigError):
    """A number outside its field's :class:`Range` (or NaN / inf)."""


@dataclasses.dataclass(frozen=True)
class Range:
    """The interval a numeric config field must lie in, declared on the field itself::

        lr: Annotated[float, Range(0)] = 1e-6               # lr >= 0
        top_p: Annotated[float, Range(0, 1, low_open=True)]  # 0 < top_p <= 1

    Checked by :func:`from_dict` whenever a config is built. NaN and inf never pass.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    """Exclude ``low`` itself."""
    high_open: bool = False
    """Exclude ``high`` itself."""

    def describe(self) -> str:
        """``>= 1``, ``> 0``, ``in (0, 1]`` ..."""
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return "finite"

    def contains(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.high_open and value == self.high))


Positive = Annotated[float, Range(0, low_open=True)]
"""A finite float > 0."""
NonNegative = Annotated[float, Range(0)]
"""A finite float >= 0."""
Fraction = Annotated[float, Range(0, 1)]
"""A finite float in [0, 1]."""
PositiveFraction = Annotated[float, Range(0, 1, low_open=True)]
"""A finite float in (0, 1] (a share that cannot be 0: top_p, a failure fraction)."""
Count = Annotated[int, Range(1)]
"""An int >= 1."""
NonNegativeInt = Annotated[int, Range(0)]
"""An int >= 0."""


def type_name(tp: Any) -> str:
    """Readable name of a type annotation (``'ppo' | 'gspo'``, ``float or null``, ``int >= 1``)."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *extras = typing.get_args(tp)
        ranges = [e.describe() for e in extras if isinstance(e, Range)]
        return f"{type_name(base)} {' '.join(ranges)}".strip()
    if origin is Literal:
        return " | ".join(repr(v) for v in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _expected(tp: Any, value: Any, path: str) -> ConfigError:
    hint = ""
    if isinstance(value, str) and tp in (float, int):
        try:
            float(value)
            hint = " (YAML reads numbers like 1e-6 as strings: write 1.0e-6)"
        except ValueError:
            pass
    return ConfigError(f"{path}: expected {type_name(tp)}, got {value!r} ({type(value).__name__}){hint}")


def coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it (ints widen to floats)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Annotated:
        base, *extras = typing.get_args(tp)
        value = coerce(value, base, path)
        for bound in extras:
            if isinstance(bound, Range) and not bound.contains(value):
                raise RangeError(f"{path}: expected {type_name(base)} {bound.describe()}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return coerce(value, arg, path)
            except RangeError:
                raise  # the right type, out of range: that is the message
            except ConfigError:
                pass
        non_null = [a for a in typing.get_args(tp) if a is not type(None)]
        raise _expected(non_null[0] if len(non_null) == 1 else tp, value, path)
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{path}: expected null, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed and type(value) is type(allowed[allowed.index(value)]):
            return value
        raise ConfigError(
            f"{path}: invalid value {value!r}; allowed: {', '.join(map(repr, allowed))}"
            f"{did_you_mean(value, allowed)}"
        )
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r} ({type(value).__name__})")
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r} ({type(value).__name__})")
        args = typing.get_args(tp)
        if len(args) == 2:
            return {k: coerce(v, args[1], f"{path}.{k}") for k, v in value.items()}
        return dict(value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise RangeError(f"{path}: expected a finite number, got {value!r}")
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is bool or tp is str:
        if isinstance(value, tp):
            return value
    else:
        raise TypeError(f"unsupported annotation {tp} at {path}")
    raise _expected(tp, value, path)


def yaml_key(field_name: str) -> str:
    """The config key of a dataclass field: a Python keyword is spelled with a trailing underscore
    in code (``lambda_``) and without it in YAML (``lambda``)."""
    stem = field_name[:-1]
    return stem if field_name.endswith("_") and keyword.iskeyword(stem) else field_name


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types.

    ``path`` is the dotted prefix used in error messages (``learner`` gives ``learner.lr: ...``).
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {yaml_key(f.name): f.name for f in dataclasses.fields(cls) if f.init}
    names = list(fields)
    kwargs = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in fields:
            raise ConfigError(
                f"unknown key '{where}'{did_you_mean(key, names)}; valid keys: {', '.join(names)}"
            )
        kwargs[fields[key]] = coerce(value, hints[fields[key]], where)
    return cls(**kwargs)


def to_dict(cfg: Any) -> Any:
    """Plain-data (YAML-serialisable) view of a config dataclass."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        out = {yaml_key(f.name): to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
        if "name" not in out and isinstance(getattr(cfg, "name", None), str):
            out = {"name": cfg.name, **out}  # a plug-in stage's config carries its name as an attribute
        return out
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg
