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
from bisect import bisect_right
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
    """``origin: <kind> field '<field>' not found``, with the fields present and the closest one."""
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
    """The fields must be present in the first row (the rest are checked as they are read).

    ``origin`` starts the message: the source, or where the first row is (``file.jsonl:1``)."""
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
    where: str | None = None,
) -> dict[str, Any]:
    """One source row as ``{"id", "problem", "answer", **metadata}``, validated.

    ``where`` starts an error message: the file and 1-based line (``prompts.jsonl:7``) for JSONL
    files; default ``<origin>: row <i>`` (0-based index). Each message says what was expected."""
    where = where or f"{origin}: row {i}"
    fields = list(raw.keys())
    if problem_field not in raw:
        raise missing_field_error(where, "problem", problem_field, fields, _PROBLEM_ALIASES)
    if answer_field not in raw:
        raise missing_field_error(where, "answer", answer_field, fields, _ANSWER_ALIASES)
    problem, answer = raw[problem_field], raw[answer_field]
    if not isinstance(problem, str) or not problem.strip():
        raise DataError(
            f"{where}: {problem_field!r} must be the problem text, a non-empty string; "
            f"got {_shown(problem)} ({_json_type(problem)})"
        )
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        raise DataError(
            f"{where}: empty {answer_field!r} (got {_shown(answer)}); expected the reference "
            "answer, a non-empty string or a number"
        )
    if isinstance(answer, dict):
        raise DataError(
            f"{where}: {answer_field!r} must be the reference answer, a string, a number or a list; "
            f"got {_shown(answer)} (object)"
        )
    rid = raw.get(id_field)
    rid = f"{id_prefix}/{i}" if rid is None or rid == "" else str(rid)
    row = dict(raw)
    row.update(id=rid, problem=problem, answer=_to_str_answer(answer))
    return row


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type (``null``, ``number``, ``array`` ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string" if isinstance(value, str) else type(value).__name__


def _shown(value: Any, width: int = 60) -> str:
    """A value as JSON (``null``, ``""``, ``12``), cut to ``width`` characters."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def parse_json_line(line: str | bytes, where: str) -> dict[str, Any]:
    """One JSONL line as a dict; ``where`` (file and line, ``prompts.jsonl:7``) starts the error."""
    try:
        row = json.loads(line.rstrip(b"\r\n" if isinstance(line, bytes) else "\r\n"))
    except json.JSONDecodeError as e:
        raise DataError(
            f"{where}: invalid JSON ({e.msg} at column {e.colno}); expected one JSON object per line"
        ) from e
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not UTF-8 text ({e.reason}); expected one JSON object per line") from e
    if not isinstance(row, dict):
        raise DataError(
            f'{where}: expected a JSON object per line ({{"problem": ..., "answer": ...}}), '
            f"got a JSON {_json_type(row)}"
        )
    return row


EMPTY_JSONL = "the file is empty (no rows); expected one JSON object per line"
"""The message for a JSONL file without a non-blank line."""


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
    non-empty line starts; rows are not kept in memory. Errors name the file and the 1-based line
    (blank lines are skipped, and remembered only where they occur, to number lines)."""

    def __init__(
        self, path: Path, origin: str, id_prefix: str, fields: tuple[str, str, str], limit: int | None = None
    ) -> None:
        self.path, self.origin, self.id_prefix, self.fields = Path(path), origin, id_prefix, fields
        self.offsets = array("q")
        self._blank_rows = array("q")
        """Row indices that follow blank lines, with the count of blank lines before them in
        :attr:`_blank_counts`: a row's line is its index + 1 + the blanks before it."""
        self._blank_counts = array("q")
        with self.path.open("rb") as f:
            position = blank = 0
            for line in f:
                if line.strip():
                    if blank and (not self._blank_counts or self._blank_counts[-1] != blank):
                        self._blank_rows.append(len(self.offsets))
                        self._blank_counts.append(blank)
                    self.offsets.append(position)
                    if limit is not None and len(self.offsets) >= limit:
                        break
                else:
                    blank += 1
                position += len(line)
        if not self.offsets:
            raise DataError(f"{self.path}: {EMPTY_JSONL}")
        self._file = None
        check_fields(self._raw(0), self.where(0), *fields)

    def __len__(self) -> int:
        return len(self.offsets)

    def line(self, i: int) -> int:
        """The 1-based line number of row ``i``."""
        k = bisect_right(self._blank_rows, i)
        return i + 1 + (self._blank_counts[k - 1] if k else 0)

    def where(self, i: int) -> str:
        """``<file>:<line>`` of row ``i``, for messages."""
        return f"{self.path}:{self.line(i)}"

    def _raw(self, i: int) -> dict[str, Any]:
        if self._file is None:
            self._file = self.path.open("rb")
        self._file.seek(self.offsets[i])
        return parse_json_line(self._file.readline(), self.where(i))

    def row(self, i: int) -> dict[str, Any]:
        return normalise_row(self._raw(i), i, self.origin, self.id_prefix, *self.fields, where=self.where(i))

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
