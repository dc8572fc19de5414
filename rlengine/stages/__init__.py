"""The four swappable stages and their registry.

Each stage is one file with a small class and its own config dataclass. A stage is chosen
in YAML by ``name``; the other keys of its section are that class's config::

    filter:
      name: none

To add a stage, write the class and its config dataclass and decorate the class with
``@register("filter", "my_name", MyConfig)``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

STAGE_KINDS = ("curriculum", "filter", "reward_weighting", "replay")
DEFAULT_STAGE = {"curriculum": "uniform", "filter": "none", "reward_weighting": "static", "replay": "none"}
REGISTRY: dict[str, dict[str, tuple[type, type]]] = {kind: {} for kind in STAGE_KINDS}


def register(kind: str, name: str, config_cls: type):
    """Class decorator adding a stage implementation to the registry."""

    def wrap(cls: type) -> type:
        REGISTRY[kind][name] = (cls, config_cls)
        cls.stage_name = name
        return cls

    return wrap


@dataclass
class StageContext:
    """What a stage may need when it is built: the prompt rows, the seed, the reward names."""

    rows: list[dict]
    seed: int
    objectives: list[str]
    reward_weights: list[float]


def _ensure_loaded() -> None:
    from rlengine.stages import curriculum, filter, replay, reward_weighting  # noqa: F401


def build_stage_config(kind: str, raw: Any) -> Any:
    """Validate a stage section into its config dataclass (``name`` defaults per kind)."""
    from rlengine.config import ConfigError, from_dict

    _ensure_loaded()
    raw = dict(raw or {})
    name = raw.pop("name", DEFAULT_STAGE[kind])
    choices = REGISTRY[kind]
    if name not in choices:
        match = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.4)
        hint = f" (did you mean '{match[0]}'?)" if match else ""
        raise ConfigError(f"{kind}.name: unknown {kind} '{name}'{hint}; valid: {', '.join(choices)}")
    config = from_dict(choices[name][1], raw, kind)
    config.name = name
    return config


def build_stage(kind: str, config: Any, context: StageContext) -> Any:
    """Instantiate the stage selected by ``config.name``."""
    _ensure_loaded()
    cls, _ = REGISTRY[kind][config.name]
    return cls(config, context)
