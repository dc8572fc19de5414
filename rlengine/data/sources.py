"""Prompt sources: shipped benchmark files, local JSONL/JSON/Parquet, HF datasets, synthetic.

Every loader returns plain rows ``{"id": str, "problem": str, "answer": str, ...}`` where
``...`` is every other field of the source row, kept as metadata (``level``, ``solution``,
``subject`` ...). Stages, rewards and evaluation only rely on the three fixed keys.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlengine.data.rows import (
    EMPTY_JSONL,
    DatasetRows,
    JsonlRows,
    check_fields,
    normalise_row,
    parse_json_line,
)
from rlengine.data.synthetic import make_arithmetic
from rlengine.errors import DataError, did_you_mean

__all__ = [
    "BENCHMARKS",
    "BENCHMARK_DIR",
    "SHIPPED",
    "DataError",
    "load_benchmark",
    "load_prompt_source",
    "shipped_path",
]

#: Folder inside the package holding the shipped JSONL files (and their README.md).
BENCHMARK_DIR: Path = Path(__file__).resolve().parent / "benchmarks"

#: Shipped name -> file name in :data:`BENCHMARK_DIR`.
SHIPPED: dict[str, str] = {
    name: f"{name}.jsonl"
    for name in (
        "gsm8k_train",
        "gsm8k_test",
        "math500_test",
        "aime24_test",
        "aime25_test",
        "amc23_test",
        "minerva_math_test",
        "olympiadbench_test",
        "math_train_rllm",
        "math_lvl3to5_8k_train",
        "aime_1983_2023_train",
    )
}

#: Benchmark name -> shipped name of its evaluation file.
BENCHMARKS: dict[str, str] = {
    "gsm8k": "gsm8k_test",
    "math500": "math500_test",
    "aime24": "aime24_test",
    "aime25": "aime25_test",
    "amc23": "amc23_test",
    "minerva_math": "minerva_math_test",
    "olympiadbench": "olympiadbench_test",
}

SYNTHETIC_SOURCE = "synthetic_arithmetic"
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")
"""The suffixes of local prompt files."""


def shipped_path(name: str) -> Path:
    """Return the path of a shipped file by shipped name or benchmark name."""
    shipped = BENCHMARKS.get(name, name)
    if shipped not in SHIPPED:
        valid = sorted(SHIPPED) + sorted(BENCHMARKS)
        raise DataError(
            f"unknown shipped data set {name!r}{did_you_mean(name, valid)}; valid names: {', '.join(valid)}"
        )
    return BENCHMARK_DIR / SHIPPED[shipped]


Locations = list[str] | None
"""Where each raw row is, for messages (``file.jsonl:7``, 1-based lines), or None for ``row <i>``."""


def _read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The objects of a JSONL file and where each is (``file:line``); blank lines are skipped."""
    rows: list[dict[str, Any]] = []
    where: list[str] = []
    with path.open("rb") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where.append(f"{path}:{lineno}")
            rows.append(parse_json_line(line, where[-1]))
    if not rows:
        raise DataError(f"{path}: {EMPTY_JSONL}")
    return rows, where


def _read_json(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason})") from e
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"{path}: a .json prompt file must hold a list of objects (or {{'data': [...]}})")
    return data


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises several unrelated types for bad files
        raise DataError(f"{path}: cannot read Parquet file ({type(e).__name__}: {e})") from e


