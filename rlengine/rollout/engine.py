"""One vLLM engine inside a Ray actor, and the per-process environment it needs."""

from __future__ import annotations

import time
from typing import Any

import ray

from rlengine.actors import Process, this_process
from rlengine.runtime import QUIET_ENV

EXTENSION = "rlengine.rollout.worker_ext.RLEngineWorkerExtension"


def kv_cache_gib_for(model_path: str, sequences: int, max_model_len: int, dtype: str) -> int:
    """The KV cache (whole GiB, at least 1) that holds ``sequences`` full-length sequences of the
    model at once: 2 (K and V) x layers x KV heads x head dim x dtype bytes per token."""
    import json
    import math
    from pathlib import Path

    config = json.loads((Path(model_path) / "config.json").read_text())
    config = config.get("text_config", config)
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    per_token = 2 * config["num_hidden_layers"] * config.get("num_key_value_heads", heads) * head_dim
    per_token *= 4 if dtype == "float32" else 2
    return max(1, math.ceil(sequences * max_model_len * per_token / 2**30))


def cpu_engine_env(cpus: list[int], kv_cache_gib: int, in_process: bool = False) -> dict[str, str]:
    """Environment for a vLLM-CPU engine pinned to ``cpus`` (set before vLLM is imported).

    ``in_process`` runs the engine core and its worker inside the actor's own process instead of
    two more processes (``VLLM_ENABLE_V1_MULTIPROCESSING=0``): ~1.2 GB less memory and a faster
    start for the built-in model, but generation is slower on 2 cores (no overlap of scheduling
    and output processing with the forward passes; see BENCHMARKS.md)."""
    return {
        **QUIET_ENV,
        "VLLM_CPU_OMP_THREADS_BIND": ",".join(str(c) for c in cpus),
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib),
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0" if in_process else "1",
        "VLLM_HOST_IP": "127.0.0.1",  # its processes talk over loopback only
    }


