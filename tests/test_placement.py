"""GPU placement and weight-sync choices (rlengine/placement.py, rlengine/weight_sync.py,
rlengine/learner/weight_transfer.py) checked without GPUs: the choices are pure logic, and the
colocated placement runs on Ray's real scheduler with GPUs declared to a local Ray instance."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rlengine.config import load_config
from rlengine.errors import ConfigError
from rlengine.validation import resources
from rlengine.weight_sync import resolve_backend

ROOT = Path(__file__).resolve().parents[1]


def rollout(*overrides: str):
    return load_config(None, list(overrides)).rollout


def test_weight_sync_auto_picks_file_on_cpu_nccl_when_split_and_ipc_when_colocated() -> None:
    assert resolve_backend(rollout(), gpu=False) == "file"
    assert resolve_backend(rollout(), gpu=True) == "nccl"
    colocated = ["rollout.placement=colocated", "learner.num_ranks=1"]
    assert resolve_backend(rollout(*colocated), gpu=True) == "ipc"
    assert resolve_backend(rollout("rollout.weight_sync=file"), gpu=True) == "file"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["rollout.weight_sync=nccl"], r"rollout.weight_sync: 'nccl' needs CUDA GPUs.*weight_sync: auto"),
        (
            ["rollout.placement=colocated"],
            r"rollout.placement: 'colocated' needs CUDA GPUs.*placement: split",
        ),
    ],
)
def test_gpu_only_settings_on_a_cpu_machine_are_named(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_backend(rollout(*overrides), gpu=False)


def test_config_check_counts_shared_gpus_when_colocated() -> None:
    cfg = load_config(None, ["rollout.placement=colocated", "rollout.num_engines=4", "learner.num_ranks=4"])
    text = resources(cfg)
    assert "total on GPU machines: 4 GPU(s), each shared by a rank and an engine" in text
    assert "weight sync on GPU: ipc" in text and "on CPU: not runnable" in text
    split = resources(load_config(None, ["rollout.num_engines=2", "rollout.tensor_parallel_size=2"]))
    assert "total on GPU machines: 5 GPU(s)" in split and "weight sync on GPU: nccl" in split


def test_each_engine_gets_its_own_nccl_ranks_after_the_trainer() -> None:
    from rlengine.learner.weight_transfer import EngineClient

    client = EngineClient(engines=[object(), object(), object()], tensor_parallel_size=2, timeout_s=1)
    info = {"master_address": "10.0.0.1", "master_port": 1234, "rank_offset": 1, "world_size": 7}
    offsets = [client.engine_init_info(info, e)["rank_offset"] for e in range(3)]
    assert offsets == [1, 3, 5]  # trainer = rank 0; engine e's tp workers: 1 + 2e, 2 + 2e
    assert info["rank_offset"] == 1  # the shared dict is not changed
    assert client.engine_init_info({"packed": True}, 2) == {"packed": True}  # ipc: no ranks


def test_the_engine_actor_serves_every_call_the_transfer_client_makes(monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM's trainer engines drive the engines through the client's protocol methods: the client
    implements each with vLLM's parameters, and every call it sends (the shutdown used when a group
    is opened again included) binds to the engine actor's method of that name."""
    from vllm.distributed.weight_transfer import VLLMWeightSyncClient

    from rlengine.learner import weight_transfer
    from rlengine.rollout.engine import RolloutEngine

    sent: list[tuple[str, tuple]] = []

    def record(actors, method, arguments=None, **_):
        sent.extend((method, args) for args in (arguments or [()] * len(actors)))

    monkeypatch.setattr(weight_transfer, "call_all", record)
    client = weight_transfer.EngineClient(engines=[object(), object()], tensor_parallel_size=1, timeout_s=1)
    assert isinstance(client, VLLMWeightSyncClient)
    protocol = [name for name in vars(VLLMWeightSyncClient) if not name.startswith("_")]
    assert "update_weights" in protocol and len(protocol) == 4
    for name in protocol:
        ours = inspect.signature(getattr(client, name))
        theirs = inspect.signature(getattr(VLLMWeightSyncClient, name))
        assert list(ours.parameters) == list(theirs.parameters)[1:], name  # theirs unbound: self first

    client.init_weight_transfer_engine({"rank_offset": 1, "world_size": 3})
    client.start_weight_update()
    client.update_weights({"names": ["w"], "dtype_names": ["float32"], "shapes": [[1]]})
    client.finish_weight_update("7")
    client.shutdown_weight_transfer_engine()
    assert [m for m, _ in sent] == [m for m in [*protocol, "shutdown_weight_transfer_engine"] for _ in range(2)]
    engine_class = RolloutEngine.__ray_metadata__.modified_class
    for method, args in sent:
        inspect.signature(getattr(engine_class, method)).bind(None, *args)  # raises TypeError if not
    inspect.signature(engine_class.sleep).bind(None, 1)  # RolloutPool.asleep(): sleep(level), wake_up()
    inspect.signature(engine_class.wake_up).bind(None)


