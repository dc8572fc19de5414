"""Prompt rows: validating one source row, and row sequences read on demand (``data.lazy``).

``normalise_row`` maps a source row to ``{"id", "problem", "answer", **metadata}``. The lazy
sequences index a source once and read a row only when it is asked for, so a prompt set larger
than memory can be trained on: :class:`JsonlRows` keeps the byte offset of every line (8 bytes a
row), :class:`DatasetRows` wraps a memory-mapped ``datasets.Dataset``, :class:`PreparedRows`
renders and tokenises a row when it is drawn.
"""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rlengine.errors import DataError, closest

# Field names that often hold the problem / answer in public datasets (used in hints).
_PROBLEM_ALIASES = ("problem", "question", "prompt", "query", "input", "instruction")
_ANSWER_ALIASES = ("answer", "final_answer", "solution", "target", "output", "label", "ground_truth")


def _to_str_answer(value: Any) -> str:
    """Convert an answer to a string: integral floats lose ``.0``, lists are joined with commas."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return ",".join(_to_str_answer(v) for v in value)
    return str(value).strip()


def missing_field_error(
    origin: str, kind: str, field: str, fields: list[str], aliases: tuple[str, ...]
) -> DataError:
    hint = closest(field, fields, cutoff=0.5)
    if hint is None:
        hint = next((a for a in aliases if a in fields), None)
    msg = f"{origin}: {kind} field {field!r} not found; fields present: {fields}"
    if hint is not None:
        msg += f". Closest: {hint!r} (set {kind}_field={hint!r})"
    return DataError(msg)


def check_fields(
    first: dict[str, Any], origin: str, problem_field: str, answer_field: str, id_field: str
) -> None:
    """The fields must be present in the first row (the rest are checked as they are read)."""
    fields = list(first.keys())
    if problem_field not in first:
        raise missing_field_error(origin, "problem", problem_field, fields, _PROBLEM_ALIASES)
    if answer_field not in first:
        raise missing_field_error(origin, "answer", answer_field, fields, _ANSWER_ALIASES)
    if id_field != "id" and id_field not in first:
        raise missing_field_error(origin, "id", id_field, fields, ("id", "uid", "unique_id", "idx"))


def normalise_row(
    raw: dict[str, Any],
    i: int,
    origin: str,
    id_prefix: str,
    problem_field: str,
    answer_field: str,
    id_field: str,
) -> dict[str, Any]:
    """One source row as ``{"id", "problem", "answer", **metadata}``, validated."""
    problem, answer = raw.get(problem_field), raw.get(answer_field)
    if not isinstance(problem, str) or not problem.strip():
        raise DataError(f"{origin}: row {i} has no usable {problem_field!r} text (got {problem!r})")
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        raise DataError(f"{origin}: row {i} has an empty {answer_field!r} (got {answer!r})")
    rid = raw.get(id_field)
    rid = f"{id_prefix}/{i}" if rid is None or rid == "" else str(rid)
    row = dict(raw)
    row.update(id=rid, problem=problem, answer=_to_str_answer(answer))
    return row


def parse_json_line(line: str | bytes, where: str) -> dict[str, Any]:
    """One JSONL line as a dict; ``where`` (file and line or row) starts the error message."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: invalid JSON line ({e.msg})") from e
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return row


class LazyRows(Sequence):
    """A sequence whose row ``i`` is made by :meth:`row` when it is indexed (slices and negative
    indices as for a list)."""

    def row(self, i: int) -> Any:
        raise NotImplementedError

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self.row(j) for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self.row(i % len(self))


class JsonlRows(LazyRows):
    """Rows of a JSONL file, normalised when read. One pass at construction records where each
    non-empty line starts; rows are not kept in memory."""

    def __init__(
        self, path: Path, origin: str, id_prefix: str, fields: tuple[str, str, str], limit: int | None = None
    ) -> None:
        self.path, self.origin, self.id_prefix, self.fields = Path(path), origin, id_prefix, fields
        self.offsets = array("q")
        with self.path.open("rb") as f:
            position = 0
            for line in f:
                if line.strip():
                    self.offsets.append(position)
                    if limit is not None and len(self.offsets) >= limit:
                        break
                position += len(line)
        if not self.offsets:
            raise DataError(f"{origin}: the prompt source is empty (no rows)")
        self._file = None
        check_fields(self._raw(0), origin, *fields)

    def __len__(self) -> int:
        return len(self.offsets)

    def _raw(self, i: int) -> dict[str, Any]:
        if self._file is None:
            self._file = self.path.open("rb")
        self._file.seek(self.offsets[i])
        return parse_json_line(self._file.readline(), f"{self.path}: row {i}")

    def row(self, i: int) -> dict[str, Any]:
        return normalise_row(self._raw(i), i, self.origin, self.id_prefix, *self.fields)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None}


class DatasetRows(LazyRows):
    """Rows of a ``datasets.Dataset`` (memory-mapped Arrow), normalised when read."""

    def __init__(self, dataset: Any, origin: str, id_prefix: str, fields: tuple[str, str, str]) -> None:
        if len(dataset) == 0:
            raise DataError(f"{origin}: the prompt source is empty (no rows)")
        self.dataset, self.origin, self.id_prefix, self.fields = dataset, origin, id_prefix, fields
        check_fields(dict(dataset[0]), origin, *fields)

    def __len__(self) -> int:
        return len(self.dataset)

    def row(self, i: int) -> dict[str, Any]:
        return normalise_row(dict(self.dataset[i]), i, self.origin, self.id_prefix, *self.fields)


class PreparedRows(LazyRows):
    """``prepare(row)`` applied when a row is read: the rendered, tokenised prompt, or None for a
    prompt that cannot be used (too long); :class:`rlengine.data.PromptDataset` skips those."""

    def __init__(
        self, rows: Sequence[dict[str, Any]], prepare: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> None:
        self.rows, self.prepare = rows, prepare

    def __len__(self) -> int:
        return len(self.rows)

    def row(self, i: int) -> dict[str, Any] | None:
        return self.prepare(self.rows[i])
