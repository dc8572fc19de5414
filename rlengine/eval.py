"""Benchmark evaluation: grading, metrics (avg@n, pass@k, maj@n), result files and run comparison.

Everything here is model-free: generation is injected into :func:`evaluate` as a callable
``generate(prompts, n) -> list[list[dict]]`` (the CLI wires vLLM in). Grading goes through a
:class:`reward.RewardPool` with the ``math_verify_detailed`` built-in, i.e. the same extraction and
math-verify code as the training reward. See docs/eval.md for the metric definitions.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reward import RewardItem, RewardPool, RewardSpec, extract_answer, normalize_answer

DEFAULT_TEMPLATE = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{}."
BENCHMARK_DEFAULTS: dict[str, dict[str, Any]] = {
    name: {"template": DEFAULT_TEMPLATE, "answer_pattern": None}
    for name in ("gsm8k", "math500", "aime24", "aime25", "amc23", "minerva_math", "olympiadbench")
}
GRADING_OBJECTIVE = "correct"
Generate = Callable[[list[str], int], list[list[dict[str, Any]]]]


def get_benchmark_defaults(name: str) -> dict[str, Any]:
    """Prompt template / answer pattern for a benchmark (the Qwen2.5-Math style default if unknown)."""
    return dict(BENCHMARK_DEFAULTS.get(name, {"template": DEFAULT_TEMPLATE, "answer_pattern": None}))


def render_prompt(problem: str, template: str = DEFAULT_TEMPLATE, tokenizer: Any = None) -> str:
    """Put ``problem`` into ``template`` (literal ``{problem}`` replacement, so ``\\boxed{}`` is safe),
    then through the tokenizer's chat template when one is given."""
    text = template.replace("{problem}", problem)
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": text}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text