PROBE = textwrap.dedent(
    """
    import json, os
    import ray
    from rlengine import placement
    from rlengine.config import load_config
    from rlengine.errors import ActorFailure
    from rlengine.runtime import init_ray

    init_ray(None, num_cpus=2, num_gpus=4)

    @ray.remote(num_cpus=0)
    class Probe:
        def where(self):
            return {
                "gpus": [str(g) for g in ray.get_gpu_ids()],
                "bundles": os.environ.get("VLLM_RAY_BUNDLE_INDICES"),
                "share": os.environ.get("VLLM_RAY_PER_WORKER_GPUS"),
            }

    def start(options, env=None):
        return Probe.options(**options, runtime_env={"env_vars": env or {}}).remote()

    out = {}
    colocated = ["rollout.placement=colocated", "rollout.num_engines=4", "learner.num_ranks=4"]
    where = placement.learner_placement(load_config(None, colocated), gpu=True)
    assert where.colocated and where.share == placement.SHARE
    group = where.group
    ranks = [start(placement.in_bundle(group, i, where.share)) for i in range(4)]
    engines = [start(*placement.colocated_engine_options(group, e, 1)) for e in range(4)]
    out["ranks"] = ray.get([r.where.remote() for r in ranks])
    out["engines"] = ray.get([e.where.remote() for e in engines])
    tp2 = [start(*placement.colocated_engine_options(group, e, 2)) for e in range(2)]
    out["tp2"] = ray.get([e.where.remote() for e in tp2])
    for actor in ranks + engines + tp2:
        ray.kill(actor)
    placement.remove(group)
    # split: 2 ranks reserve 2 whole GPUs together; 2 engines take the other 2
    where = placement.learner_placement(load_config(None, ["learner.num_ranks=2"]), gpu=True)
    assert not where.colocated and where.share == 1.0
    ranks = [start(placement.in_bundle(where.group, i, where.share)) for i in range(2)]
    engines = [start({"num_gpus": 1}) for _ in range(2)]
    out["split_ranks"] = ray.get([r.where.remote() for r in ranks])
    out["split_engines"] = ray.get([e.where.remote() for e in engines])
    for actor in ranks + engines:
        ray.kill(actor)
    placement.remove(where.group)
    try:
        placement.gpu_group(5, timeout_s=3, name="colocated placement group")
        out["too_many"] = None
    except ActorFailure as failure:
        out["too_many"] = str(failure)
    print("RESULT " + json.dumps(out))
    """
)


@pytest.mark.slow
def test_colocated_placement_shares_gpus_and_split_placement_separates_them(tmp_path: Path) -> None:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout[-2000:] + done.stderr[-3000:]
    out = json.loads(lines[0][len("RESULT ") :])
    rank_gpus = [r["gpus"] for r in out["ranks"]]
    assert all(len(g) == 1 for g in rank_gpus) and len({g[0] for g in rank_gpus}) == 4
    assert [e["gpus"] for e in out["engines"]] == rank_gpus  # engine i shares rank i's GPU
    assert [(e["bundles"], e["share"]) for e in out["tp2"]] == [("0,1", "0.5"), ("2,3", "0.5")]
    assert all(e["gpus"] == [] for e in out["tp2"])  # its vLLM workers hold the GPUs, not the actor
    split = [r["gpus"][0] for r in out["split_ranks"]] + [e["gpus"][0] for e in out["split_engines"]]
    assert sorted(split) == sorted(g[0] for g in rank_gpus)  # 4 different GPUs: the group was freed
    assert out["too_many"] is not None and "colocated placement group" in out["too_many"]
    assert "GPU reservation" in out["too_many"]
