"""Curriculum stage: which prompts are rolled out next.

``uniform`` walks the prompt set in a seeded, shuffled order (reshuffled every epoch).
Later choices (``pcl``) score candidates with a value model and keep those whose predicted
pass rate is nearest a target.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlengine.data import PromptDataset
from rlengine.stages.registry import Curriculum, StageContext, register


@dataclass
class UniformCurriculumConfig:
    name: str = "uniform"
    """Stage name."""


@register("curriculum", "uniform", UniformCurriculumConfig)
class UniformCurriculum(Curriculum):
    """Shuffled pass over the data, epoch after epoch. Its state is the data cursor."""

    def __init__(self, config: UniformCurriculumConfig, context: StageContext) -> None:
        self.config = config
        self.dataset = PromptDataset(context.rows, seed=context.seed)

    def select(self, num_prompts: int) -> list[dict]:
        """The next ``num_prompts`` prompt rows."""
        return self.dataset.next_batch(num_prompts)

    def state_dict(self) -> dict:
        return {"dataset": self.dataset.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.dataset.load_state_dict(state["dataset"])
