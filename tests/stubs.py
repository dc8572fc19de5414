"""Stub parts for building a real :class:`rlengine.trainer.Trainer` without Ray, vLLM or DeepSpeed.

Only pure step logic is tested with them (what the step does with the groups, samples and metrics);
the same paths run on the real parts in the slow end-to-end tests.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from rlengine.config import RunConfig
from rlengine.producer import Rollouts
from rlengine.samples import Sample, objective_weights
from rlengine.stages import STAGE_KINDS, StageContext, build_stage
from rlengine.trainer import Trainer
from rlengine.weight_sync import WeightSync


class StubPool:
    """Generates ``sampling["n"]`` responses ``"0", "1", ...`` of 3 tokens for every prompt."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        """Prompts per generation request, in order."""
        self.restarts = [0]
        self.events: list[str] = []
        """``submit``, ``collect``, ``sleep``, ``wake``, ``sync`` in the order they happened."""
        self.sleeping = False

    def submit(self, prompt_token_ids: list[list[int]], sampling: dict[str, Any]) -> list[Any]:
        self.calls.append(len(prompt_token_ids))
        self.events.append("submit")
        return [(len(prompt_token_ids), sampling["n"])]

    def collect(self, chunks: list[Any]) -> list[list[dict]]:
        self.events.append("collect")
        ((count, n),) = chunks
        response = {"token_ids": [1, 2, 3], "logprobs": [-1.0] * 3, "finish_reason": "stop"}
        return [[{**response, "text": str(k)} for k in range(n)] for _ in range(count)]

    @contextlib.contextmanager
    def asleep(self) -> Iterator[None]:
        self.events.append("sleep")
        self.sleeping = True
        try:
            yield
        finally:
            self.sleeping = False
            self.events.append("wake")

    def sync_weights(self, path: str, engines: list[int] | None = None) -> float:
        self.events.append("sync")
        return 0.0

    def imbalance(self) -> float:
        return 1.0

    def shutdown(self, timeout_s: float = 60.0) -> None:
        pass


class StubRewards:
    """Response k of a prompt passes (scores 1 on ``acc``) when k < ``passes(prompt id)``; every
    scoring round reports 1 error and 2 timeouts."""

    def __init__(self, passes: Callable[[str], int]) -> None:
        self.passes = passes
        self.prompt_ids: list[str] = []
        """The prompt id of every response scored, in order."""

    def score(self, items: list[Any]) -> SimpleNamespace:
        self.prompt_ids += [it.metadata["id"] for it in items]
        values = [float(int(it.completion) < self.passes(it.metadata["id"])) for it in items]
        return SimpleNamespace(scores={"acc": values}, errors=1, timeouts=2, error_messages=["boom"])

    def close(self) -> None:
        pass


class StubLearner:
    """Records what it is asked; logprobs are -0.5 per token."""

    def __init__(self, metrics: dict[str, float] | None = None) -> None:
        self.trained: list[list[Sample]] = []
        self.logprob_calls: list[tuple[int, str]] = []
        self.metrics = metrics or {"loss/policy": 0.1, "grad_norm": 1.0, "lr": 1e-6, "entropy/mean": 1.0}

    def train(self, samples: list[Sample], seed: int) -> dict[str, float]:
        self.trained.append(list(samples))
        return dict(self.metrics)

    def compute_logprobs(self, samples: list[Sample], which: str = "policy") -> list[list[float]]:
        self.logprob_calls.append((len(samples), which))
        return [[-0.5] * len(s.response_ids) for s in samples]

    def export_weights(self, path: str) -> None:
        Path(path).write_bytes(b"w" * 8)

    def shutdown(self) -> None:
        pass


class StubLogger:
    def __init__(self) -> None:
        self.histograms: dict[str, list[float]] = {}
        self.lines: list[dict[str, Any]] = []

    def histogram(self, tag: str, values: list[float], step: int) -> None:
        self.histograms[tag] = list(values)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.lines.append(dict(metrics))

    def log_scalars(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def close(self) -> None:
        pass


def stub_trainer(
    cfg: RunConfig,
    rows: list[dict],
    tmp_path: Path,
    *,
    passes: Callable[[str], int] = lambda pid: 0,
    objectives: tuple[str, ...] = ("acc",),
    reward_weights: tuple[float, ...] = (1.0,),
    rewards: Any = None,
    learner: Any = None,
    source_rows: dict[str, tuple[list[dict], list[dict]]] | None = None,
) -> Trainer:
    """A real Trainer over stub parts: the config's stages (built for real, with handles on the
    stub rollouts and learner, as rlengine/build.py gives them), a stub pool, stub rewards and a
    stub learner; the file weight sync writes into ``tmp_path``."""
    pool, learner = StubPool(), learner or StubLearner()
    rollouts = Rollouts(cfg, pool, rewards or StubRewards(passes), list(objectives))
    stages: dict[str, Any] = {}
    context = StageContext(
        rows=rows,
        seed=cfg.trainer.seed,
        objectives=list(objectives),
        reward_weights=list(reward_weights),
        algorithm=cfg.algorithm,
        objective_weights=lambda: objective_weights(stages["reward_weighting"].combine, list(objectives)),
        rollout=rollouts.handle(),
        learner=learner,
        source_rows=source_rows or {},
    )
    stages.update({kind: build_stage(kind, getattr(cfg, kind), context) for kind in STAGE_KINDS})
    sync = WeightSync("file", learner, pool, tensor_parallel_size=1)
    shutil.rmtree(sync.weights_dir)
    sync.weights_dir = tmp_path / "weights"
    sync.weights_dir.mkdir(parents=True, exist_ok=True)
    return Trainer(
        cfg, rollouts=rollouts, learner=learner, stages=stages, logger=StubLogger(), sync_weights=sync
    )