def _read_file(path: Path) -> tuple[list[dict[str, Any]], Locations]:
    """The raw rows of a local file, and where each is (JSONL only)."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".json":
        return _read_json(path), None
    return _read_parquet(path), None


def _candidates(source: str, base_dir: str | os.PathLike[str] | None) -> list[Path]:
    """Paths ``source`` may refer to, in lookup order: base_dir first, then cwd."""
    p = Path(source).expanduser()
    if p.is_absolute():
        return [p]
    out = [Path(base_dir).expanduser() / p] if base_dir is not None else []
    out.append(Path.cwd() / p)
    return out


def _open_dataset(source: str, split: str | None, limit: int | None, kwargs: Mapping[str, Any]) -> Any:
    """``datasets.load_dataset(source, split=...)``: a memory-mapped Dataset (hub name, local
    dataset folder, or a builder such as ``parquet`` with ``data_files``)."""
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a hard dependency
        raise DataError(f"loading {source!r} needs the 'datasets' package: pip install datasets") from e
    split = split or "train"
    try:
        ds = datasets.load_dataset(source, split=split, **kwargs)
    except Exception as e:
        raise DataError(
            f"could not load prompt source {source!r} with datasets.load_dataset(split={split!r}): "
            f"{type(e).__name__}: {e}. Valid sources: a shipped name ({', '.join(sorted(SHIPPED))}), "
            f"a benchmark name ({', '.join(sorted(BENCHMARKS))}), a local .jsonl/.json/.parquet file, "
            f"{SYNTHETIC_SOURCE!r}, or a Hugging Face dataset name / local dataset folder"
        ) from e
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return ds


def _normalise(
    raw_rows: list[dict[str, Any]],
    origin: str,
    id_prefix: str,
    problem_field: str,
    answer_field: str,
    id_field: str,
    where: Locations = None,
) -> list[dict[str, Any]]:
    """Map raw rows to ``{"id", "problem", "answer", **metadata}`` and validate them. ``where``
    locates each row in messages (file and 1-based line for JSONL); default ``<origin>: row <i>``."""
    if not raw_rows:
        raise DataError(f"{origin}: the prompt source is empty (no rows)")

    def at(i: int) -> str:
        return where[i] if where is not None else f"{origin}: row {i}"

    check_fields(raw_rows[0], at(0), problem_field, answer_field, id_field)
    out: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_rows):
        row = normalise_row(raw, i, origin, id_prefix, problem_field, answer_field, id_field, where=at(i))
        if row["id"] in seen:
            first = at(seen[row["id"]]).removeprefix(f"{origin}: ")
            raise DataError(
                f"{at(i)}: duplicate id {row['id']!r} (first at {first}); ids must be unique "
                f"(choose another id_field, or drop the {id_field!r} column to get generated ids)"
            )
        seen[row["id"]] = i
        out.append(row)
    return out


def load_prompt_source(
    source: str,
    *,
    split: str | None = None,
    problem_field: str = "problem",
    answer_field: str = "answer",
    id_field: str = "id",
    limit: int | None = None,
    base_dir: str | os.PathLike[str] | None = None,
    lazy: bool = False,
    **synthetic_kwargs: Any,
) -> Sequence[dict[str, Any]]:
    """Load prompts from any supported source as ``{"id", "problem", "answer", ...}`` rows.

    With ``lazy`` the rows are read when indexed, never all at once: a ``.jsonl`` file (shipped
    names included) is indexed by line offsets (:class:`JsonlRows`), anything else goes through
    ``datasets`` and stays memory-mapped (:class:`DatasetRows`). Fields are checked on the first
    row, every other row when it is read; ids are not checked for duplicates. Synthetic rows are
    generated in memory either way.

    ``source`` is resolved in this order:

    1. ``"synthetic_arithmetic"``: :func:`rlengine.data.synthetic.make_arithmetic`, with
       ``synthetic_kwargs`` (``num`` default 1000, ``seed`` default 0, ``ops``, ``min_digits``,
       ``max_digits``).
    2. A shipped name (:data:`SHIPPED`) or benchmark name (:data:`BENCHMARKS`). For a benchmark
       name, ``split`` picks ``<name>_<split>`` when shipped (``"gsm8k"``, ``split="train"`` ->
       ``gsm8k_train``); otherwise the benchmark's test file is used.
    3. A local ``.jsonl``, ``.json`` (a list of objects) or ``.parquet`` file, looked up relative
       to ``base_dir`` first, then the current directory.
    4. Anything else goes to ``datasets.load_dataset(source, split=split or "train",
       **synthetic_kwargs)``: a local dataset folder or a Hugging Face hub name (needs network
       unless cached). Extra keyword arguments (e.g. ``name="main"``) are passed through.

    Args:
        source: see above.
        split: dataset split for ``datasets`` sources and benchmark names.
        problem_field: source field holding the problem text (copied to ``"problem"``).
        answer_field: source field holding the reference answer (converted to str in ``"answer"``).
        id_field: source field holding a unique id; when absent (default name ``"id"``), ids are
            generated as ``<source>/<index>``.
        limit: keep only the first ``limit`` rows.
        base_dir: directory that relative file paths are resolved against first.
        **synthetic_kwargs: options for the synthetic generator or ``datasets.load_dataset``.

    Raises:
        DataError: missing file (with the paths tried), missing field (with the fields present
            and the closest name), empty source, bad option or unloadable dataset.
    """
    if limit is not None and int(limit) < 1:
        raise DataError(f"limit must be a positive integer or None, got {limit!r}")
    source = str(source)
    if source == SYNTHETIC_SOURCE:
        opts = {"num": 1000, "seed": 0, **synthetic_kwargs}
        try:
            raw = make_arithmetic(**opts)
        except TypeError as e:
            raise DataError(
                f"{SYNTHETIC_SOURCE}: bad option ({e}); allowed: num, seed, ops, min_digits, max_digits"
            ) from e
        return raw[:limit] if limit is not None else raw

    if source in SHIPPED or source in BENCHMARKS:
        name = source
        if source in BENCHMARKS:
            wanted = f"{source}_{split}" if split else None
            name = wanted if wanted in SHIPPED else BENCHMARKS[source]
        _reject_options(source, synthetic_kwargs)
        path = shipped_path(name)
        if lazy:
            return JsonlRows(path, f"{name} ({path})", name, (problem_field, answer_field, id_field), limit)
        raw, where = _read_jsonl(path)
        return _normalise(
            raw[:limit], f"{name} ({path})", name, problem_field, answer_field, id_field, where[:limit]
        )

    candidates = _candidates(source, base_dir)
    existing = next((p for p in candidates if p.exists()), None)
    if existing is not None and existing.is_file():
        if existing.suffix.lower() not in FILE_SUFFIXES:
            raise DataError(
                f"{existing}: unsupported file type {existing.suffix!r}; use one of {', '.join(FILE_SUFFIXES)}"
                " (or a folder that datasets.load_dataset can read)"
            )
        _reject_options(source, synthetic_kwargs)
        fields = (problem_field, answer_field, id_field)
        if lazy and existing.suffix.lower() == ".jsonl":
            return JsonlRows(existing, str(existing), source, fields, limit)
        if lazy:
            builder = existing.suffix.lower().lstrip(".")
            dataset = _open_dataset(builder, None, limit, {"data_files": str(existing)})
            return DatasetRows(dataset, str(existing), source, fields)
        raw, where = _read_file(existing)
        return _normalise(
            raw[:limit],
            str(existing),
            source,
            problem_field,
            answer_field,
            id_field,
            where[:limit] if where is not None else None,
        )
    if existing is None and (source.lower().endswith(FILE_SUFFIXES) or source.startswith((".", "/", "~"))):
        tried = ", ".join(str(p) for p in candidates)
        raise DataError(f"prompt file {source!r} not found; tried: {tried}")

    target = str(existing) if existing is not None else source
    origin = f"{source} (datasets, split={split or 'train'})"
    if lazy:
        dataset = _open_dataset(target, split, limit, synthetic_kwargs)
        return DatasetRows(dataset, origin, source.rstrip("/"), (problem_field, answer_field, id_field))
    raw = [dict(r) for r in _open_dataset(target, split, limit, synthetic_kwargs)]
    return _normalise(raw, origin, source.rstrip("/"), problem_field, answer_field, id_field)


def _reject_options(source: str, options: Mapping[str, Any]) -> None:
    if options:
        raise DataError(
            f"{source}: unexpected options {sorted(options)}; extra keyword options are only for "
            f"{SYNTHETIC_SOURCE!r} and datasets.load_dataset sources"
        )


def load_benchmark(name: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Load a shipped evaluation set by benchmark name (see :data:`BENCHMARKS`).

    Shipped test names such as ``"math500_test"`` are accepted too.

    Raises:
        DataError: for an unknown name, listing the valid names and the closest one.
    """
    if name not in BENCHMARKS and name not in BENCHMARKS.values():
        hint = did_you_mean(name, list(BENCHMARKS) + list(BENCHMARKS.values()))
        raise DataError(f"unknown benchmark {name!r}{hint}; valid benchmarks: {', '.join(BENCHMARKS)}")
    return load_prompt_source(BENCHMARKS.get(name, name), limit=limit)
