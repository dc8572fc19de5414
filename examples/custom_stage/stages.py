"""A curriculum plug-in: easiest prompts first, harder levels unlocked as pass rates rise.

Named in YAML as ``curriculum: {name: stages.py:EasyFirstCurriculum, <options>}``; the file is
found next to the YAML file. The trainer builds it as ``EasyFirstCurriculum(config, context)``
where ``config`` is an :class:`EasyFirstConfig` filled from the section's other keys (validated
like every other config key) and ``context.rows`` / ``context.seed`` are the prompt rows and the
run's seed. It implements the ``rlengine.stages.Curriculum`` protocol: ``select``, ``observe``,
``state_dict`` and ``load_state_dict``.

How it works. Rows are ordered by their difficulty field (``level`` in synthetic arithmetic rows,
see ``rlengine/data/synthetic.py``), easiest first, in a seeded shuffle within each level. Only
the levels up to the current *frontier* level are unlocked. ``select`` walks the unlocked rows in
that order and starts again from the easiest when it reaches the end (so easier levels are
reviewed). ``observe`` keeps the pass rates of the last ``window`` rolled-out prompts at the
frontier level; once the window is full and its mean reaches ``advance_threshold``, the next level
is unlocked, the window is cleared, and ``select`` continues with the newly unlocked rows.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from typing import Any

from rlengine.errors import ConfigError

__all__ = ["EasyFirstConfig", "EasyFirstCurriculum"]


@dataclass
class EasyFirstConfig:
    """Options of ``EasyFirstCurriculum`` (the keys of the YAML ``curriculum`` section)."""

    level_field: str = "level"
    """Row field holding the difficulty (a number; smaller is easier)."""
    start_level: int | None = None
    """Highest level unlocked at the start; null = only the easiest level in the data."""
    advance_threshold: float = 0.6
    """Mean pass rate over the window that unlocks the next level, in [0, 1]."""
    window: int = 16
    """How many of the latest rolled-out frontier-level prompts the mean pass rate is taken over;
    the next level is unlocked only once this many have been observed at the current level."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.advance_threshold <= 1.0:
            raise ConfigError(
                f"curriculum.advance_threshold: expected a value in [0, 1], got {self.advance_threshold}"
            )
        if self.window < 1:
            raise ConfigError(f"curriculum.window: expected a positive integer, got {self.window}")


class EasyFirstCurriculum:
    """Easiest-first curriculum over a difficulty field that advances on observed pass rates."""

    config_class = EasyFirstConfig

    def __init__(self, config: EasyFirstConfig, context: Any) -> None:
        self.config = config
        self.rows = list(context.rows)
        if not self.rows:
            raise ValueError("EasyFirstCurriculum: no prompt rows")
        field = config.level_field
        missing = [r.get("id", i) for i, r in enumerate(self.rows) if field not in r]
        if missing:
            raise ValueError(
                f"EasyFirstCurriculum: {len(missing)} row(s) lack the level field {field!r} "
                f"(first: {missing[0]!r}); set curriculum.level_field to the row's difficulty field"
            )
        self.levels = sorted({r[field] for r in self.rows})
        rng = random.Random(context.seed)
        self.order: list[int] = []
        self.level_end: list[int] = []  # order[:level_end[k]] holds the rows of levels[:k + 1]
        for level in self.levels:
            indices = [i for i, r in enumerate(self.rows) if r[field] == level]
            rng.shuffle(indices)
            self.order += indices
            self.level_end.append(len(self.order))
        start = config.start_level
        below = [k for k, level in enumerate(self.levels) if start is not None and level <= start]
        self.level_index = below[-1] if below else 0
        self.cursor = 0
        self.recent: list[float] = []

    @property
    def level(self) -> Any:
        """The frontier: the hardest unlocked level."""
        return self.levels[self.level_index]

    def select(self, num_prompts: int) -> list[dict]:
        """The next ``num_prompts`` unlocked rows, easiest level first, wrapping around."""
        end = self.level_end[self.level_index]
        chosen = []
        for _ in range(num_prompts):
            chosen.append(self.rows[self.order[self.cursor]])
            self.cursor = (self.cursor + 1) % end
        return chosen

    def observe(self, prompts: list[dict], pass_rates: list[float]) -> dict[str, float]:
        """Record the pass rates of frontier-level prompts; unlock the next level when their
        windowed mean reaches ``advance_threshold``. Returns ``curriculum/*`` metrics."""
        field, frontier = self.config.level_field, self.level
        for prompt, rate in zip(prompts, pass_rates):
            if prompt.get(field) == frontier:
                self.recent.append(float(rate))
        self.recent = self.recent[-self.config.window :]
        frontier_pass_rate = statistics.fmean(self.recent) if self.recent else 0.0
        advanced = (
            len(self.recent) >= self.config.window
            and frontier_pass_rate >= self.config.advance_threshold
            and self.level_index + 1 < len(self.levels)
        )
        if advanced:
            self.cursor = self.level_end[self.level_index]  # serve the new level's rows next
            self.level_index += 1
            self.recent = []
        return {
            "curriculum/level": float(self.level),
            "curriculum/frontier_pass_rate": frontier_pass_rate,
            "curriculum/advanced": 1.0 if advanced else 0.0,
            "curriculum/unlocked_fraction": self.level_end[self.level_index] / len(self.rows),
        }

    def state_dict(self) -> dict:
        """Plain data (saved in every checkpoint): the frontier, the cursor and the window."""
        return {
            "level_index": self.level_index,
            "cursor": self.cursor,
            "recent": list(self.recent),
            "num_rows": len(self.rows),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["num_rows"] != len(self.rows):
            raise ValueError(
                f"EasyFirstCurriculum: checkpoint was saved with {state['num_rows']} rows, "
                f"this run has {len(self.rows)}"
            )
        self.level_index = int(state["level_index"])
        self.cursor = int(state["cursor"])
        self.recent = [float(r) for r in state["recent"]]
