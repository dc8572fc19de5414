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

TRANSFER_ENV: dict[str, str] = {"NCCL_CUMEM_ENABLE": "0"}
"""For the learner ranks and the engines under ``rollout.weight_sync: nccl | ipc``: vLLM's
transfer group needs the same NCCL memory mode on both sides, or NCCL hangs without an error."""


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


LOOPBACK = "127.0.0.1"
"""The address a local Ray instance binds every server to."""

RAY_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's switch between single-machine mode (``0``: the node address is 127.0.0.1) and cluster mode
(the default on Linux: the node address is the machine's outward-facing IP)."""


RAY_TESTED = ((2, 40), (2, 60))
"""The Ray versions (major, minor; inclusive) whose private single-machine switch
(``ray._private.ray_constants.ENABLE_RAY_CLUSTER``) :func:`init_ray` sets; pyproject.toml pins the
same range. 2.60 is the one the test suite runs on."""


def single_machine_mode(version: str, constants: object) -> None:
    """Put an already imported Ray in single-machine mode (every server on 127.0.0.1), or fail
    loudly when this Ray is not one whose private switch is known to do that."""
    major_minor = tuple(int(part) for part in version.split(".")[:2])
    tested = "–".join(".".join(map(str, v)) for v in RAY_TESTED)
    if not RAY_TESTED[0] <= major_minor <= RAY_TESTED[1] or not hasattr(constants, "ENABLE_RAY_CLUSTER"):
        raise RuntimeError(
            f"Ray {version}: rlengine keeps a local Ray instance on loopback through Ray's private "
            f"ray._private.ray_constants.ENABLE_RAY_CLUSTER, known to work on Ray {tested} only, so "
            "this Ray's servers could listen on every network interface. Install a Ray in that "
            f"range (pip install 'ray>={RAY_TESTED[0][0]}.{RAY_TESTED[0][1]},"
            f"<{RAY_TESTED[1][0]}.{RAY_TESTED[1][1] + 1}'), or start Ray yourself (ray start --head "
            "--node-ip-address 127.0.0.1) and pass its address (trainer.ray_address: auto)."
        )
    constants.ENABLE_RAY_CLUSTER = False  # type: ignore[attr-defined]


def init_ray(address: str | None, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Join the cluster at ``address`` or start a local Ray instance (no dashboard). ``num_gpus``
    declares GPUs to a local instance (tests schedule the GPU placement on a CPU machine with it).

    A local instance listens on loopback only and runs without Ray's token authentication:
    nothing outside this machine can reach it. A cluster keeps whatever addresses and
    authentication it was started with.

    Ray 2.60 has no bind-address option: its servers (GCS, raylet, each worker's gRPC server,
    the runtime-env and metrics agents) bind to all interfaces unless the node address is a
    loopback one. ``ray.init(_node_ip_address="127.0.0.1")`` alone does not do it, because on
    Linux Ray replaces a loopback address by the machine's IP
    (``ray._private.services.resolve_ip_for_localhost``). Its single-machine mode
    (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the default on Windows and macOS) keeps 127.0.0.1:
    the variable is read when ``ray`` is imported, so it is set both in the environment (for the
    processes Ray starts) and on the already imported constant (for this one).
    ``tests/test_security.py`` checks every listening socket.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    import ray._private.ray_constants as ray_constants  # no public switch: version-guarded below

    single_machine_mode(ray.__version__, ray_constants)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ[RAY_CLUSTER_ENV] = "0"
    ray.init(
        num_cpus=num_cpus or len(available_cpus()),
        num_gpus=num_gpus,
        include_dashboard=False,
        log_to_driver=True,
        _node_ip_address=LOOPBACK,
    )
