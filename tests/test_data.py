"""Tests for rlengine.data: sources, benchmarks, synthetic prompts, templates, PromptDataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rlengine.data import (
    BENCHMARK_DIR,
    BENCHMARKS,
    DEFAULT_MATH_TEMPLATE,
    SHIPPED,
    DataError,
    PromptDataset,
    load_benchmark,
    load_prompt_source,
    make_arithmetic,
    render_prompt,
)

EXPECTED_ROWS = {
    "gsm8k_train": 7473,
    "gsm8k_test": 1319,
    "math500_test": 500,
    "aime24_test": 30,
    "aime25_test": 30,
    "amc23_test": 40,
    "minerva_math_test": 272,
    "olympiadbench_test": 675,
    "math_train_rllm": 7470,
    "math_lvl3to5_8k_train": 8521,
    "aime_1983_2023_train": 975,
}


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


CUSTOM_ROWS = [
    {"uid": "q-1", "question": "What is 1 + 1?", "final": 2, "difficulty": "easy"},
    {"uid": "q-2", "question": "What is 2 * 3?", "final": 6.0, "difficulty": "easy"},
    {"uid": "q-3", "question": "What is 10 - 7?", "final": "3", "difficulty": "medium"},
]


# --------------------------------------------------------------------------- shipped data


def test_shipped_files_exist_and_readme_ships() -> None:
    assert set(SHIPPED) == set(EXPECTED_ROWS)
    for name, file in SHIPPED.items():
        assert (BENCHMARK_DIR / file).is_file(), name
    assert (BENCHMARK_DIR / "README.md").is_file()
    assert set(BENCHMARKS.values()) <= set(SHIPPED)


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
def test_shipped_row_counts_and_fields(name: str) -> None:
    rows = load_prompt_source(name)
    assert len(rows) == EXPECTED_ROWS[name]
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids)
    for r in rows[:50]:
        assert isinstance(r["id"], str) and isinstance(r["problem"], str) and isinstance(r["answer"], str)
        assert r["problem"].strip() and r["answer"].strip()


def test_metadata_is_kept() -> None:
    row = load_prompt_source("math500_test", limit=1)[0]
    assert {"solution", "subject", "level", "unique_id"} <= set(row)
    assert isinstance(row["level"], int)


def test_benchmarks_load_by_name() -> None:
    assert len(load_benchmark("gsm8k")) == 1319
    assert len(load_benchmark("math500")) == 500
    assert len(load_benchmark("aime24")) == 30
    assert len(load_benchmark("aime25", limit=5)) == 5
    assert len(load_benchmark("math500_test", limit=3)) == 3
    # benchmark name as a prompt source, and split picks the train file
    assert len(load_prompt_source("gsm8k", split="train")) == 7473
    assert len(load_prompt_source("aime24")) == 30


def test_unknown_benchmark_lists_valid_and_closest() -> None:
    with pytest.raises(DataError) as e:
        load_benchmark("math5000")
    msg = str(e.value)
    assert "math5000" in msg and "'math500'" in msg and "aime24" in msg and "olympiadbench" in msg


# --------------------------------------------------------------------------- local files


def test_jsonl_field_mapping(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "custom.jsonl", CUSTOM_ROWS)
    rows = load_prompt_source(str(path), problem_field="question", answer_field="final", id_field="uid")
    assert [r["id"] for r in rows] == ["q-1", "q-2", "q-3"]
    assert rows[0]["problem"] == "What is 1 + 1?"
    assert [r["answer"] for r in rows] == ["2", "6", "3"]  # converted to str, 6.0 -> "6"
    assert rows[2]["difficulty"] == "medium" and rows[0]["question"] == "What is 1 + 1?"


def test_relative_path_uses_base_dir_and_generates_ids(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "p.jsonl", [{"problem": "a?", "answer": 1}, {"problem": "b?", "answer": 2}])
    rows = load_prompt_source("p.jsonl", base_dir=tmp_path, limit=1)
    assert rows == [{"id": "p.jsonl/0", "problem": "a?", "answer": "1"}]


def test_json_list_file(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"id": 7, "problem": "x?", "answer": "y"}]))
    assert load_prompt_source(str(path)) == [{"id": "7", "problem": "x?", "answer": "y"}]


def test_parquet_file(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"question": ["What is 3 + 4?", "What is 5 + 6?"], "answer": [7, 11], "level": [1, 2]})
    pq.write_table(table, tmp_path / "train.parquet")
    rows = load_prompt_source(str(tmp_path / "train.parquet"), problem_field="question")
    assert [r["answer"] for r in rows] == ["7", "11"]
    assert rows[1]["level"] == 2 and rows[1]["id"].endswith("train.parquet/1")


def test_datasets_loader_on_local_dir(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    ds_dir = tmp_path / "my_dataset" / "data"
    ds_dir.mkdir(parents=True)
    pq.write_table(
        pa.table({"question": ["What is 1 + 2?", "What is 2 + 2?"], "solution": ["3", "4"]}),
        ds_dir / "train-00000-of-00001.parquet",
    )
    pq.write_table(
        pa.table({"question": ["What is 9 + 9?"], "solution": ["18"]}), ds_dir / "test-00000-of-00001.parquet"
    )
    src = str(tmp_path / "my_dataset")
    rows = load_prompt_source(src, problem_field="question", answer_field="solution")
    assert [r["answer"] for r in rows] == ["3", "4"]
    assert rows[0]["id"].endswith("my_dataset/0")
    test_rows = load_prompt_source(src, split="test", problem_field="question", answer_field="solution")
    assert test_rows[0]["problem"] == "What is 9 + 9?"
    with pytest.raises(DataError, match="datasets.load_dataset"):
        load_prompt_source(src, split="nope", problem_field="question", answer_field="solution")


# --------------------------------------------------------------------------- errors


def test_missing_file_names_path_and_tries(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        load_prompt_source("nowhere/prompts.jsonl", base_dir=tmp_path)
    msg = str(e.value)
    assert "nowhere/prompts.jsonl" in msg and str(tmp_path) in msg and "tried" in msg


def test_missing_field_names_closest(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "custom.jsonl", CUSTOM_ROWS)
    with pytest.raises(DataError) as e:
        load_prompt_source(str(path), problem_field="questoin", answer_field="final")
    msg = str(e.value)
    assert "custom.jsonl" in msg and "'questoin'" in msg and "'question'" in msg and "'difficulty'" in msg
    with pytest.raises(DataError, match="'answer'.*'final'"):
        load_prompt_source(str(path), problem_field="question")
    # default problem field: suggests a common alias present in the data
    with pytest.raises(DataError, match="'question'"):
        load_prompt_source(str(path), answer_field="final")


def test_empty_source(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="empty"):
        load_prompt_source(str(tmp_path / "empty.jsonl"))


def test_bad_rows(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"problem": "a", "answer": "1"}\nnot json\n')
    with pytest.raises(DataError, match="bad.jsonl:2"):
        load_prompt_source(str(tmp_path / "bad.jsonl"))
    dup = _write_jsonl(tmp_path / "dup.jsonl", [{"id": 1, "problem": "a", "answer": 1}] * 2)
    with pytest.raises(DataError, match="duplicate id"):
        load_prompt_source(str(dup))
    none_answer = _write_jsonl(tmp_path / "none.jsonl", [{"problem": "a", "answer": None}])
    with pytest.raises(DataError, match="empty 'answer'"):
        load_prompt_source(str(none_answer))
    with pytest.raises(DataError, match="unsupported file type"):
        (tmp_path / "x.csv").write_text("problem,answer\n")
        load_prompt_source(str(tmp_path / "x.csv"))
    with pytest.raises(DataError, match="unexpected options"):
        load_prompt_source("gsm8k_test", num=3)


# --------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_levelled() -> None:
    a = make_arithmetic(200, seed=3)
    assert a == make_arithmetic(200, seed=3)
    assert a != make_arithmetic(200, seed=4)
    assert make_arithmetic(50, seed=3) == a[:50]  # a longer run extends a shorter one
    assert a[0]["id"] == "arith/3/0" and a[0]["problem"].startswith("What is ")
    levels = {r["level"] for r in a}
    assert len(levels) >= 3  # mixed difficulty
    for r in a:
        x, y = r["operands"]
        sym = {"add": "+", "sub": "-", "mul": "*"}[r["op"]]
        assert r["problem"] == f"What is {x} {sym} {y}?"
        assert int(r["answer"]) == {"add": x + y, "sub": x - y, "mul": x * y}[r["op"]]
        assert r["level"] == max(len(str(x)), len(str(y))) + (r["op"] == "mul")
        assert int(r["answer"]) >= 0


def test_synthetic_options_and_source() -> None:
    rows = make_arithmetic(30, 0, ops=("div",), min_digits=2, max_digits=2)
    for r in rows:
        x, y = r["operands"]
        assert x == y * int(r["answer"]) and r["level"] == 3
    src = load_prompt_source("synthetic_arithmetic", num=10, seed=1, ops=["add"], limit=4)
    assert len(src) == 4 and all(r["op"] == "add" for r in src)
    with pytest.raises(DataError, match="unknown op"):
        make_arithmetic(5, 0, ops=("pow",))
    with pytest.raises(DataError, match="min_digits"):
        make_arithmetic(5, 0, min_digits=3, max_digits=2)
    with pytest.raises(DataError, match="bad option"):
        load_prompt_source("synthetic_arithmetic", digits=3)


# --------------------------------------------------------------------------- templates


class _ChatTokenizer:
    """Minimal stand-in with the chat-template interface of HF tokenizers."""

    chat_template = "chatml"

    def apply_chat_template(
        self, messages: list[dict[str, str]], tokenize: bool, add_generation_prompt: bool
    ) -> str:
        assert tokenize is False and add_generation_prompt is True
        body = "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages)
        return body + "<|assistant|>"


def test_render_prompt_plain_template() -> None:
    assert render_prompt("What is 1+1?", None, chat_template=False) == "What is 1+1?"
    text = render_prompt("What is 1+1?", None, template=DEFAULT_MATH_TEMPLATE, chat_template=False)
    assert text == "What is 1+1?\nPlease reason step by step, and put your final answer within \\boxed{}."
    row = {"problem": "ignored", "level": 3}
    assert render_prompt("P", None, template="[L{level}] {problem} {{x}}", row=row) == "[L3] P {x}"
    assert render_prompt("P", None, system_prompt="Be brief.") == "Be brief.\n\nP"


def test_render_prompt_bad_placeholder() -> None:
    with pytest.raises(DataError) as e:
        render_prompt("P", None, template="{problme} please", chat_template=False)
    assert "{problme}" in str(e.value) and "did you mean 'problem'" in str(e.value)


def test_render_prompt_chat_template() -> None:
    tok = _ChatTokenizer()
    out = render_prompt("What is 2+3?", tok, system_prompt="sys")
    assert out == "<|system|>sys<|end|><|user|>What is 2+3?<|end|><|assistant|>"
    assert render_prompt("Q", tok, chat_template=False) == "Q"


def test_render_prompt_with_real_tokenizer(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    tk = tokenizers.Tokenizer(tokenizers.models.WordLevel({"<unk>": 0, "<|im_end|>": 1}, unk_token="<unk>"))
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>")
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    out = render_prompt("What is 2+3?", tok, template=DEFAULT_MATH_TEMPLATE)
    assert out.startswith("<|im_start|>user\nWhat is 2+3?\nPlease reason step by step")
    assert out.endswith("<|im_end|>\n<|im_start|>assistant\n")


# --------------------------------------------------------------------------- PromptDataset


def _ids(batch: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in batch]


def test_prompt_dataset_epochs_are_permutations() -> None:
    rows = make_arithmetic(10, seed=0)
    ds = PromptDataset(rows, seed=5)
    assert len(ds) == 10
    first, second = _ids(ds.next_batch(10)), _ids(ds.next_batch(10))
    assert sorted(first) == sorted(second) == sorted(r["id"] for r in rows)
    assert first != second  # reshuffled per epoch
    assert ds.state_dict() == {"epoch": 1, "cursor": 10, "seed": 5}
    other = PromptDataset(rows, seed=5)
    assert _ids(other.next_batch(20)) == first + second
    assert _ids(PromptDataset(rows, seed=6).next_batch(10)) != first


def test_prompt_dataset_resume_is_identical() -> None:
    rows = make_arithmetic(10, seed=0)
    uninterrupted = PromptDataset(rows, seed=1)
    before = [_ids(uninterrupted.next_batch(3)) for _ in range(7)]  # 21 rows: into epoch 2
    reference = [_ids(uninterrupted.next_batch(3)) for _ in range(5)]  # crosses into epoch 3

    ds = PromptDataset(rows, seed=1)
    assert [_ids(ds.next_batch(3)) for _ in range(7)] == before
    state = json.loads(json.dumps(ds.state_dict()))  # survives a JSON checkpoint
    assert state == {"epoch": 2, "cursor": 1, "seed": 1}

    resumed = PromptDataset(rows, seed=999)  # the seed comes from the state
    resumed.load_state_dict(state)
    assert [_ids(resumed.next_batch(3)) for _ in range(5)] == reference
    assert resumed.state_dict() == uninterrupted.state_dict() == {"epoch": 3, "cursor": 6, "seed": 1}


def test_prompt_dataset_errors() -> None:
    with pytest.raises(DataError):
        PromptDataset([], seed=0)
    ds = PromptDataset(make_arithmetic(3, 0), seed=0)
    with pytest.raises(DataError):
        ds.next_batch(0)
    with pytest.raises(DataError, match="missing"):
        ds.load_state_dict({"epoch": 0})
    with pytest.raises(DataError, match="does not fit"):
        ds.load_state_dict({"epoch": 0, "cursor": 9, "seed": 0})
