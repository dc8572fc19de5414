"""``data.lazy``: prompt rows read on demand, so a prompt set larger than memory can be trained on."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from rlengine.config import load_config
from rlengine.data import DatasetRows, JsonlRows, PreparedRows, PromptDataset, load_prompt_source
from rlengine.errors import DataError
from rlengine.stages import StageContext
from rlengine.stages.pcl import PCLCurriculum
from rlengine.stages.value_model import ValueModelHandle


def write_jsonl(path: Path, count: int) -> Path:
    with path.open("w") as f:
        for i in range(count):
            f.write(json.dumps({"question": f"What is {i} + 1?", "answer": i + 1, "level": i % 5}) + "\n")
            if i % 7 == 0:
                f.write("\n")  # blank lines are not rows
    return path


def test_lazy_jsonl_rows_equal_the_eager_ones(tmp_path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", 50)
    eager = load_prompt_source(str(path), problem_field="question")
    lazy = load_prompt_source(str(path), problem_field="question", lazy=True)
    assert isinstance(lazy, JsonlRows) and len(lazy) == len(eager) == 50
    assert [lazy[i] for i in range(50)] == eager
    assert lazy[-1] == eager[-1] and lazy[3:6] == eager[3:6]
    assert len(load_prompt_source(str(path), problem_field="question", lazy=True, limit=7)) == 7
    with pytest.raises(IndexError):
        lazy[50]
    shipped = load_prompt_source("gsm8k_train", lazy=True, limit=20)
    assert [shipped[i] for i in range(20)] == load_prompt_source("gsm8k_train", limit=20)


def test_lazy_sources_check_fields_up_front(tmp_path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", 5)
    with pytest.raises(DataError, match="problem field 'problem' not found.*Closest: 'question'"):
        load_prompt_source(str(path), lazy=True)


def test_lazy_parquet_goes_through_datasets(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"problem": f"p{i}", "answer": str(i)} for i in range(12)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    lazy = load_prompt_source(str(tmp_path / "p.parquet"), lazy=True)
    assert isinstance(lazy, DatasetRows)
    assert list(lazy) == load_prompt_source(str(tmp_path / "p.parquet"))


def test_a_lazy_index_is_far_smaller_than_the_rows(tmp_path) -> None:
    path = write_jsonl(tmp_path / "big.jsonl", 100_000)  # ~5 MB of JSON
    tracemalloc.start()
    lazy = load_prompt_source(str(path), problem_field="question", lazy=True)
    lazy_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    eager = load_prompt_source(str(path), problem_field="question")
    eager_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(lazy) == len(eager) == 100_000
    assert lazy_peak < 2_000_000 and lazy_peak * 20 < eager_peak, (lazy_peak, eager_peak)


class CountingRows(PreparedRows):
    """Records which rows are read."""

    def __init__(self, rows: list[dict | None]) -> None:
        super().__init__(rows, lambda row: row)
        self.read: list[int] = []

    def row(self, i: int):
        self.read.append(i)
        return super().row(i)


def test_prompt_dataset_reads_only_what_it_serves_and_skips_unusable_rows() -> None:
    rows = [None if i % 3 == 0 else {"id": str(i)} for i in range(30)]
    counting = CountingRows(rows)
    dataset = PromptDataset(counting, seed=0)
    batch = dataset.next_batch(4)
    assert len(batch) == 4 and all(int(r["id"]) % 3 for r in batch)
    assert len(counting.read) == 4 + dataset.skipped
    with pytest.raises(DataError, match="every one was skipped"):
        PromptDataset(CountingRows([None] * 5), seed=0).next_batch(1)


def test_pcl_reads_only_its_candidates() -> None:
    class Constant(ValueModelHandle):
        def __init__(self) -> None:
            super().__init__(lambda method, *a: [0.5] * len(a[0]) if method == "predict" else {}, "test")

    counting = CountingRows([{"id": str(i), "problem": "p", "answer": "1"} for i in range(10_000)])
    cfg = load_config(None, ["curriculum.name=pcl", "curriculum.candidates_factor=4"]).curriculum
    stage = PCLCurriculum(cfg, StageContext(counting, 0, ["acc"], [1.0]), model=Constant())
    assert len(stage.select(8)) == 8
    assert len(counting.read) == 32


def test_trainer_prepares_lazy_rows_like_eager_ones(tmp_path) -> None:
    from transformers import AutoTokenizer

    from rlengine.data.prompts import load_prompt_rows
    from rlengine.models import make_tiny_model

    tokenizer = AutoTokenizer.from_pretrained(make_tiny_model(tmp_path / "tiny", num_heads=2, seed=0))
    path = write_jsonl(tmp_path / "p.jsonl", 20)
    long = {"question": "What is " + " + ".join(["1"] * 400) + "?", "answer": 400}
    with path.open("a") as f:
        f.write(json.dumps(long) + "\n")
    overrides = [
        f"data.source={path}",
        "data.problem_field=question",
        "rollout.max_model_len=512",
        "rollout.max_tokens=256",
    ]
    eager = load_prompt_rows(load_config(None, overrides), tokenizer)
    lazy = load_prompt_rows(load_config(None, [*overrides, "data.lazy=true"]), tokenizer)
    assert len(eager) == 20 and len(lazy) == 21  # the long prompt is dropped up front, or read as None
    assert [lazy[i] for i in range(20)] == eager and lazy[20] is None
