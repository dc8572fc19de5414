"""Prompt data for rlengine: sources, shipped benchmarks, synthetic arithmetic, templates.

Public API::

    load_prompt_source(source, *, split=None, problem_field="problem", answer_field="answer",
                       id_field="id", limit=None, base_dir=None, **synthetic_kwargs) -> list[dict]
    load_benchmark(name, limit=None) -> list[dict]
    make_arithmetic(num, seed, *, ops=("add", "sub", "mul"), min_digits=1, max_digits=4)
    render_prompt(problem, tokenizer, *, template="{problem}", chat_template=True,
                  system_prompt=None, row=None) -> str
    PromptDataset(rows, seed)   # seeded epoch shuffling with a resumable cursor
    SHIPPED, BENCHMARKS, DEFAULT_MATH_TEMPLATE, DataError
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Sequence
from typing import Any

from rlengine.data.rows import DatasetRows, JsonlRows, PreparedRows
from rlengine.data.sources import (
    BENCHMARK_DIR,
    BENCHMARKS,
    SHIPPED,
    load_benchmark,
    load_prompt_source,
    shipped_path,
)
from rlengine.data.synthetic import make_arithmetic
from rlengine.data.templates import DEFAULT_MATH_TEMPLATE, PLAIN_TEMPLATE, fill_template, render_prompt
from rlengine.errors import DataError

__all__ = [
    "BENCHMARKS",
    "BENCHMARK_DIR",
    "DEFAULT_MATH_TEMPLATE",
    "PLAIN_TEMPLATE",
    "SHIPPED",
    "DataError",
    "DatasetRows",
    "JsonlRows",
    "PreparedRows",
    "PromptDataset",
    "fill_template",
    "load_benchmark",
    "load_prompt_source",
    "make_arithmetic",
    "render_prompt",
    "shipped_path",
]


class PromptDataset:
    """Rows served in seeded, epoch-wise shuffled order, with a resumable cursor.

    Every epoch visits each row exactly once, in a permutation that depends only on
    ``(seed, epoch)``. :meth:`next_batch` continues across epoch boundaries, so a batch may
    end one epoch and start the next. ``state_dict()`` / ``load_state_dict()`` capture
    ``(epoch, cursor, seed)``; a dataset built from the same rows and loaded with that state
    yields exactly the batches the original would have yielded next.

    ``rows`` is read by index, never copied, so it may be a lazy sequence
    (:class:`rlengine.data.rows.PreparedRows`): only the rows served are read. A row that reads as
    None (a prompt too long for the rollout) is skipped and counted in :attr:`skipped`.

    Args:
        rows: prompt rows (``{"id", "problem", "answer", ...}``); must not be empty.
        seed: shuffling seed.
        shuffle: if False, every epoch uses the original row order.
    """

    def __init__(self, rows: Sequence[dict[str, Any]], seed: int = 0, *, shuffle: bool = True) -> None:
        if len(rows) == 0:
            raise DataError("PromptDataset needs at least one row")
        self.rows: Sequence[dict[str, Any] | None] = rows if isinstance(rows, Sequence) else list(rows)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.epoch = 0
        self.cursor = 0
        self.skipped = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> array:
        order = array("q", range(len(self.rows)))  # 8 bytes a row
        if self.shuffle:
            # A string seed is hashed with SHA-512 by `random`, so it is stable across processes.
            random.Random(f"rlengine.PromptDataset/{self.seed}/{epoch}").shuffle(order)
        return order

    def __len__(self) -> int:
        return len(self.rows)

    def next_batch(self, k: int) -> list[dict[str, Any]]:
        """Return the next ``k`` rows (shallow copies), moving into the next epoch as needed."""
        if int(k) < 1:
            raise DataError(f"next_batch needs k >= 1, got {k}")
        batch: list[dict[str, Any]] = []
        misses = 0
        while len(batch) < int(k):
            if self.cursor >= len(self.rows):
                self.epoch += 1
                self.cursor = 0
                self._order = self._permutation(self.epoch)
            row = self.rows[self._order[self.cursor]]
            self.cursor += 1
            if row is None:
                self.skipped += 1
                misses += 1
                if misses >= len(self.rows):
                    raise DataError(
                        "no row of the prompt source can be used: every one was skipped (too long?)"
                    )
                continue
            batch.append(dict(row))
        return batch

    def state_dict(self) -> dict[str, int]:
        """Return ``{"epoch", "cursor", "seed"}`` (JSON-serialisable)."""
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a position saved by :meth:`state_dict` (rows must be the same)."""
        missing = [k for k in ("epoch", "cursor", "seed") if k not in state]
        if missing:
            raise DataError(f"PromptDataset state is missing {missing}; got keys {sorted(state)}")
        epoch, cursor = int(state["epoch"]), int(state["cursor"])
        if epoch < 0 or not 0 <= cursor <= len(self.rows):
            raise DataError(
                f"PromptDataset state epoch={epoch}, cursor={cursor} does not fit a dataset of "
                f"{len(self.rows)} rows (was it saved for different data?)"
            )
        self.seed = int(state["seed"])
        self.epoch, self.cursor = epoch, cursor
        self._order = self._permutation(epoch)
