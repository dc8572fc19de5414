"""Where rollout engines and learner ranks run on GPUs (``rollout.placement``).

``split`` on GPUs: the learner ranks reserve one placement group of ``learner.num_ranks`` one-GPU
bundles, packed on as few nodes as possible (rank i in bundle i); each engine asks for its own GPU,
or with ``tensor_parallel_size > 1`` reserves its own single-node placement group
(rlengine/rollout/pool.py). CPU runs use no placement group.

``colocated``: one Ray placement group holds one bundle per GPU, ``{"GPU": 1}`` x
``learner.num_ranks``, shared by ranks and engines. Learner rank i takes half of bundle i; engine e takes the other half of
bundles e x tp ... (e + 1) x tp - 1. With tp = 1 the engine actor itself holds its half GPU; with tp
> 1 vLLM's Ray executor starts one worker per bundle, told the share and the bundles through
``VLLM_RAY_PER_WORKER_GPUS`` and ``VLLM_RAY_BUNDLE_INDICES``. The engines sleep during the update.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from rlengine.actors import Actor, wait_one

SHARE = 0.5
"""GPU share of each colocated actor (a rank and an engine worker per GPU)."""


@dataclass
class LearnerPlacement:
    """Where the learner ranks go: rank i in bundle i of ``group`` with ``share`` of its GPU."""

    group: Any
    share: float
    colocated: bool


def gpu_group(num_gpus: int, timeout_s: float, name: str, *, one_node: bool = False, cpus: int = 0) -> Any:
    """A placement group of ``num_gpus`` one-GPU bundles (each with ``cpus`` CPUs too), once Ray has
    reserved it (an ActorFailure names it when the cluster lacks the GPUs). Packed on as few nodes
    as possible, or with ``one_node`` all on one node (a tensor-parallel engine)."""
    from ray.util.placement_group import placement_group

    bundle = {"GPU": 1, **({"CPU": cpus} if cpus else {})}
    group = placement_group([bundle] * num_gpus, strategy="STRICT_PACK" if one_node else "PACK")
    wait_one(Actor(group, name), group.ready(), what="GPU reservation", timeout_s=timeout_s)
    return group


def learner_placement(cfg: Any, gpu: bool) -> LearnerPlacement | None:
    """The placement group a run (``cfg``, a RunConfig) reserves for its learner ranks on GPUs
    (shared with the engines when colocated); None on CPU."""
    if not gpu:
        return None
    colocated = cfg.rollout.placement == "colocated"
    name = "colocated placement group" if colocated else "learner placement group"
    group = gpu_group(cfg.learner.num_ranks, cfg.trainer.actor_timeout_s, name)
    return LearnerPlacement(group, SHARE if colocated else 1.0, colocated)


def in_bundle(group: Any, bundle: int, num_gpus: float) -> dict[str, Any]:
    """Ray actor options that put an actor in ``bundle`` of ``group`` (-1: any) with ``num_gpus``;
    the tasks and actors it starts (vLLM's Ray workers) are placed in the group too."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    strategy = PlacementGroupSchedulingStrategy(
        group, placement_group_bundle_index=bundle, placement_group_capture_child_tasks=True
    )
    return {"num_gpus": num_gpus, "scheduling_strategy": strategy}


def engine_bundles(engine: int, tensor_parallel_size: int) -> list[int]:
    """The bundles (GPUs) of engine ``engine`` in the colocated group."""
    return list(range(engine * tensor_parallel_size, (engine + 1) * tensor_parallel_size))


def colocated_engine_options(group: Any, engine: int, tensor_parallel_size: int) -> tuple[dict, dict]:
    """Ray actor options and extra environment for colocated engine ``engine``."""
    bundles = engine_bundles(engine, tensor_parallel_size)
    if tensor_parallel_size == 1:
        return in_bundle(group, bundles[0], SHARE), {}
    options = in_bundle(group, -1, 0)  # the actor itself holds no GPU; its workers do
    env = {
        "VLLM_RAY_PER_WORKER_GPUS": str(SHARE),
        "VLLM_RAY_BUNDLE_INDICES": ",".join(str(b) for b in bundles),
    }
    return options, env


def remove(group: Any) -> None:
    """Give a placement group's resources back to Ray (ignoring one already gone)."""
    if group is None:
        return
    from ray.util.placement_group import remove_placement_group

    with contextlib.suppress(Exception):
        remove_placement_group(group)
