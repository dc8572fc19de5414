"""The four swappable stages: curriculum, filter, reward weighting and replay.

Each built-in stage is one file here with a small class and its own config dataclass,
registered with ``@register(kind, name, ConfigClass)``. The interfaces (``typing.Protocol``
classes), the registry and plug-in loading live in :mod:`rlengine.stages.registry`.
"""

from rlengine.stages import curriculum, filter, pcl, replay, reward_weighting  # noqa: F401  (registers built-ins)
from rlengine.stages.registry import (
    DEFAULT_STAGE,
    INTERFACES,
    REGISTRY,
    STAGE_KINDS,
    Curriculum,
    Filter,
    LearnerHandle,
    Refill,
    Replay,
    RewardWeighting,
    RolloutHandle,
    StageContext,
    build_stage,
    build_stage_config,
    register,
    stage_class,
)

__all__ = [
    "DEFAULT_STAGE",
    "INTERFACES",
    "REGISTRY",
    "STAGE_KINDS",
    "Curriculum",
    "Filter",
    "LearnerHandle",
    "Refill",
    "Replay",
    "RewardWeighting",
    "RolloutHandle",
    "StageContext",
    "build_stage",
    "build_stage_config",
    "register",
    "stage_class",
]
