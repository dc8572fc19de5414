"""The four swappable stages: curriculum, filter, reward weighting and replay.

Each built-in stage is one file here with a small class and its own config dataclass,
registered with ``@register(kind, name, ConfigClass)``. The base class of each kind (its
interface, with no-op defaults for the optional hooks), the registry and plug-in loading live in
:mod:`rlengine.stages.registry`.
"""

from rlengine.stages import curriculum, filter, pcl, recap, replay, reward_weighting  # noqa: F401  (registers built-ins)
from rlengine.stages.registry import (
    BASES,
    DEFAULT_STAGE,
    REGISTRY,
    REQUIRED,
    STAGE_KINDS,
    Curriculum,
    Filter,
    LearnerHandle,
    Refill,
    Replay,
    RewardWeighting,
    RolloutHandle,
    Stage,
    StageContext,
    build_stage,
    build_stage_config,
    register,
    stage_class,
)

__all__ = [
    "DEFAULT_STAGE",
    "BASES",
    "REQUIRED",
    "REGISTRY",
    "STAGE_KINDS",
    "Curriculum",
    "Filter",
    "LearnerHandle",
    "Refill",
    "Replay",
    "RewardWeighting",
    "RolloutHandle",
    "Stage",
    "StageContext",
    "build_stage",
    "build_stage_config",
    "register",
    "stage_class",
]
