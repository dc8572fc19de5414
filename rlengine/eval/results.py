"""Evaluation result files (``summary.json``, ``results_<benchmark>.jsonl``, ``eval/step_N.json``),
tables, and the paired comparison of two runs.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rlengine.eval.metrics import ProblemResult, as_records


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
    return [r.to_dict() for r in as_records(records)]


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
        records = {name: as_records(recs) for name, recs in data["records"].items()}
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
    """Plain-text table (accuracies in %): benchmark, problems, n, avg@n, pass@k..., maj@n, length,
    truncated, grading timeouts and errors (samples scored wrong because grading timed out or
    failed), and the mean of every scored objective."""
    benches = _benchmarks_of(summary)
    ks = sorted({int(k[5:]) for b in benches.values() for k in b if k.startswith("pass@")})
    headers = (
        ["benchmark", "problems", "n", "avg@n"]
        + [f"pass@{k}" for k in ks]
        + ["maj@n", "mean_len", "truncated", "grading_timeouts", "grading_errors"]
    )
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    rows = [
        [name, str(b.get("problems", 0)), str(b.get("samples", 0)), pct(_metric(b, "avg"))]
        + [pct(b.get(f"pass@{k}")) for k in ks]
        + [
            pct(_metric(b, "maj")),
            f"{b.get('mean_response_tokens', 0.0):.0f}",
            pct(b.get("truncated_fraction")),
            str(b.get("grading_timeouts", 0)),
            str(b.get("grading_errors", 0)),
        ]
        for name, b in benches.items()
    ]
    objectives = sorted({k for b in benches.values() for k in (b.get("objectives") or {})})
    if objectives:  # rlengine eval --objectives / evaluation during training
        headers += [f"objective/{k}" for k in objectives]
        for row, b in zip(rows, benches.values()):
            row += [f"{(b.get('objectives') or {}).get(k, float('nan')):.3f}" for k in objectives]
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
        ra = {r.id: r for r in as_records((records_a or {}).get(name, []))}
        rb = {r.id: r for r in as_records((records_b or {}).get(name, []))}
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
