"""PCL's value model: predicts the policy's pass rate on a prompt from the prompt alone.

A transformer backbone (no LM head) reads the prompt; its last hidden state is mean-pooled over
the prompt tokens, layer-normalised, and a small head maps it to a scalar V(x), the predicted pass
rate. It is fitted by MSE to the pass rates the last step observed. V is a plain regression output
(no sigmoid: a squashed output saturates when a step's prompts all fail, and its MSE gradient then
vanishes); predictions are clipped to [0, 1] when they are returned.

With ``train: head`` the backbone is frozen, so each prompt's pooled features are computed once
and cached by prompt id (scoring a prompt seen before costs one head evaluation). With
``train: full`` the backbone is trained too and nothing can be cached.

Precision (:func:`precision`): on CPU everything is fp32. On GPU the backbone computes in
``model.dtype``; a frozen backbone (``train: head``) is also stored in it, but a trained one
(``train: full``) keeps fp32 master weights and runs its forward under autocast to ``model.dtype``:
AdamW's updates at the default lr of 1e-5 are far below bf16's spacing (2^-8 relative: about 8e-5
for a weight of 0.02), so bf16 weights would round every update away and the backbone never moves.

:class:`ValueModel` is a plain class. :func:`build_value_model` places it in the driver, in a Ray
actor of its own, or inside the learner's rank-0 process, and returns a :class:`ValueModelHandle`
whose methods block until the result is back.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from rlengine.actors import Process, this_process
from rlengine.schema import Count, NonNegative, Positive


@dataclass
class ValueModelConfig:
    """The ``curriculum.value_model`` section of ``curriculum.name: pcl``."""

    backbone: str = "policy_init"
    """``policy_init`` (the policy's initial weights), or a built-in name, local directory or hub id of
    a separate (smaller) model. A separate model reads the prompt text with its own tokenizer."""
    layers: Count | None = None
    """Use only the backbone's first N transformer layers (null: all). Cost is about proportional;
    on the arithmetic source 8 of SmolLM2's 30 layers predict as well as all 30."""
    head: Literal["linear", "mlp"] = "linear"
    """Scalar head on the pooled last hidden state: one linear layer, or Linear-GELU-Linear."""
    hidden_size: Count = 256
    """Width of the ``mlp`` head's hidden layer."""
    train: Literal["head", "full"] = "head"
    """Train only the head (frozen backbone: pooled features are cached per prompt), or the whole model."""
    lr: Positive | None = None
    """AdamW learning rate; default 1e-3 for ``train: head`` and 1e-5 for ``train: full``."""
    weight_decay: NonNegative = 0.0
    """AdamW weight decay."""
    batch_size: Count = 32
    """Prompts per forward pass when scoring, and per optimizer step when fitting."""
    epochs_per_step: Count | None = None
    """Passes over the (prompt, pass rate) pairs in each fit; default 16 for ``train: head`` (milliseconds
    on cached features, and few passes leave the head near the mean) and 2 for ``train: full``."""
    max_prompt_tokens: Count = 512
    """Longer prompts are cut to their last this many tokens."""
    cache_size: Count = 200_000
    """``train: head`` only: most prompts whose features are kept (least recently used dropped first)."""
    placement: Literal["auto", "actor", "learner", "driver"] = "auto"
    """Where it runs. ``actor``: a Ray actor of its own (its own GPU when ``num_gpus`` >= 1);
    ``learner``: inside the learner's rank-0 process, sharing its GPU; ``driver``: in the trainer
    process. ``auto``: ``actor`` on CPU, ``learner`` on GPU."""
    num_gpus: NonNegative = 1.0
    """GPUs for ``placement: actor`` on a GPU machine (ignored on CPU)."""
    threads: Count | None = None
    """CPU threads of the ``actor`` placement (default: every core; nothing else runs while it scores or fits)."""


@dataclass
class ValueModelSpec:
    """Everything the value model needs to build itself in any process."""

    config: ValueModelConfig
    backbone_path: str
    """Resolved directory of the backbone."""
    shares_policy_tokenizer: bool
    """True when the backbone is the policy: its ``prompt_ids`` are used as they are."""
    dtype: str = "float32"
    trust_remote_code: bool = False
    seed: int = 0
    gpu: bool = False


class ValueHead(nn.Module):
    """Pooled hidden state -> predicted pass rate. Starts at ``init_pass_rate`` for every prompt
    (last layer zero), so an untrained model ranks all candidates equally."""

    def __init__(self, hidden: int, kind: str, width: int, init_pass_rate: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        if kind == "linear":
            self.layers = nn.Sequential(nn.Linear(hidden, 1))
        else:
            self.layers = nn.Sequential(nn.Linear(hidden, width), nn.GELU(), nn.Linear(width, 1))
        last = self.layers[-1]
        nn.init.zeros_(last.weight)
        nn.init.constant_(last.bias, init_pass_rate)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(self.norm(features.float())).squeeze(-1)


def precision(dtype: str, device_type: str, train_backbone: bool) -> tuple[torch.dtype, torch.dtype]:
    """(dtype the backbone's weights are stored in, dtype its forward computes in).

    CPU: fp32 for both. GPU: the forward runs in ``dtype`` (``model.dtype``); the weights are stored
    in it when the backbone is frozen, and in fp32 (master weights, the forward under autocast) when
    it is trained, since updates smaller than half a bf16 / fp16 step would be rounded away.
    """
    compute = getattr(torch, dtype) if device_type == "cuda" else torch.float32
    return (torch.float32 if train_backbone else compute), compute


class ValueModel:
    """Backbone + head. Prompts are ``(id, text, prompt_ids)`` triples."""

    def __init__(self, spec: ValueModelSpec, init_pass_rate: float = 0.5) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.spec, self.config = spec, spec.config
        self.device = torch.device("cuda" if spec.gpu and torch.cuda.is_available() else "cpu")
        full = self.config.train == "full"
        self.weight_dtype, self.compute_dtype = precision(spec.dtype, self.device.type, full)
        self.backbone = AutoModel.from_pretrained(
            spec.backbone_path, dtype=self.weight_dtype, trust_remote_code=spec.trust_remote_code
        ).to(self.device)
        if self.config.layers is not None:
            keep_first_layers(self.backbone, self.config.layers)
        self.tokenizer = None
        if not spec.shares_policy_tokenizer:
            self.tokenizer = AutoTokenizer.from_pretrained(
                spec.backbone_path, trust_remote_code=spec.trust_remote_code
            )
        hidden = self.backbone.config.hidden_size
        with torch.random.fork_rng(devices=[]):  # seeded, without touching the host process's RNG
            torch.manual_seed(spec.seed)
            self.head = ValueHead(hidden, self.config.head, self.config.hidden_size, init_pass_rate)
        self.head.to(self.device)
        self.backbone.train(False)
        self.backbone.requires_grad_(full)
        params = list(self.head.parameters()) + (list(self.backbone.parameters()) if full else [])
        lr = self.config.lr if self.config.lr is not None else (1e-5 if full else 1e-3)
        self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=self.config.weight_decay)
        self.cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.fits = 0
        """Fits so far: seeds each fit's shuffling, and is part of the state."""
        self.pad_id = 0

    def ready(self) -> Process:
        """Started: this process's id and log files (for the driver's error messages)."""
        return this_process()

    # ------------------------------------------------------------------ features

    def _ids(self, prompt: tuple[str, str, list[int]]) -> list[int]:
        _, text, ids = prompt
        if self.tokenizer is not None:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return list(ids)[-self.config.max_prompt_tokens :]

    def _pooled(self, batch: list[tuple[str, str, list[int]]]) -> torch.Tensor:
        """Mean of the last hidden state over each prompt's tokens (right-padded batch)."""
        rows = [self._ids(p) for p in batch]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        mixed = self.compute_dtype != self.weight_dtype  # fp32 master weights, low-precision forward
        with torch.autocast(self.device.type, dtype=self.compute_dtype, enabled=mixed):
            hidden = self.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return ((hidden * weights).sum(1) / weights.sum(1)).float()

    def _features(self, prompts: list[tuple[str, str, list[int]]]) -> torch.Tensor:
        """Frozen-backbone features, from the cache where present (computed in batches otherwise)."""
        missing = [p for p in dict((p[0], p) for p in prompts).values() if p[0] not in self.cache]
        size = self.config.batch_size
        with torch.no_grad():
            for start in range(0, len(missing), size):
                chunk = missing[start : start + size]
                for p, feature in zip(chunk, self._pooled(chunk)):
                    self.cache[p[0]] = feature
        for p in prompts:
            self.cache.move_to_end(p[0])
        features = torch.stack([self.cache[p[0]] for p in prompts])
        while len(self.cache) > self.config.cache_size:
            self.cache.popitem(last=False)
        return features

    # ------------------------------------------------------------------ predict / fit

    def predict(self, prompts: list[tuple[str, str, list[int]]]) -> list[float]:
        """Predicted pass rate of each prompt, scored in batches of ``batch_size``."""
        if not prompts:
            return []
        with torch.no_grad():
            if self.config.train == "head":
                values = self.head(self._features(prompts))
            else:
                size = self.config.batch_size
                values = torch.cat(
                    [self.head(self._pooled(prompts[s : s + size])) for s in range(0, len(prompts), size)]
                )
        return values.clamp(0.0, 1.0).cpu().tolist()

    def fit(self, prompts: list[tuple[str, str, list[int]]], targets: list[float]) -> dict[str, float]:
        """``epochs_per_step`` passes of AdamW on the MSE between V(x) and the observed pass rates.
        Returns the mean loss of the last pass and the seconds spent."""
        start = time.perf_counter()
        if not prompts:
            return {"loss": float("nan"), "seconds": 0.0}
        head_only = self.config.train == "head"
        features = self._features(prompts) if head_only else None
        target = torch.tensor(targets, dtype=torch.float32, device=self.device)
        generator = torch.Generator().manual_seed(self.spec.seed * 1_000_003 + self.fits)
        self.fits += 1
        size, loss_sum = self.config.batch_size, 0.0
        self.head.train(True)
        epochs = self.config.epochs_per_step or (16 if head_only else 2)
        for _ in range(epochs):
            order = torch.randperm(len(prompts), generator=generator).tolist()
            loss_sum = 0.0
            for s in range(0, len(order), size):
                idx = order[s : s + size]
                if head_only:
                    x = features[idx]
                else:
                    x = self._pooled([prompts[i] for i in idx])
                loss = ((self.head(x) - target[idx]) ** 2).mean()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                loss_sum += loss.item() * len(idx)
        self.head.train(False)
        return {"loss": loss_sum / len(prompts), "seconds": time.perf_counter() - start}

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Head (and, with ``train: full``, backbone) weights and the optimizer state, on CPU."""
        state: dict[str, Any] = {
            "head": _to_cpu(self.head.state_dict()),
            "optimizer": _to_cpu(self.optimizer.state_dict()),
            "fits": self.fits,
        }
        if self.config.train == "full":
            state["backbone"] = _to_cpu(self.backbone.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.head.load_state_dict(state["head"])
        if "backbone" in state:
            self.backbone.load_state_dict(state["backbone"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.fits = int(state["fits"])


def keep_first_layers(backbone: nn.Module, layers: int) -> None:
    """Cut a decoder to its first ``layers`` blocks (the final norm stays)."""
    for attr in ("layers", "h", "blocks"):
        blocks = getattr(backbone, attr, None)
        if isinstance(blocks, nn.ModuleList):
            if not 1 <= layers <= len(blocks):
                raise ValueError(
                    f"curriculum.value_model.layers: expected 1..{len(blocks)} for this backbone, got {layers}"
                )
            setattr(backbone, attr, blocks[:layers])
            backbone.config.num_hidden_layers = layers
            return
    raise ValueError(
        f"curriculum.value_model.layers: cannot find the layer list of {type(backbone).__name__}; set layers: null"
    )


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- placement


class ValueModelHandle:
    """The value model wherever it runs; every call blocks until its result is back."""

    def __init__(
        self, call: Callable[..., Any], placement: str, close: Callable[[], None] | None = None
    ) -> None:
        self._call, self.placement, self._close = call, placement, close

    def predict(self, prompts: list[tuple[str, str, list[int]]]) -> list[float]:
        return self._call("predict", prompts)

    def fit(self, prompts: list[tuple[str, str, list[int]]], targets: list[float]) -> dict[str, float]:
        return self._call("fit", prompts, targets)

    def state_dict(self) -> dict[str, Any]:
        return self._call("state_dict")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._call("load_state_dict", state)

    def close(self) -> None:
        if self._close is not None:
            self._close()


def resolve_placement(placement: str, gpu: bool, has_learner: bool) -> str:
    """``auto`` -> ``actor`` on CPU, ``learner`` on GPU; ``learner`` without a learner -> ``driver``."""
    if placement == "auto":
        placement = "learner" if gpu else "actor"
    if placement == "learner" and not has_learner:
        return "driver"
    return placement


def build_value_model(spec: ValueModelSpec, placement: str, learner: Any = None, init_pass_rate: float = 0.5):
    """Start the value model in the driver, its own Ray actor, or the learner's rank-0 process."""
    if placement == "driver":
        model = ValueModel(spec, init_pass_rate)
        return ValueModelHandle(lambda method, *args: getattr(model, method)(*args), "driver")
    import ray

    if placement == "learner":
        name = learner.host("value_model", ValueModel, spec, init_pass_rate)
        return ValueModelHandle(
            lambda method, *args: learner.call_hosted(name, method, *args),
            "learner",
            lambda: learner.unhost(name),
        )
    from rlengine.actors import DEFAULT_TIMEOUT_S, Actor, wait_one, wait_started
    from rlengine.runtime import QUIET_ENV, available_cpus

    threads = spec.config.threads or len(available_cpus())
    env = {**QUIET_ENV, "OMP_NUM_THREADS": str(threads)}
    if not spec.gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    actor_cls = ray.remote(num_cpus=0)(ValueModel)
    actor = actor_cls.options(
        num_gpus=spec.config.num_gpus if spec.gpu else 0, runtime_env={"env_vars": env}
    ).remote(spec, init_pass_rate)
    named = Actor(actor, "value model")
    wait_started([named], timeout_s=DEFAULT_TIMEOUT_S)
    return ValueModelHandle(
        lambda method, *args: wait_one(
            named,
            getattr(actor, method).remote(*args),
            what=f"value model {method}",
            timeout_s=DEFAULT_TIMEOUT_S,
        ),
        "actor",
        lambda: ray.kill(actor),
    )
