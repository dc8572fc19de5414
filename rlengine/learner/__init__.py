"""The DeepSpeed learner: ranks as Ray actors, planned and driven by ``LearnerGroup``."""

from rlengine.learner.group import LearnerGroup

__all__ = ["LearnerGroup"]
