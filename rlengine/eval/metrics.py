"""Benchmark metrics: avg@n, unbiased pass@k, maj@n, per problem and per benchmark.

Model-free and grader-free: records come in already graded. See docs/eval.md for definitions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from reward import normalize_answer


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: ``1 - C(n-c, k) / C(n, k)`` (stable product form)."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def majority_vote(extracted: list[str | None], correct: list[bool]) -> bool:
    """maj@n: is the most frequent extracted answer correct?

    None answers are excluded; answers with equal :func:`reward.normalize_answer` forms are one
    answer; ties go to the answer seen first. False when no sample has an answer.
    """
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, answer in enumerate(extracted):
        if answer is None:
            continue
        key = normalize_answer(answer)
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, i)
    if not counts:
        return False
    best = max(counts, key=lambda key: (counts[key], -first[key]))
    return bool(correct[first[best]])


def default_ks(n: int) -> list[int]:
    """Every power of two up to n, plus n."""
    return sorted({2**i for i in range(n.bit_length()) if 2**i <= n} | ({n} if n >= 1 else set()))


@dataclass
class ProblemResult:
    """Per-problem record. ``completions``: dicts with text, extracted, correct, num_tokens,
    finish_reason, timed_out, grading_error."""

    id: str
    problem: str
    answer: str
    completions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def num_correct(self) -> int:
        return sum(bool(c.get("correct")) for c in self.completions)

    @property
    def accuracy(self) -> float:
        return self.num_correct / len(self.completions) if self.completions else 0.0

    @property
    def majority_correct(self) -> bool:
        return majority_vote(
            [c.get("extracted") for c in self.completions], [bool(c.get("correct")) for c in self.completions]
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProblemResult:
        return cls(
            str(data["id"]), data.get("problem", ""), str(data.get("answer", "")), list(data["completions"])
        )


def as_records(records: Iterable[ProblemResult | dict[str, Any]]) -> list[ProblemResult]:
    return [r if isinstance(r, ProblemResult) else ProblemResult.from_dict(r) for r in records]


def summarize(
    records: Iterable[ProblemResult | dict[str, Any]], ks: list[int] | None = None
) -> dict[str, Any]:
    """Metrics of one benchmark.

    Keys: problems, samples (n per problem; the minimum if they differ), ``avg@n`` (mean over problems
    of the per-problem accuracy = pass@1), ``pass@k`` for each k (default :func:`default_ks`, k <= n),
    ``maj@n``, mean_response_tokens, truncated_fraction (finish_reason == "length"), no_answer_fraction,
    grading_timeouts and grading_errors (samples whose grading timed out / failed; both scored wrong).
    """
    recs = [r for r in as_records(records) if r.completions]
    n = min((len(r.completions) for r in recs), default=0)
    out: dict[str, Any] = {"problems": len(recs), "samples": n}
    if not recs:
        empty = ["avg@0", "maj@0", "mean_response_tokens", "truncated_fraction", "no_answer_fraction"]
        return out | dict.fromkeys(empty, 0.0) | {"grading_timeouts": 0, "grading_errors": 0}
    out[f"avg@{n}"] = sum(r.accuracy for r in recs) / len(recs)
    for k in sorted(set(ks if ks is not None else default_ks(n))):
        if 1 <= k <= n:
            out[f"pass@{k}"] = sum(pass_at_k(len(r.completions), r.num_correct, k) for r in recs) / len(recs)
    out[f"maj@{n}"] = sum(r.majority_correct for r in recs) / len(recs)
    samples = [c for r in recs for c in r.completions]
    tokens = [c["num_tokens"] for c in samples if c.get("num_tokens") is not None]
    out["mean_response_tokens"] = sum(tokens) / len(tokens) if tokens else 0.0
    out["truncated_fraction"] = sum(c.get("finish_reason") == "length" for c in samples) / len(samples)
    out["no_answer_fraction"] = sum(c.get("extracted") is None for c in samples) / len(samples)
    out["grading_timeouts"] = sum(bool(c.get("timed_out")) for c in samples)
    out["grading_errors"] = sum(bool(c.get("grading_error")) for c in samples)
    return out
