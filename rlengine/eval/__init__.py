"""Benchmark evaluation: metrics, grading, result files, comparison, and the runner.

* :mod:`rlengine.eval.metrics` - pass@k, maj@n, avg@n per benchmark (model-free);
* :mod:`rlengine.eval.grading` - grading with math-verify and the generate-grade loop;
* :mod:`rlengine.eval.results` - result files, tables, paired bootstrap comparison;
* :mod:`rlengine.eval.runner` - evaluation on the vLLM pool (``rlengine eval``, eval during training).
"""

from rlengine.eval.grading import GRADING_OBJECTIVE, Generate, evaluate, grade_completions, make_grading_pool
from rlengine.eval.metrics import ProblemResult, default_ks, majority_vote, pass_at_k, summarize
from rlengine.eval.results import (
    compare,
    format_compare_table,
    format_table,
    load_summary,
    write_results,
    write_results_json,
)

__all__ = [
    "GRADING_OBJECTIVE",
    "Generate",
    "ProblemResult",
    "compare",
    "default_ks",
    "evaluate",
    "format_compare_table",
    "format_table",
    "grade_completions",
    "load_summary",
    "majority_vote",
    "make_grading_pool",
    "pass_at_k",
    "summarize",
    "write_results",
    "write_results_json",
]
