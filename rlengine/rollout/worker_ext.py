"""Methods added to every vLLM worker (``worker_extension_cls``) for weight sync.

vLLM calls them through ``LLM.collective_rpc("rlengine_<name>")``. Names carry the
``rlengine_`` prefix so they never clash with vLLM's own worker methods.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def _iter_safetensors(path: str) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    with safe_open(path, framework="pt", device="cpu") as f:
        for name in f.keys():  # noqa: SIM118 - safe_open has no __iter__
            yield name, f.get_tensor(name)


class RLEngineWorkerExtension:
    """Mixed into vLLM's worker class; ``self`` is the worker (has ``model_runner``)."""

    def rlengine_reload_weights(self, path: str) -> int:
        """Load HF-named weights from a safetensors file in place; returns the tensor count.

        On CPU, vLLM pre-packs linear weights at load time. ``reload_weights`` re-runs weight
        processing for ordinary layers, but the tied ``lm_head`` keeps a stale packed copy,
        so it is re-packed here after every reload.
        """
        count = 0

        def counted() -> Iterator[tuple[str, torch.Tensor]]:
            nonlocal count
            for item in _iter_safetensors(path):
                count += 1
                yield item

        self.model_runner.reload_weights(weights_iterator=counted())
        model = self.model_runner.get_model()
        lm_head = getattr(model, "lm_head", None)
        if lm_head is not None and self.device.type == "cpu" and hasattr(lm_head, "weight"):
            from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

            dispatch_cpu_unquantized_gemm(lm_head, remove_weight=False)
        return count