@ray.remote(num_cpus=0)
class RolloutEngine:
    """Owns one ``vllm.LLM``. Generates from token ids and reloads weights from a file."""

    def __init__(self, model_path: str, options: dict[str, Any]) -> None:
        from vllm import LLM

        kwargs = dict(
            model=model_path,
            dtype=options["dtype"],
            max_model_len=options["max_model_len"],
            seed=options["seed"],
            enforce_eager=options["enforce_eager"],
            trust_remote_code=options["trust_remote_code"],
            logprobs_mode="processed_logprobs",  # logprobs after temperature / top-p
            worker_extension_cls=EXTENSION,
            enable_prefix_caching=True,
        )
        if options.get("gpu"):
            kwargs["gpu_memory_utilization"] = options["gpu_memory_utilization"]
            kwargs["tensor_parallel_size"] = options.get("tensor_parallel_size", 1)
            if kwargs["tensor_parallel_size"] > 1:  # vLLM starts its workers inside the engine's bundle
                kwargs["distributed_executor_backend"] = "ray"
            if options.get("sleep_level"):  # placement: colocated
                kwargs["enable_sleep_mode"] = True
            if options.get("weight_transfer") in ("nccl", "ipc"):
                kwargs["weight_transfer_config"] = {"backend": options["weight_transfer"]}
        else:
            # vLLM-CPU 0.32 crashes ("CPU Generator does not use offset") when a seeded request's
            # prompt is split over steps by chunked prefill: it rewinds the request's generator,
            # which only CUDA generators support. Whole prompts per step avoid it.
            kwargs["enable_chunked_prefill"] = False
        kwargs.update(options.get("engine_kwargs") or {})
        self.llm = LLM(**kwargs)

    def ready(self) -> Process:
        """Started: this process's id and log files (for the driver's error messages)."""
        return this_process()

    def generate(self, prompt_token_ids: list[list[int]], sampling: dict[str, Any]) -> dict[str, Any]:
        """Sample ``sampling['n']`` responses per prompt.

        Returns ``{"groups": ..., "seconds": ...}``: per prompt, a list of dicts with ``text``,
        ``token_ids``, ``logprobs`` (the sampled token's behaviour logprob) and ``finish_reason``
        (``stop`` or ``length``); and the seconds generation took (for load balancing).
        """
        from vllm import SamplingParams

        start = time.perf_counter()
        seeds = sampling.get("seeds")
        params = []
        for i in range(len(prompt_token_ids)):
            params.append(
                SamplingParams(
                    n=sampling["n"],
                    temperature=sampling["temperature"],
                    top_p=sampling["top_p"],
                    max_tokens=sampling["max_tokens"],
                    logprobs=0 if sampling.get("logprobs", True) else None,
                    seed=None if seeds is None else int(seeds[i]),
                    stop_token_ids=sampling.get("stop_token_ids"),
                )
            )
        prompts = [{"prompt_token_ids": ids} for ids in prompt_token_ids]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results = []
        for out in outputs:
            group = []
            for comp in out.outputs:
                token_ids = list(comp.token_ids)
                if comp.logprobs is not None:
                    logprobs = [float(step[tok].logprob) for tok, step in zip(token_ids, comp.logprobs)]
                else:
                    logprobs = []
                group.append(
                    {
                        "text": comp.text,
                        "token_ids": token_ids,
                        "logprobs": logprobs,
                        "finish_reason": "length" if comp.finish_reason == "length" else "stop",
                    }
                )
            results.append(group)
        return {"groups": results, "seconds": time.perf_counter() - start}

    def prompt_logprobs(self, sequences: list[list[int]]) -> list[list[float]]:
        """Logprob of every token after the first of each sequence under the current weights
        (temperature 1). Used to check that weight sync reached the engine."""
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
        outputs = self.llm.generate([{"prompt_token_ids": s} for s in sequences], params, use_tqdm=False)
        result = []
        for seq, out in zip(sequences, outputs):
            lps = out.prompt_logprobs[1:]
            result.append([float(step[tok].logprob) for tok, step in zip(seq[1:], lps)])
        return result

    def reload_weights(self, path: str) -> float:
        """Load new weights from a safetensors file; drop the prefix cache. Returns seconds."""
        start = time.perf_counter()
        self.llm.collective_rpc("rlengine_reload_weights", args=(path,))
        self.llm.reset_prefix_cache()
        return time.perf_counter() - start

    # vLLM's weight-transfer protocol (VLLMWeightSyncClient), driven by learner rank 0 through
    # rlengine.learner.weight_transfer.EngineClient; each call reaches every worker of the engine.

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> bool:
        self.llm.collective_rpc("init_weight_transfer_engine", kwargs={"init_info": init_info})
        return True

    def start_weight_update(self) -> bool:
        self.llm.collective_rpc("start_weight_update")
        return True

    def update_weights(self, update_info: dict[str, Any] | list[dict[str, Any]]) -> bool:
        self.llm.collective_rpc("update_weights", kwargs={"update_info": update_info})
        return True

    def finish_weight_update(self) -> bool:
        """Commit the received weights and drop the prefix cache (it holds the old policy's KV)."""
        self.llm.collective_rpc("finish_weight_update")
        self.llm.reset_prefix_cache()
        return True

    def shutdown_weight_transfer_engine(self) -> bool:
        """Leave the transfer group (before a new one is opened, e.g. after an engine restart)."""
        self.llm.collective_rpc("shutdown_weight_transfer_engine")
        return True

    def sleep(self, level: int) -> bool:
        """Free this engine's accelerator memory for the update (``placement: colocated``)."""
        self.llm.sleep(level=level)
        return True

    def wake_up(self, tags: list[str] | None = None) -> bool:
        """Reallocate what :meth:`sleep` freed: ``["weights"]`` before the weight sync,
        ``["kv_cache"]`` after it (``None``: both)."""
        self.llm.wake_up(tags=tags)
        return True

    def shutdown(self) -> bool:
        """Stop the engine core and its workers so they release their shared memory."""
        core = getattr(self.llm.llm_engine, "engine_core", None)
        if core is not None:
            core.shutdown()
        return True
