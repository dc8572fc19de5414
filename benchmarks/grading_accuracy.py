"""Grading accuracy: rlengine's grader against math-verify called directly, on labelled
(completion, gold) pairs, per answer class.

    python benchmarks/grading_accuracy.py [--per-set 200] [--no-write]

The corpus (:func:`corpus`) is built here, deterministically, from the golds of the shipped
benchmarks (MATH-500, GSM8K test, Minerva, OlympiadBench, AIME 24/25, AMC 23) plus hand-written
stress cases (tests/test_reward.py ``UNBOXED_AND_COMPARISON_CASES``):

- ``boxed``: the gold in ``\\boxed{}`` at the end of a short solution (label: right);
- ``answer is``: "... the answer is $gold$." with no box (right);
- ``answer is, then text``: "The answer is gold. That took 3 steps." with no box (right);
- ``other gold``: another problem's gold of the same set, boxed (wrong; pairs whose two golds
  normalise to the same string are left out);
- ``off by one``: an integer gold plus one, boxed (wrong);
- ``stress``: the hand-written cases, with their labels.

The labels of the generated pairs follow from their construction, so "accuracy" here means
agreement with the construction; two different golds can still be equivalent (rare: reported as
the false positives both graders make). math-verify is called as a user would call it:
``verify(parse("$" + gold + "$"), parse(completion))``. The per-call median is measured over the
pairs our grader settles before math-verify (equal strings and integers). Writes the
``grading_accuracy`` section of BENCHMARKS.md unless ``--no-write`` (or ``--smoke``).
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

SETS = (
    "math500_test",
    "gsm8k_test",
    "minerva_math_test",
    "olympiadbench_test",
    "aime24_test",
    "aime25_test",
    "amc23_test",
)
STEM = "We compute step by step. First 2 + 3 = 5, then we simplify."


def corpus(per_set: int) -> list[tuple[str, str, str, bool]]:
    """``(class, completion, gold, label)`` pairs (module docstring)."""
    from reward.grader import normalize_answer
    from rlengine.data.sources import shipped_path
    from tests.test_reward import UNBOXED_AND_COMPARISON_CASES

    pairs: list[tuple[str, str, str, bool]] = []
    for name in SETS:
        lines = shipped_path(name).read_text().splitlines()[:per_set]
        golds = [str(json.loads(line)["answer"]).strip() for line in lines]
        golds = [g for g in golds if g]
        for i, gold in enumerate(golds):
            pairs.append(("boxed", f"{STEM} So the answer is \\boxed{{{gold}}}.", gold, True))
            pairs.append(("answer is", f"{STEM} Therefore the answer is ${gold}$.", gold, True))
            pairs.append(("answer is, then text", f"The answer is {gold}. That took 3 steps.", gold, True))
            other = golds[(i + 1) % len(golds)]
            if normalize_answer(other) != normalize_answer(gold):
                pairs.append(("other gold", f"{STEM} So the answer is \\boxed{{{other}}}.", gold, False))
            if gold.lstrip("-").isdigit():
                pairs.append(
                    ("off by one", f"{STEM} So the answer is \\boxed{{{int(gold) + 1}}}.", gold, False)
                )
    pairs += [("stress", c, g, label) for c, g, label in UNBOXED_AND_COMPARISON_CASES]
    return pairs


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
    parser.add_argument("--per-set", type=int, default=200, help="golds taken from each shipped set")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="5 golds a set, no BENCHMARKS.md")
    args = parser.parse_args()
    if args.smoke:
        args.per_set, args.no_write = 5, True
    pairs = corpus(args.per_set)
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
        f"\n\n{len(pairs)} pairs, {args.per_set} golds from each of {', '.join(SETS)}; "
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
