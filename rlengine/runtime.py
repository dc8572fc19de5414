"""Process and Ray set-up shared by training, evaluation, rollout and learner actors.

A leaf module: it imports nothing from rlengine.
"""

from __future__ import annotations

import os

QUIET_ENV: dict[str, str] = {
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "ERROR"),
    "PYTHONWARNINGS": "ignore",
}
"""Environment for actors: keeps the driver's console for the progress bar."""


def available_cpus() -> list[int]:
    """The cores this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return list(range(os.cpu_count() or 1))


def use_gpu() -> bool:
    """Whether the learner and engines run on CUDA (decided once, on the driver)."""
    import torch

    return torch.cuda.is_available()


def init_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address`` or start a local Ray instance (no dashboard).

    A local instance runs without Ray's token authentication (nothing outside this machine can
    reach it); a cluster keeps whatever authentication it was started with.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=num_cpus or len(available_cpus()), include_dashboard=False, log_to_driver=True)
