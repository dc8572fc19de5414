"""Grading accuracy: rlengine's grader against math-verify called directly, on labelled
(completion, gold) pairs, per answer class.

    python benchmarks/grading_accuracy.py [--no-write]

The corpus is tests/fixtures/grading_corpus.jsonl (built by tests/fixtures/make_grading_corpus.py
from the golds of the shipped benchmarks: right answers boxed, in equivalent forms, unboxed after
"the answer is", in the last math span, after an earlier wrong guess; wrong answers near the gold:
off by one, sign, a digit changed, a fraction inverted, an exponent shifted, a list concatenated,
digits apart, another gold, last-number traps), plus the hand-written stress cases of
tests/test_reward.py (``UNBOXED_AND_COMPARISON_CASES``). Labels come from the construction; two
constructed answers can still be equivalent (rare). math-verify is called as a user would call it:
``verify(parse("$" + gold + "$"), parse(completion))``. The per-call median is measured over the
pairs our grader settles before math-verify (equal strings and integers). Writes the
``grading_accuracy`` section of BENCHMARKS.md unless ``--no-write`` (or ``--smoke``: every 40th
pair).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, render_table, update_benchmarks_md  # noqa: E402

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "grading_corpus.jsonl"


def corpus(every: int = 1) -> list[tuple[str, str, str, bool]]:
    """``(class, completion, gold, label)``: every ``every``-th pair of the fixture corpus, then
    the stress cases."""
    from tests.test_reward import UNBOXED_AND_COMPARISON_CASES

    rows = [json.loads(line) for line in CORPUS.read_text().splitlines()[::every]]
    pairs = [(r["class"], r["completion"], r["gold"], bool(r["label"])) for r in rows]
    return pairs + [("stress", c, g, label) for c, g, label in UNBOXED_AND_COMPARISON_CASES]


def math_verify_direct(completion: str, gold: str) -> bool:
    import math_verify

    try:
        return bool(math_verify.verify(math_verify.parse(f"${gold}$"), math_verify.parse(completion)))
    except Exception:  # noqa: BLE001 - a parse failure is a wrong answer, as for a user
        return False


def evaluate(pairs: list[tuple[str, str, str, bool]]) -> dict:
    """Per class: pairs, ours right, math-verify right, false positives of each; and timings."""
    from reward.grader import _INT_RE as INT  # noqa: PLC2701 - the fast path's own test
    from reward.grader import grade, normalize_answer

    classes: dict[str, dict[str, int]] = {}
    fast: list[float] = []
    for kind, completion, gold, label in pairs:
        start = time.perf_counter()
        result = grade(completion, gold)
        seconds = time.perf_counter() - start
        ours, theirs = result.correct, math_verify_direct(completion, gold)
        row = classes.setdefault(kind, {"pairs": 0, "ours": 0, "mv": 0, "ours_fp": 0, "mv_fp": 0, "wrong": 0})
        row["pairs"] += 1
        row["ours"] += ours == label
        row["mv"] += theirs == label
        if not label:
            row["wrong"] += 1
            row["ours_fp"] += ours
            row["mv_fp"] += theirs
        pred = normalize_answer(result.extracted) if result.extracted else ""
        if result.extracted and (
            pred == normalize_answer(gold) or (INT.fullmatch(pred) and INT.fullmatch(normalize_answer(gold)))
        ):
            fast.append(seconds)
    return {"classes": classes, "fast_median_ms": 1000 * statistics.median(fast) if fast else float("nan")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="every 40th pair, no BENCHMARKS.md")
    args = parser.parse_args()
    every = 40 if args.smoke else 1
    args.no_write = args.no_write or args.smoke
    pairs = corpus(every)
    start = time.perf_counter()
    result = evaluate(pairs)
    seconds = time.perf_counter() - start
    rows, total = [], {"pairs": 0, "ours": 0, "mv": 0, "ours_fp": 0, "mv_fp": 0, "wrong": 0}
    for kind, row in result["classes"].items():
        for key in total:
            total[key] += row[key]
        rows.append(grading_row(kind, row))
    rows.append(grading_row("all", total))
    headers = [
        "class",
        "pairs",
        "rlengine accuracy",
        "math-verify accuracy",
        "false positives (rlengine / math-verify)",
    ]
    body = render_table(headers, rows)
    body += (
        f"\n\n{len(pairs)} pairs (tests/fixtures/grading_corpus.jsonl, every {every}, and the stress cases); "
        f"median per call on pairs settled before math-verify: {result['fast_median_ms']:.3f} ms; "
        f"{seconds:.0f} s for both graders over the corpus"
    )
    print(body)
    print(f"\nmachine: {machine()}")
    if not args.no_write:
        update_benchmarks_md("grading_accuracy", "Grading: rlengine's grader against math-verify", body)
    return 0


def grading_row(kind: str, row: dict[str, int]) -> list[str]:
    n = max(1, row["pairs"])
    return [
        kind,
        str(row["pairs"]),
        f"{100 * row['ours'] / n:.1f} %",
        f"{100 * row['mv'] / n:.1f} %",
        f"{row['ours_fp']} / {row['mv_fp']} of {row['wrong']}",
    ]


if __name__ == "__main__":
    sys.exit(main())
