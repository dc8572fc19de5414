"""Grading and the generate-grade-summarize loop of an evaluation.

Generation is injected into :func:`evaluate` as a callable ``generate(prompts, n)`` (the runner
wires the vLLM pool in). Grading goes through a :class:`reward.RewardPool` with the
``math_verify_detailed`` built-in: the same extraction and math-verify code as the training reward.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from reward import RewardItem, RewardPool, RewardSpec, extract_answer
from rlengine.eval.metrics import ProblemResult, summarize

GRADING_OBJECTIVE = "correct"
Generate = Callable[[list[str], int], list[list[dict[str, Any]]]]


def make_grading_pool(*, num_workers: int = 2, timeout_s: float = 10.0) -> RewardPool:
    """A RewardPool with the one objective eval needs: ``correct`` = ``math_verify_detailed``."""
    spec = RewardSpec(name=GRADING_OBJECTIVE, function="math_verify_detailed")
    return RewardPool([spec], num_workers=num_workers, timeout_s=timeout_s)


def grade_completions(
    rows: list[dict[str, Any]],
    completions: list[list[dict[str, Any]]],
    *,
    answer_pattern: str | None = None,
    reward_pool: RewardPool | None = None,
) -> list[ProblemResult]:
    """Grade generated completions (``completions[i]`` belongs to ``rows[i]``).

    ``reward_pool`` must have an objective named ``correct`` (see :func:`make_grading_pool`); one is
    created and closed here when None. ``answer_pattern`` travels in each item's metadata.
    A completion whose grading call timed out (``timed_out``) or failed (``grading_error``: it raised
    or crashed its worker) counts as wrong; ``extracted`` is then recomputed here.
    """
    if len(rows) != len(completions):
        raise ValueError(f"{len(rows)} rows but {len(completions)} completion lists")
    metadata = {"answer_pattern": answer_pattern} if answer_pattern else {}
    items = [
        RewardItem(row.get("prompt", row["problem"]), c["text"], str(row["answer"]), metadata)
        for row, comps in zip(rows, completions)
        for c in comps
    ]
    pool = reward_pool if reward_pool is not None else make_grading_pool()
    try:
        result = pool.score(items)
    finally:
        if reward_pool is None:
            pool.close()
    if GRADING_OBJECTIVE not in result.scores:
        raise ValueError(f"reward_pool has no objective {GRADING_OBJECTIVE!r}; use make_grading_pool()")
    scores, infos = result.scores[GRADING_OBJECTIVE], result.info[GRADING_OBJECTIVE]
    statuses = result.status[GRADING_OBJECTIVE]
    records, j = [], 0
    for row, comps in zip(rows, completions):
        graded = []
        for c in comps:
            info = infos[j] if isinstance(infos[j], dict) else None
            extracted = info.get("extracted") if info else extract_answer(c["text"], answer_pattern)
            timed_out = statuses[j] == "timeout" or bool(info and info.get("timed_out"))
            graded.append(
                dict(
                    text=c["text"],
                    extracted=extracted,
                    correct=scores[j] > 0.5,
                    timed_out=timed_out,
                    grading_error=statuses[j] == "error",
                )
            )
            graded[-1].update(num_tokens=c.get("num_tokens"), finish_reason=c.get("finish_reason"))
            j += 1
        records.append(ProblemResult(str(row["id"]), row["problem"], str(row["answer"]), graded))
    return records


def evaluate(
    generate: Generate,
    benchmarks: dict[str, list[dict[str, Any]]],
    *,
    samples: int,
    answer_pattern: str | None = None,
    progress: bool = True,
    reward_pool: RewardPool | None = None,
    batch_problems: int | None = None,
) -> dict[str, Any]:
    """Generate ``samples`` completions per problem, grade and summarize every benchmark.

    Rows need id, problem, answer and a rendered ``prompt``. ``generate`` is called on batches of
    ``batch_problems`` problems (default: 8 batches per benchmark, at least 64 problems: vLLM's
    throughput grows with the batch, and the progress bar still moves). ``answer_pattern`` is tried after ``\\boxed{}`` and before the last number.
    Returns ``{"benchmarks": {name: summary}, "records": {name: [ProblemResult]}}``.
    """
    from tqdm.auto import tqdm

    total = sum(len(rows) for rows in benchmarks.values()) * samples
    own_pool = reward_pool is None
    pool = reward_pool if reward_pool is not None else make_grading_pool()
    out: dict[str, Any] = {"benchmarks": {}, "records": {}}
    try:
        with tqdm(total=total, unit="sample", desc="eval", disable=not progress, dynamic_ncols=True) as bar:
            for name, rows in benchmarks.items():
                missing = [r.get("id") for r in rows if "prompt" not in r]
                if missing:
                    raise ValueError(
                        f"benchmark {name!r}: rows without a rendered 'prompt' (ids {missing[:3]})"
                    )
                size = batch_problems or max(64, math.ceil(len(rows) / 8))
                records: list[ProblemResult] = []
                bar.set_postfix_str(name)
                for start in range(0, len(rows), size):
                    batch = rows[start : start + size]
                    generated = generate([r["prompt"] for r in batch], samples)
                    if len(generated) != len(batch):
                        raise ValueError(f"generate returned {len(generated)} lists for {len(batch)} prompts")
                    records += grade_completions(
                        batch, generated, answer_pattern=answer_pattern, reward_pool=pool
                    )
                    bar.update(len(batch) * samples)
                out["records"][name] = records
                out["benchmarks"][name] = summarize(records)
    finally:
        if own_pool:
            pool.close()
    return out
