"""Learner metrics: weighted per-micro-batch values within a rank, merged over ranks."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch


class Metrics:
    """Weighted means and maxima of per-micro-batch metrics. Values may stay device tensors until
    :meth:`result`, so collecting them costs no device synchronisation."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor | float] = defaultdict(float)
        self.weights: dict[str, torch.Tensor | float] = defaultdict(float)
        self.maxima: dict[str, list[torch.Tensor | float]] = defaultdict(list)

    def add(self, key: str, value: torch.Tensor | float, weight: torch.Tensor | float = 1.0) -> None:
        self.sums[key] = self.sums[key] + value * weight
        self.weights[key] = self.weights[key] + weight

    def max(self, key: str, value: torch.Tensor | float) -> None:
        self.maxima[key].append(value)

    def result(self) -> dict:
        """Means (0 where nothing was weighted), maxima, and ``_weights`` for merging over ranks."""
        weights = {k: float(w) for k, w in self.weights.items()}
        out: dict = {k: float(self.sums[k]) / weights[k] if weights[k] else 0.0 for k in self.sums}
        out.update({k: max(float(v) for v in values) for k, values in self.maxima.items()})
        out["_weights"] = weights
        return out


def merge_rank_metrics(results: list[dict[str, Any]]) -> dict[str, float]:
    """Means over ranks weighted by what each rank saw; maxima for ``*_max`` keys, ``grad_norm``
    and compute time; the policy loss is summed (each rank's is its share of the global loss)."""
    merged: dict[str, float] = {}
    keys = {k for r in results for k in r if not k.startswith("_")}
    for key in keys:
        values = [(r[key], r.get("_weights", {}).get(key, 1.0)) for r in results if key in r]
        if key.endswith("_max") or key in ("grad_norm", "time/learner_compute"):
            merged[key] = max(v for v, _ in values)
        elif key == "lr":
            merged[key] = values[0][0]
        elif key == "loss/policy":
            merged[key] = sum(v for v, _ in values)
        else:
            total = sum(w for _, w in values)
            merged[key] = sum(v * w for v, w in values) / total if total else 0.0
    return merged
