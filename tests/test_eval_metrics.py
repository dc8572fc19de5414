"""Tests of the model-free evaluation logic in rlengine.eval."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from reward import RewardPool, RewardSpec
from rlengine.data import DEFAULT_MATH_TEMPLATE, render_prompt
from rlengine.eval import (
    ProblemResult,
    compare,
    default_ks,
    evaluate,
    format_compare_table,
    format_table,
    grade_completions,
    load_summary,
    majority_vote,
    make_grading_pool,
    pass_at_k,
    summarize,
    write_results,
    write_results_json,
)
from rlengine.eval.runner import load_eval_benchmarks

PLUGINS = Path(__file__).parent / "fixtures" / "reward_plugins.py"
ROWS = [
    {"id": "p1", "problem": "What is 1/2?", "answer": "\\frac{1}{2}"},
    {"id": "p2", "problem": "What is 10^3?", "answer": "1000"},
    {"id": "p3", "problem": "Solve x-3=0.", "answer": "3"},
]
TEXTS = [
    ["\\boxed{0.5}", "\\boxed{\\dfrac{1}{2}}", "the answer is 3", "\\boxed{2}"],  # 2 right, tie -> 0.5
    ["so it is 1,000", "\\boxed{999}", "\\boxed{999}", "no idea"],  # 1 right, majority 999 wrong
    ["\\boxed{x=3}", "\\boxed{3}", "\\boxed{3}", "\\boxed{3}"],  # 4 right
]


def _completions() -> list[list[dict[str, Any]]]:
    out = [[{"text": t, "num_tokens": 10, "finish_reason": "stop"} for t in texts] for texts in TEXTS]
    out[0][3].update(num_tokens=34, finish_reason="length")
    return out


@pytest.fixture(scope="module")
def records() -> list[ProblemResult]:
    with make_grading_pool(num_workers=0) as pool:
        return grade_completions(ROWS, _completions(), reward_pool=pool)


# ---------------------------------------------------------------- pass@k and maj@n
def test_pass_at_k_hand_computed() -> None:
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert pass_at_k(4, 0, 1) == 0.0 and pass_at_k(4, 0, 4) == 0.0
    assert pass_at_k(4, 4, 1) == 1.0 and pass_at_k(4, 4, 3) == 1.0
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)
    assert pass_at_k(4, 3, 2) == 1.0  # every pair holds a correct sample
    for n, c, k in [(16, 5, 4), (64, 7, 32), (200, 1, 100)]:
        assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_default_ks() -> None:
    assert default_ks(1) == [1]
    assert default_ks(4) == [1, 2, 4]
    assert default_ks(6) == [1, 2, 4, 6]


def test_majority_vote_hand_computed() -> None:
    assert majority_vote(["1", "2", "2"], [True, False, False]) is False
    assert majority_vote(["2", "1", "1"], [False, True, True]) is True
    assert majority_vote(["2", "1"], [False, True]) is False  # tie -> first occurrence
    assert majority_vote(["1", "2"], [True, False]) is True
    assert majority_vote([None, None, "3"], [False, False, True]) is True  # None never wins
    assert majority_vote([None, None], [False, False]) is False
    assert majority_vote([], []) is False
    # equivalent spellings are one answer: "\\frac{1}{2}" x2 beats "3"
    assert majority_vote(["3", "\\dfrac{1}{2}", "\\frac{1}{2}"], [False, True, True]) is True
    assert majority_vote(["7", "1,000", "1000"], [False, True, True]) is True


# ---------------------------------------------------------------- grading and summary
def test_grade_completions_fields(records: list[ProblemResult]) -> None:
    assert [r.id for r in records] == ["p1", "p2", "p3"]
    assert [[c["correct"] for c in r.completions] for r in records] == [
        [True, True, False, False],
        [True, False, False, False],
        [True, True, True, True],
    ]
    assert [c["extracted"] for c in records[1].completions] == ["1000", "999", "999", None]
    first = records[0].completions[3]
    assert first["finish_reason"] == "length" and first["num_tokens"] == 34 and first["timed_out"] is False
    assert not any(c["grading_error"] for r in records for c in r.completions)


def test_summarize_hand_computed(records: list[ProblemResult]) -> None:
    s = summarize(records)
    assert s["problems"] == 3 and s["samples"] == 4
    assert s["avg@4"] == pytest.approx((0.5 + 0.25 + 1.0) / 3)
    assert s["pass@1"] == pytest.approx(s["avg@4"])
    assert s["pass@2"] == pytest.approx((5 / 6 + 0.5 + 1.0) / 3)
    assert s["pass@4"] == pytest.approx(1.0)
    assert s["maj@4"] == pytest.approx(2 / 3)
    assert s["truncated_fraction"] == pytest.approx(1 / 12)
    assert s["no_answer_fraction"] == pytest.approx(1 / 12)
    assert s["mean_response_tokens"] == pytest.approx((11 * 10 + 34) / 12)
    assert s["grading_timeouts"] == 0 and s["grading_errors"] == 0
    assert set(k for k in s if k.startswith("pass@")) == {"pass@1", "pass@2", "pass@4"}
    assert summarize(records, ks=[3])["pass@3"] == pytest.approx((1.0 + 0.75 + 1.0) / 3)
    assert summarize([])["problems"] == 0 and summarize([])["grading_errors"] == 0


def test_grade_completions_with_process_pool_and_pattern() -> None:
    rows = [{"id": "a", "problem": "q", "answer": "4"}]
    comps = [[{"text": "Final: 4. Check: 9", "num_tokens": 5, "finish_reason": "stop"}]]
    recs = grade_completions(rows, comps, answer_pattern=r"Final: (\d+)")  # own process pool
    assert recs[0].completions[0]["correct"] is True and recs[0].completions[0]["extracted"] == "4"
    with pytest.raises(ValueError, match="rows but"):
        grade_completions(rows, [], reward_pool=None)


def test_grading_errors_are_recorded_and_counted() -> None:
    """A grading call that raises is a wrong sample with ``grading_error``, counted in the summary."""
    rows = [{"id": "a", "problem": "q", "answer": "1"}, {"id": "b", "problem": "q", "answer": "1"}]
    texts = [["\\boxed{1}", "bad \\boxed{1}"], ["bad", "bad", "\\boxed{1}"]]
    comps = [[{"text": t, "num_tokens": 3, "finish_reason": "stop"} for t in ts] for ts in texts]
    spec = RewardSpec(name="correct", function=f"{PLUGINS}:raise_on_bad")  # raises on "bad"
    with RewardPool([spec], num_workers=0) as pool:
        recs = grade_completions(rows, comps, reward_pool=pool)
    assert [[c["grading_error"] for c in r.completions] for r in recs] == [[False, True], [True, True, False]]
    assert [[c["correct"] for c in r.completions] for r in recs] == [[True, False], [False, False, True]]
    assert recs[0].completions[1]["extracted"] == "1" and recs[1].completions[0]["extracted"] is None
    s = summarize(recs)
    assert s["grading_errors"] == 3 and s["grading_timeouts"] == 0
    old_record = ProblemResult("c", "q", "1", [{"text": "", "extracted": None, "correct": False}])
    assert summarize([old_record])["grading_errors"] == 0  # results written before the field existed


def _prompt(problem: str) -> str:
    return render_prompt(problem, None, template=DEFAULT_MATH_TEMPLATE, chat_template=False)


def test_evaluate_with_fake_generator() -> None:
    by_prompt = {_prompt(r["problem"]): texts for r, texts in zip(ROWS, TEXTS)}
    calls: list[int] = []

    def generate(prompts: list[str], n: int) -> list[list[dict[str, Any]]]:
        calls.append(len(prompts))
        return [
            [{"text": t, "num_tokens": 10, "finish_reason": "stop"} for t in by_prompt[p][:n]]
            for p in prompts
        ]

    rows = [dict(r, prompt=_prompt(r["problem"])) for r in ROWS]
    with make_grading_pool(num_workers=0) as pool:
        result = evaluate(
            generate, {"toy": rows}, samples=4, progress=False, reward_pool=pool, batch_problems=2
        )
        assert calls == [2, 1]
        assert result["benchmarks"]["toy"]["avg@4"] == pytest.approx((0.5 + 0.25 + 1.0) / 3)
        assert len(result["records"]["toy"]) == 3
        with pytest.raises(ValueError, match="prompt"):
            evaluate(generate, {"toy": ROWS}, samples=1, progress=False, reward_pool=pool)


class _ChatTokenizer:
    chat_template = "x"

    def apply_chat_template(self, messages: list[dict[str, str]], **kw: Any) -> str:
        assert kw == {"tokenize": False, "add_generation_prompt": True}
        return f"<user>{messages[-1]['content']}<assistant>"

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": [len(word) for word in text.split()] + ([0] if add_special_tokens else [])}


def test_load_eval_benchmarks_renders_default_template(tmp_path: Path) -> None:
    source = tmp_path / "my set.jsonl"
    source.write_text('{"id": "x", "problem": "What is 2+2?", "answer": "4"}\n', encoding="utf-8")
    tok = _ChatTokenizer()
    benches = load_eval_benchmarks(["gsm8k", str(source)], tok, limit=2, template=None)
    assert list(benches) == ["gsm8k", "my set"] and len(benches["gsm8k"]) == 2
    row = benches["my set"][0]
    assert row["prompt"] == (
        "<user>What is 2+2?\nPlease reason step by step, and put your final answer within \\boxed{}."
        "<assistant>"
    )
    assert row["prompt_ids"] == tok(row["prompt"], add_special_tokens=False)["input_ids"]
    plain = load_eval_benchmarks(
        [str(source)], tok, limit=None, template="Q: {problem} ({id})", chat_template=False
    )
    assert plain["my set"][0]["prompt"] == "Q: What is 2+2? (x)"
    assert plain["my set"][0]["prompt_ids"][-1] == 0  # special tokens added without a chat template


# ---------------------------------------------------------------- files and comparison
def test_write_and_load_round_trip(tmp_path: Path, records: list[ProblemResult]) -> None:
    result = {"benchmarks": {"toy": summarize(records)}, "records": {"toy": records}}
    paths = write_results(result, tmp_path / "out", {"model": "m", "samples": 4})
    assert paths["summary"].name == "summary.json" and paths["toy"].name == "results_toy.jsonl"
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]
    for source in (tmp_path / "out", paths["summary"]):
        summary, loaded = load_summary(source)
        assert summary["meta"] == {"model": "m", "samples": 4}
        assert summary["benchmarks"]["toy"] == pytest.approx(result["benchmarks"]["toy"])
        assert loaded["toy"] == records
    combined = write_results_json(result, tmp_path / "eval" / "step_10.json", {"step": 10})
    summary, loaded = load_summary(combined)
    assert summary["meta"] == {"step": 10} and loaded["toy"] == records
    assert json.loads(combined.read_text())["records"]["toy"][0]["id"] == "p1"
    odd = {"benchmarks": {"data/my set.jsonl": summarize(records)}, "records": {"data/my set.jsonl": records}}
    odd_paths = write_results(odd, tmp_path / "odd", {})
    assert odd_paths["data/my set.jsonl"].parent == tmp_path / "odd"
    assert load_summary(tmp_path / "odd")[1]["data/my set.jsonl"] == records
    with pytest.raises(FileNotFoundError):
        load_summary(tmp_path / "missing")


def test_format_table(records: list[ProblemResult]) -> None:
    table = format_table({"benchmarks": {"toy": summarize(records)}})
    header, _, line = table.splitlines()
    columns = "benchmark problems n avg@n pass@1 pass@2 pass@4 maj@n mean_len truncated grading_timeouts grading_errors"
    assert header.split() == columns.split()
    summary = summarize(records)
    timeouts, errors = str(summary["grading_timeouts"]), str(summary["grading_errors"])
    assert line.split() == [
        "toy",
        "3",
        "4",
        "58.3",
        "58.3",
        "77.8",
        "100.0",
        "66.7",
        "12",
        "8.3",
        timeouts,
        errors,
    ]
    scored = format_table({"benchmarks": {"toy": {**summary, "objectives": {"format": 0.25}}}})
    assert (
        scored.splitlines()[0].split()[-1] == "objective/format"
        and scored.splitlines()[2].split()[-1] == "0.250"
    )


def test_standalone_eval_scores_training_objectives_with_the_real_reward_pool(
    records: list[ProblemResult],
) -> None:
    """``rlengine eval --objectives``: the mean of each reward function over every completion."""
    from rlengine.eval.runner import score_objectives

    rows = [{"id": r.id, "prompt": "p", "problem": "q", "answer": r.answer} for r in records]
    means = score_objectives(["math_verify", "format"], rows, records)
    completions = [c for r in records for c in r.completions]
    assert set(means) == {"math_verify", "format"}
    assert means["math_verify"] == pytest.approx(
        sum(bool(c["correct"]) for c in completions) / len(completions)
    )


def _fake_run(
    correct_by_problem: list[bool], n: int = 2
) -> tuple[dict[str, Any], dict[str, list[ProblemResult]]]:
    recs = [
        ProblemResult(
            f"q{i}",
            "p",
            "1",
            [{"text": "", "extracted": "1" if ok else "2", "correct": ok} for _ in range(n)],
        )
        for i, ok in enumerate(correct_by_problem)
    ]
    return {"benchmarks": {"bench": summarize(recs)}}, {"bench": recs}


def test_compare_identical_is_not_significant() -> None:
    summary, recs = _fake_run([True, False] * 20)
    rows = compare(summary, summary, recs, recs)
    assert [r["metric"] for r in rows] == ["avg@n", "maj@n"]
    for row in rows:
        assert row["delta"] == 0.0 and row["significant"] is False
        assert row["ci_low"] == 0.0 and row["ci_high"] == 0.0 and row["problems"] == 40
    assert "no" in format_compare_table(rows)


def test_compare_large_consistent_difference_is_significant() -> None:
    sa, ra = _fake_run([False] * 30 + [True] * 10)
    sb, rb = _fake_run([True] * 40)
    rows = compare(sa, sb, ra, rb, n_bootstrap=500, seed=1)
    avg = rows[0]
    assert avg["a"] == pytest.approx(0.25) and avg["b"] == 1.0 and avg["delta"] == pytest.approx(0.75)
    assert avg["significant"] is True and 0 < avg["ci_low"] <= 0.75 <= avg["ci_high"] <= 1.0
    small_a, small_ra = _fake_run([False, True] * 20)
    small_b, small_rb = _fake_run([True, False] + [False, True] * 19)  # one flipped pair: noise
    assert compare(small_a, small_b, small_ra, small_rb)[0]["significant"] is False
    no_records = compare(sa, sb, None, None)[0]
    assert no_records["ci_low"] is None and no_records["delta"] == pytest.approx(0.75)
    table = format_compare_table(rows, "base", "trained")
    assert "avg@2" in table and "+75.0" in table and "yes" in table
