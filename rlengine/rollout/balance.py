"""Spreading one generation request over the rollout engines (``rollout.balance``).

Pure functions; :class:`~rlengine.rollout.pool.RolloutPool` applies them.

- ``even``: contiguous equal shares, in request order.
- ``tokens``: longest-processing-time-first over the estimated tokens of each prompt,
  n x (prompt tokens + expected response tokens), so every engine gets about the same work. The
  split depends on the request alone, so a resumed run splits its steps as an uninterrupted one.
- ``throughput``: the same, with each engine's load divided by its measured speed (tokens per
  second over its recent requests), so a slower engine (a busier node, a smaller TP group) gets
  less. Measured speeds are not checkpointed: a resumed run may split differently.
"""

from __future__ import annotations


def prompt_costs(prompt_lengths: list[int], n: int, expected_response_tokens: float) -> list[float]:
    """Estimated tokens each prompt costs to generate: n x (prompt + expected response)."""
    return [n * (length + expected_response_tokens) for length in prompt_lengths]


def assign(costs: list[float], speeds: list[float]) -> list[list[int]]:
    """Prompt indices per engine (each list ascending) so that the slowest engine finishes first.

    Longest-processing-time-first: prompts by decreasing cost, each to the engine whose finish
    time (load / speed) would be smallest after taking it; ties go to the lower engine index.
    ``speeds`` are relative (tokens per second, or all 1 for equal engines).
    """
    if not speeds or any(s <= 0 for s in speeds):
        raise ValueError(f"engine speeds must be positive, got {speeds}")
    loads = [0.0] * len(speeds)
    chosen: list[list[int]] = [[] for _ in speeds]
    order = sorted(range(len(costs)), key=lambda i: (-costs[i], i))
    for index in order:
        engine = min(range(len(speeds)), key=lambda e: ((loads[e] + costs[index]) / speeds[e], e))
        loads[engine] += costs[index]
        chosen[engine].append(index)
    return [sorted(indices) for indices in chosen]


def finish_times(costs: list[float], speeds: list[float], plan: list[list[int]]) -> list[float]:
    """Each engine's load divided by its speed under ``plan`` (for tests and the imbalance metric)."""
    return [sum(costs[i] for i in indices) / speed for indices, speed in zip(plan, speeds)]


def updated_speed(previous: float | None, tokens: float, seconds: float, momentum: float = 0.5) -> float:
    """Exponential moving average of an engine's tokens per second."""
    measured = tokens / max(seconds, 1e-6)
    return measured if previous is None else momentum * previous + (1 - momentum) * measured


def contiguous(total: int, parts: int) -> list[list[int]]:
    """Even contiguous split (the order the prompts came in), used by ``balance: even``."""
    per = -(-total // parts) if total else 0
    return [list(range(i * per, min(total, (i + 1) * per))) for i in range(parts)]


__all__ = ["assign", "contiguous", "finish_times", "prompt_costs", "updated_speed"]