# ---------------------------------------------------------------------------- metrics
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
    finish_reason, timed_out."""

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


def _as_records(records: Iterable[ProblemResult | dict[str, Any]]) -> list[ProblemResult]:
    return [r if isinstance(r, ProblemResult) else ProblemResult.from_dict(r) for r in records]


def summarize(
    records: Iterable[ProblemResult | dict[str, Any]], ks: list[int] | None = None
) -> dict[str, Any]:
    """Metrics of one benchmark.

    Keys: problems, samples (n per problem; the minimum if they differ), ``avg@n`` (mean over problems
    of the per-problem accuracy = pass@1), ``pass@k`` for each k (default :func:`default_ks`, k <= n),
    ``maj@n``, mean_response_tokens, truncated_fraction (finish_reason == "length"), no_answer_fraction,
    grading_timeouts.
    """
    recs = [r for r in _as_records(records) if r.completions]
    n = min((len(r.completions) for r in recs), default=0)
    out: dict[str, Any] = {"problems": len(recs), "samples": n}
    if not recs:
        empty = ["avg@0", "maj@0", "mean_response_tokens", "truncated_fraction", "no_answer_fraction"]
        return out | dict.fromkeys(empty, 0.0) | {"grading_timeouts": 0}
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
    return out


# ---------------------------------------------------------------------------- grading
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
                dict(text=c["text"], extracted=extracted, correct=scores[j] > 0.5, timed_out=timed_out)
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
    ``batch_problems`` problems (default: ~20 batches per benchmark, at least 16 problems) so the
    progress bar moves. ``answer_pattern`` overrides the per-benchmark default.
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
                pattern = answer_pattern or get_benchmark_defaults(name).get("answer_pattern")
                size = batch_problems or max(16, math.ceil(len(rows) / 20))
                records: list[ProblemResult] = []
                bar.set_postfix_str(name)
                for start in range(0, len(rows), size):
                    batch = rows[start : start + size]
                    generated = generate([r["prompt"] for r in batch], samples)
                    if len(generated) != len(batch):
                        raise ValueError(f"generate returned {len(generated)} lists for {len(batch)} prompts")
                    records += grade_completions(batch, generated, answer_pattern=pattern, reward_pool=pool)
                    bar.update(len(batch) * samples)
                out["records"][name] = records
                out["benchmarks"][name] = summarize(records)
    finally:
        if own_pool:
            pool.close()
    return out


# ---------------------------------------------------------------------------- files
def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _results_name(benchmark: str) -> str:
    """``results_<benchmark>.jsonl`` with path-unsafe characters (a benchmark given as a file) replaced."""
    return "results_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", benchmark) + ".jsonl"


def _records_json(records: Iterable[ProblemResult | dict[str, Any]]) -> list[dict[str, Any]]:
    return [r.to_dict() for r in _as_records(records)]


def write_results(
    result: dict[str, Any], output_dir: str | os.PathLike[str], meta: dict[str, Any]
) -> dict[str, Path]:
    """Write ``summary.json`` (meta + summaries) and ``results_<benchmark>.jsonl`` atomically."""
    out = Path(output_dir)
    paths = {"summary": out / "summary.json"}
    for name, records in result.get("records", {}).items():
        path = out / _results_name(name)
        _atomic_write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in _records_json(records)))
        paths[name] = path
    _atomic_write(paths["summary"], json.dumps({"meta": meta, "benchmarks": result["benchmarks"]}, indent=2))
    return paths


def write_results_json(result: dict[str, Any], path: str | os.PathLike[str], meta: dict[str, Any]) -> Path:
    """Write one JSON with meta, summaries and records embedded (``eval/step_N.json``), atomically."""
    records = {name: _records_json(recs) for name, recs in result.get("records", {}).items()}
    data = {"meta": meta, "benchmarks": result["benchmarks"], "records": records}
    _atomic_write(Path(path), json.dumps(data, ensure_ascii=False))
    return Path(path)


def load_summary(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, list[ProblemResult]]]:
    """Load ``(summary, records)`` from an eval dir, its ``summary.json`` (records from the sibling
    ``results_*.jsonl``) or a combined JSON from :func:`write_results_json`."""
    p = Path(path)
    if p.is_dir():
        p = p / "summary.json"
    if not p.is_file():
        raise FileNotFoundError(f"no evaluation summary at {path}")
    data = json.loads(p.read_text(encoding="utf-8"))
    if "benchmarks" not in data:
        raise ValueError(f"{p} is not an evaluation summary (no 'benchmarks' key)")
    summary = {"meta": data.get("meta", {}), "benchmarks": data["benchmarks"]}
    records: dict[str, list[ProblemResult]] = {}
    if "records" in data:
        records = {name: _as_records(recs) for name, recs in data["records"].items()}
    else:
        for name in data["benchmarks"]:
            jsonl = p.parent / _results_name(name)
            if jsonl.is_file():
                lines = jsonl.read_text(encoding="utf-8").splitlines()
                records[name] = [ProblemResult.from_dict(json.loads(line)) for line in lines if line.strip()]
    return summary, records


# ---------------------------------------------------------------------------- tables and comparison
def _benchmarks_of(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return summary["benchmarks"] if "benchmarks" in summary else summary


def _metric(bench: dict[str, Any], prefix: str) -> float | None:
    return next((v for k, v in bench.items() if k.startswith(prefix + "@")), None)


def _render(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    fmt = lambda cells: "  ".join(  # noqa: E731
        str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
    )
    return "\n".join([fmt(headers), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows])


def format_table(summary: dict[str, Any]) -> str:
    """Plain-text table (accuracies in %): benchmark, problems, n, avg@n, pass@k..., maj@n, length, truncated."""
    benches = _benchmarks_of(summary)
    ks = sorted({int(k[5:]) for b in benches.values() for k in b if k.startswith("pass@")})
    headers = (
        ["benchmark", "problems", "n", "avg@n"]
        + [f"pass@{k}" for k in ks]
        + ["maj@n", "mean_len", "truncated"]
    )
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    rows = [
        [name, str(b.get("problems", 0)), str(b.get("samples", 0)), pct(_metric(b, "avg"))]
        + [pct(b.get(f"pass@{k}")) for k in ks]
        + [
            pct(_metric(b, "maj")),
            f"{b.get('mean_response_tokens', 0.0):.0f}",
            pct(b.get("truncated_fraction")),
        ]
        for name, b in benches.items()
    ]
    return _render(headers, rows)


def _bootstrap_ci(diffs: list[float], n_bootstrap: int, seed: int) -> tuple[float, float]:
    import numpy as np

    d = np.asarray(diffs, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(n_bootstrap)
    for start in range(0, n_bootstrap, 100):  # bounded memory for large benchmarks
        idx = rng.integers(0, len(d), size=(min(100, n_bootstrap - start), len(d)))
        means[start : start + len(idx)] = d[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def compare(
    summary_a: dict[str, Any],
    summary_b: dict[str, Any],
    records_a: dict[str, list[ProblemResult]] | None,
    records_b: dict[str, list[ProblemResult]] | None,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Side-by-side avg@n and maj@n of two runs, per benchmark present in both.

    With records for both runs, values are computed on the shared problem ids and a paired bootstrap
    over those problems (per-problem accuracy / majority correctness, ``n_bootstrap`` resamples) gives
    the 95% CI of ``delta = b - a``; ``significant`` is True when the CI excludes 0. Without records,
    the summaries' values are used and ci/significant are None.
    """
    bench_a, bench_b = _benchmarks_of(summary_a), _benchmarks_of(summary_b)
    rows = []
    for name in [n for n in bench_a if n in bench_b]:
        ra = {r.id: r for r in _as_records((records_a or {}).get(name, []))}
        rb = {r.id: r for r in _as_records((records_b or {}).get(name, []))}
        shared = [i for i in ra if i in rb and ra[i].completions and rb[i].completions]
        for metric, per_problem in (
            ("avg", lambda r: r.accuracy),
            ("maj", lambda r: float(r.majority_correct)),
        ):
            row: dict[str, Any] = dict(benchmark=name, metric=f"{metric}@n", ci_low=None, ci_high=None)
            row.update(n_a=bench_a[name].get("samples"), n_b=bench_b[name].get("samples"), significant=None)
            if shared:
                va = [per_problem(ra[i]) for i in shared]
                vb = [per_problem(rb[i]) for i in shared]
                diffs = [b - a for a, b in zip(va, vb)]
                row["ci_low"], row["ci_high"] = _bootstrap_ci(diffs, n_bootstrap, seed)
                row["significant"] = row["ci_low"] > 0 or row["ci_high"] < 0
                row.update(problems=len(shared), a=sum(va) / len(va), b=sum(vb) / len(vb))
            else:
                a, b = _metric(bench_a[name], metric), _metric(bench_b[name], metric)
                row.update(
                    problems=min(bench_a[name].get("problems", 0), bench_b[name].get("problems", 0)), a=a, b=b
                )
            row["delta"] = None if row["a"] is None or row["b"] is None else row["b"] - row["a"]
            rows.append(row)
    return rows


def format_compare_table(rows: list[dict[str, Any]], label_a: str = "A", label_b: str = "B") -> str:
    """Plain-text table of :func:`compare` rows (values in %)."""
    pct = lambda v, sign="": "-" if v is None else f"{100 * v:{sign}.1f}"  # noqa: E731
    body = []
    for r in rows:
        ci = "-" if r["ci_low"] is None else f"[{pct(r['ci_low'], '+')}, {pct(r['ci_high'], '+')}]"
        sig = "-" if r["significant"] is None else ("yes" if r["significant"] else "no")
        n = r["n_a"] if r["n_a"] == r["n_b"] else f"{r['n_a']}/{r['n_b']}"
        metric = r["metric"].replace("@n", f"@{n}")
        body.append([r["benchmark"], metric, str(r["problems"]), pct(r["a"]), pct(r["b"])])
        body[-1] += [pct(r["delta"], "+"), ci, sig]
    return _render(
        ["benchmark", "metric", "problems", label_a, label_b, "delta", "95% CI", "significant"], body
    )
