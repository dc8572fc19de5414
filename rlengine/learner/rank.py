"""One DeepSpeed rank of the learner, as a plain class.

``LearnerGroup`` runs one of these per Ray actor; tests, benchmarks and GPU checks build it
directly in their own process (``single_process_env()`` sets up a world of one). The driver
sends every rank the same rollout batch and a plan: for each optimizer step, this rank's
micro-batches (lists of sample indices). Every rank gets the same number of micro-batches per
step (an empty one is a zero-weight dummy), so ZeRO's collectives line up across ranks.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import torch

from rlengine.actors import Process, this_process
from rlengine.algorithms import (
    aggregate_loss,
    bapo_adapt_bounds,
    compute_policy_loss,
    kl_penalty,
    sequence_weights,
    tis_weights,
)
from rlengine.learner.batching import MicroBatch, make_micro_batch, row_scales, subset_share
from rlengine.learner.export import (
    Counted,
    full_shape,
    gathered_buckets,
    policy_tensors,
    write_safetensors_streamed,
)
from rlengine.learner.guests import GuestHost
from rlengine.learner.logprobs import PolicyModel
from rlengine.learner.metrics import Metrics
from rlengine.learner.off_policy import add_off_policy_metrics, off_policy_weights
from rlengine.learner.spec import LearnerSpec, lr_lambda, single_process_env
from rlengine.samples import Sample

__all__ = ["LearnerRank", "single_process_env"]


class LearnerRank(GuestHost):
    """A DeepSpeed engine over the policy (and, when KL is on, a frozen reference model); it can
    also host a stage's model in its process (rlengine/learner/guests.py)."""

    def __init__(self, spec: LearnerSpec) -> None:
        if spec.threads:
            torch.set_num_threads(int(spec.threads))
        import deepspeed
        import transformers

        transformers.utils.logging.disable_progress_bar()
        self.spec = spec
        self.algo, self.opts = spec.algorithm, spec.learner
        self.guests = {}
        self.transfer: Any = None  # rollout.weight_sync: nccl | ipc (rlengine/learner/weight_transfer.py)
        self.rank = int(os.environ["RANK"])
        self.world_size = int(os.environ["WORLD_SIZE"])
        self.device = torch.device("cuda", torch.cuda.current_device()) if spec.gpu else torch.device("cpu")
        # LearnerGroup hands the ranks a file rendezvous: torch's TCP store would listen on every
        # network interface. Without one (a launcher such as torchrun), DeepSpeed's env:// or MPI
        # discovery with MASTER_ADDR / MASTER_PORT.
        init_method = os.environ.get("RLENGINE_INIT_METHOD")
        deepspeed.init_distributed(
            dist_backend="nccl" if spec.gpu else "gloo",
            auto_mpi_discovery=init_method is None,
            init_method=init_method,
            rank=self.rank if init_method else -1,
            world_size=self.world_size if init_method else -1,
        )
        torch.manual_seed(spec.seed + self.rank)
        policy = self._load_model().to(self.device)
        policy.fused_head &= self.opts.zero_stage < 3
        if self.opts.grad_checkpointing:
            policy.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if self.opts.compile:
            policy.compile_layers()
        hf_config = policy.model.config
        self.tied = bool(getattr(hf_config, "tie_word_embeddings", False))
        pad = hf_config.pad_token_id if hf_config.pad_token_id is not None else hf_config.eos_token_id
        self.pad_id = (pad[0] if isinstance(pad, list) else pad) or 0
        optimizer = torch.optim.AdamW(
            policy.parameters(),
            lr=self.opts.lr,
            betas=tuple(self.opts.betas),
            weight_decay=self.opts.weight_decay,
            fused=spec.gpu or None,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lr_lambda(
                self.opts.lr_schedule, self.opts.warmup_steps, spec.total_steps, self.opts.min_lr_ratio
            ),
        )
        bucket = int(self.opts.zero_bucket_elements)
        ds_config = {
            "train_micro_batch_size_per_gpu": 1,
            "gradient_accumulation_steps": 1,
            "gradient_clipping": self.opts.grad_clip,
            "zero_optimization": {
                "stage": self.opts.zero_stage,
                "reduce_bucket_size": bucket,
                "allgather_bucket_size": bucket,
                "stage3_prefetch_bucket_size": bucket,
                "stage3_param_persistence_threshold": min(bucket, 100_000),
            },
            "bf16": {"enabled": spec.dtype == "bfloat16"},
            "fp16": {"enabled": False},
            "steps_per_print": 1 << 30,
            "zero_allow_untested_optimizer": True,
            "wall_clock_breakdown": False,
        }
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=policy, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config
        )
        self.ref = None
        if self.algo.kl_coef > 0:
            self.ref = self._load_model().to(self.device).eval().requires_grad_(False)

    def _load_model(self) -> PolicyModel:
        from transformers import AutoModelForCausalLM

        kwargs = {"dtype": getattr(torch, self.spec.dtype), "trust_remote_code": self.spec.trust_remote_code}
        if self.opts.attn_implementation:
            kwargs["attn_implementation"] = self.opts.attn_implementation
        model = AutoModelForCausalLM.from_pretrained(self.spec.model_path, **kwargs)
        model.config.use_cache = False
        return PolicyModel(model, temperature=self.spec.temperature)

    def ready(self) -> Process:
        """Started: this process's id and log files (for the driver's error messages)."""
        return this_process()

    # ------------------------------------------------------------------ forward

    def micro_batch(self, samples: list[Sample], indices: list[int]) -> MicroBatch:
        """Tensors of one micro-batch on the device; an empty one is a dummy with a zero mask."""
        batch = make_micro_batch(
            [samples[i] for i in indices] or samples[:1],
            self.pad_id,
            packed=self.opts.packing,
            shared_prefix=self.opts.shared_prefix,
        )
        if not indices:  # keeps the ranks' collectives in step; contributes nothing
            batch.mask.zero_()
            batch.loss_counts, batch.rollout_tokens, batch.stale_tokens = [0] * len(batch.loss_counts), 0, 0
        return batch.to(self.device)

    def response_logprobs(
        self, model: torch.nn.Module, batch: MicroBatch, with_entropy: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``[B, T]`` logprobs of the response tokens (and entropies) at the rollout temperature."""
        logprobs, entropy = model(
            input_ids=batch.input_ids,
            positions=batch.positions,
            targets=batch.targets,
            position_ids=batch.position_ids,
            with_entropy=with_entropy,
            entropy_grad=self.algo.entropy_coef > 0,
            attention_mask=batch.attention_mask,
        )
        return batch.to_rows(logprobs), (batch.to_rows(entropy) if entropy is not None else None)

    @torch.no_grad()
    def compute_logprobs(
        self, samples: list[Sample], micro_batches: list[list[int]], which: str
    ) -> dict[int, list]:
        """Response-token logprobs under ``which`` (``policy`` or ``ref``), by sample index."""
        model = self.engine if which == "policy" else self.ref
        if model is None:
            raise ValueError(
                "compute_logprobs('ref') needs algorithm.kl_coef > 0 (no reference model is loaded)"
            )
        was_training = model.training
        model.eval()
        result: dict[int, list] = {}
        for indices in micro_batches:
            batch = self.micro_batch(samples, indices)
            logprobs = self.response_logprobs(model, batch, with_entropy=False)[0].cpu()
            for row, i in enumerate(indices):
                result[i] = logprobs[row, : batch.lengths[row]].tolist()
        model.train(was_training)
        return result

    # ------------------------------------------------------------------ update

    def train(
        self,
        samples: list[Sample],
        plan: list[list[list[int]]],
        denominators: list[float],
        scales: list[dict[str, float]] | None = None,
    ) -> dict[str, float]:
        """Run every optimizer step of ``plan`` (this rank's micro-batches) and return metrics.
        ``scales``: per step, each data source's D / D_k (rlengine/learner/batching.py:
        ``source_scales``; empty or None with one source)."""
        self.engine.train()
        metrics = Metrics()
        start = time.perf_counter()
        for step_index, micro_batches in enumerate(plan):
            denominator = max(denominators[step_index], 1e-8)
            step_scales = scales[step_index] if scales else {}
            step_loss = torch.zeros((), device=self.device)
            step_total = torch.zeros((), device=self.device)
            finite = torch.ones((), dtype=torch.bool, device=self.device)
            clip = self.step_clip(samples, micro_batches)
            if self.algo.loss == "bapo" and self.algo.bapo_adaptive:
                metrics.add("actor/bapo_low", clip[0])
                metrics.add("actor/bapo_high", clip[1])
                metrics.add("actor/bapo_positive_share", self._bapo_share)  # set by step_clip's search
            for m, indices in enumerate(micro_batches):
                batch = self.micro_batch(samples, indices)
                batch.scale = row_scales(samples, indices, step_scales) if indices else None
                if batch.scale is not None:
                    batch.scale = batch.scale.to(self.device)
                total, policy_loss, share = self._micro_batch_loss(batch, denominator, metrics, clip)
                finite &= torch.isfinite(total.detach())
                total = torch.nan_to_num(total, nan=0.0, posinf=0.0, neginf=0.0)
                self.engine.set_gradient_accumulation_boundary(m == len(micro_batches) - 1)
                self.engine.backward(total * share * self.world_size)  # DeepSpeed averages over ranks
                step_loss = step_loss + policy_loss * share
                step_total = step_total + total.detach() * share
            grad_norm, skipped = self._step(bool(finite))
            metrics.add("learner/skipped_steps", float(skipped))
            if not skipped:
                metrics.add("loss/policy", step_loss)
                metrics.add("loss/total", step_total)  # + KL - entropy bonus (+ NLL of supervised rows)
                metrics.add("grad_norm", grad_norm)
        result = metrics.result()
        result["lr"] = float(self.scheduler.get_last_lr()[0])
        result["time/learner_compute"] = time.perf_counter() - start
        return result

    def _micro_batch_loss(
        self,
        batch: MicroBatch,
        denominator: float,
        metrics: Metrics,
        clip: tuple[float | None, float | None],
    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """The micro-batch's total loss (policy + KL - entropy bonus, + the NLL of supervised rows),
        its policy loss (detached) and its share of the optimizer step's aggregation denominator.
        ``clip``: (low, high).

        Rows of a supervised source (RECAP) are split off: the policy, KL and entropy terms are
        aggregated over the other rows, the NLL over them, and each term is rescaled by its rows'
        share of the micro-batch's denominator (:func:`subset_share`), so the terms add up as if
        aggregated over the whole micro-batch. ``batch.scale`` (the rows' λ_k · D / D_k) multiplies
        each row's per-token loss. Without supervised rows or scales this is the plain loss."""
        algo, L = self.algo, self.spec.max_response_length
        mask, supervised, scale = batch.mask, batch.supervised, batch.scale
        policy_mask, policy_share = mask, 1.0
        if supervised is not None:
            policy_mask = mask * (~supervised).unsqueeze(-1)
            policy_share = subset_share(batch.loss_counts, (~supervised).tolist(), algo.agg)

        def scaled(per_token: torch.Tensor) -> torch.Tensor:
            return per_token if scale is None else per_token * scale.unsqueeze(-1)

        logprobs, entropy = self.response_logprobs(self.engine, batch, with_entropy=True)
        loss, loss_metrics = self.policy_loss(batch, logprobs, batch.advantages, clip, mask=policy_mask)
        loss = loss * policy_share if supervised is not None else loss
        weight = float(sequence_weights(torch.tensor(batch.loss_counts), algo.agg).sum())
        total = loss
        tokens = int(policy_mask.sum().item()) if supervised is not None else sum(batch.loss_counts)
        if self.ref is not None and algo.kl_placement == "loss":
            with torch.no_grad():
                ref_logprobs, _ = self.response_logprobs(self.ref, batch, with_entropy=False)
            per_token_kl = kl_penalty(logprobs, ref_logprobs, algo.kl_kind)
            kl = aggregate_loss(scaled(per_token_kl), policy_mask, algo.agg, L) * policy_share
            total = total + algo.kl_coef * kl
            metrics.add("kl/mean", aggregate_loss(per_token_kl.detach(), policy_mask, algo.agg, L), weight)
        if algo.entropy_coef > 0:
            total = (
                total
                - algo.entropy_coef * aggregate_loss(scaled(entropy), policy_mask, algo.agg, L) * policy_share
            )
        if supervised is not None:  # reference completions: -log π(y_t | ...), aggregated as the policy loss
            nll_mask = mask * supervised.unsqueeze(-1)
            nll_share = subset_share(batch.loss_counts, supervised.tolist(), algo.agg)
            total = total + aggregate_loss(scaled(-logprobs), nll_mask, algo.agg, L) * nll_share
            nll_tokens = int(nll_mask.sum().item())
            metrics.add("loss/nll", aggregate_loss(-logprobs.detach(), nll_mask, "token_mean"), nll_tokens)
        # reported per token, so the figure does not depend on how the batch was cut into micro-batches
        metrics.add("entropy/mean", aggregate_loss(entropy.detach(), policy_mask, "token_mean"), tokens)
        for key in ("clipfrac", "approx_kl", "ratio/mean"):
            metrics.add(f"actor/{key}", loss_metrics[key], tokens)
        if tokens > 0:
            metrics.max("actor/ratio_max", loss_metrics["ratio/max"])
        add_off_policy_metrics(metrics, batch, logprobs.detach(), self.algo)
        return total, loss.detach(), weight / denominator

    def policy_loss(
        self,
        batch: MicroBatch,
        logprobs: torch.Tensor,
        advantages: torch.Tensor,
        clip: tuple[float, float],
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The update's policy loss on one micro-batch, ``advantages`` ``[B]``: the ratio against the
        samples' old logprobs (on-policy ones without use the current, detached), TIS weights against
        vLLM's logprobs for fresh samples (``algorithm.tis_cap``), the decoupled objective's behaviour
        weights for stale ones (``off_policy_correction: decoupled``: their old logprobs are π_prox)
        and the step's ratio bounds ``clip`` (BAPO's adapted ones), over ``mask`` (default: the
        batch's). ``batch.scale`` (RECAP's per-source scales) multiplies each row's loss. The update
        and the per-objective gradients both use it."""
        algo = self.algo
        old = torch.where(batch.has_old.unsqueeze(-1), batch.old_logprobs, logprobs.detach())
        token_weights = None
        if algo.tis_cap:  # fresh samples: the vLLM/learner mismatch (π_old_learner / π_vllm)
            token_weights = torch.where(
                batch.has_rollout.unsqueeze(-1), tis_weights(old, batch.rollout_logprobs, algo.tis_cap), 1.0
            )
        if algo.off_policy_correction == "decoupled" and batch.stale_tokens > 0:
            token_weights = torch.where(
                batch.stale.unsqueeze(-1),
                off_policy_weights(batch, algo),
                1.0 if token_weights is None else token_weights,
            )
        if batch.scale is not None:
            rows = batch.scale.unsqueeze(-1).expand_as(logprobs)
            token_weights = rows if token_weights is None else token_weights * rows
        return compute_policy_loss(
            algo.loss,
            logprobs,
            old,
            advantages,
            batch.mask if mask is None else mask,
            algo.agg,
            clip_low=clip[0],
            clip_high=clip[1],
            dual_clip=algo.dual_clip,
            max_response_length=self.spec.max_response_length,
            token_weights=token_weights,
        )

    def step_clip(self, samples: list[Sample], micro_batches: list[list[int]]) -> tuple[float, float]:
        """The ratio bounds of one optimizer step: BAPO's search over the step's tokens
        (``loss: bapo`` with ``bapo_adaptive``; every rank takes part), else the configured ones."""
        if self.algo.loss == "bapo" and self.algo.bapo_adaptive:
            return self._bapo_bounds(samples, micro_batches)
        return self.algo.clip_low, self.algo.clip_high

    @torch.no_grad()
    def _bapo_bounds(self, samples: list[Sample], micro_batches: list[list[int]]) -> tuple[float, float]:
        """BAPO's ratio bounds for one optimizer step, searched over the step's tokens on every rank
        (:func:`rlengine.algorithms.bapo_adapt_bounds` with the sums all-reduced, so all ranks agree).

        The ratio is π_θ / π_old: samples without old logprobs are on-policy (ratio 1), so the
        extra forward pass runs only when some rank has stale samples in this step. The positive
        share at the chosen bounds is kept in ``self._bapo_share`` (logged as
        ``actor/bapo_positive_share``)."""
        import torch.distributed as dist

        from rlengine.algorithms.losses import BAPO_DUAL_CLIP, bapo_positive_share

        algo = self.algo
        start_low, start_high = algo.clip_low, algo.clip_high  # build_config filled the loss's defaults
        stale = torch.tensor(
            [float(any(samples[i].old_logprobs is not None for mb in micro_batches for i in mb))],
            device=self.device,
        )
        dist.all_reduce(stale, op=dist.ReduceOp.MAX)
        ratios, advantages = [], []
        for indices in micro_batches:
            batch = self.micro_batch(samples, indices)
            valid = batch.mask > 0
            ratio = torch.ones_like(batch.mask)
            if stale.item() > 0:
                logprobs, _ = self.response_logprobs(self.engine, batch, with_entropy=False)
                log_ratio = torch.where(batch.has_old.unsqueeze(-1), logprobs - batch.old_logprobs, 0.0)
                ratio = torch.exp(log_ratio.clamp(-20.0, 20.0))
            ratios.append(ratio[valid])
            advantages.append(batch.advantages.unsqueeze(-1).expand_as(ratio)[valid])
        flat_ratios = torch.cat(ratios).unsqueeze(0)

        def global_sums(stats: torch.Tensor) -> torch.Tensor:
            dist.all_reduce(stats)
            return stats

        flat_advantages, flat_mask = torch.cat(advantages).unsqueeze(0), torch.ones_like(flat_ratios)
        dual_clip = BAPO_DUAL_CLIP if algo.dual_clip is None else algo.dual_clip  # as the loss uses
        low, high = bapo_adapt_bounds(
            flat_ratios,
            flat_advantages,
            flat_mask,
            c_low=start_low,
            c_high=start_high,
            rho0=algo.bapo_target,
            delta_low=algo.bapo_step_low,
            delta_high=algo.bapo_step_high,
            c_low_max=algo.bapo_max_low,
            c_high_max=algo.bapo_max_high,
            share=algo.bapo_share,
            dual_clip=dual_clip,
            reduce_fn=global_sums,
        )
        self._bapo_share = bapo_positive_share(
            flat_ratios,
            flat_advantages,
            flat_mask,
            low,
            high,
            share=algo.bapo_share,
            dual_clip=dual_clip,
            reduce_fn=global_sums,
        )
        return low, high

    def _step(self, finite: bool) -> tuple[float, bool]:
        """Optimizer step on every rank, or on none: when any rank saw a non-finite loss the
        step is skipped (gradients dropped) and reported as skipped."""
        import torch.distributed as dist

        flag = torch.tensor([0.0 if finite else 1.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() > 0:
            self.engine.optimizer.zero_grad()
            return 0.0, True
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        norm = float(norm) if norm is not None else 0.0
        return norm, not math.isfinite(norm)

    # ------------------------------------------------------------------ per-objective gradients

    def objective_gradients(
        self,
        samples: list[Sample],
        micro_batches: list[list[int]],
        denominator: float,
        advantages: list[list[float]],
        layers: int | list[int],
    ) -> dict:
        """Gram matrix of the per-objective policy gradients (rlengine/learner/gradients.py)."""
        from rlengine.learner.gradients import objective_gradients

        return objective_gradients(self, samples, micro_batches, denominator, advantages, layers)

    # ------------------------------------------------------------------ weights

    def weights_checksum(self) -> list[float]:
        """Per-parameter sums (float64) of this rank's copy of the policy (gathered under ZeRO-3):
        the same list on every rank while the ranks are in sync."""
        import deepspeed

        params = list(self.engine.module.model.parameters())
        gather = deepspeed.zero.GatheredParameters(params, enabled=self.opts.zero_stage == 3)
        with gather, torch.no_grad():
            return [float(p.double().sum()) for p in params]

    def export_weights(self, path: str, metadata: dict[str, str] | None = None) -> dict[str, float]:
        """Write the policy as one safetensors file (atomically, rank 0) for the engines to reload,
        streamed from the parameters in buckets of ``learner.sync_bucket_mb``. Under ZeRO-3 the
        buckets are gathered one at a time (every rank takes part), so the full model never exists
        in one process; no copy of a parameter is made. Returns seconds and the bucket count."""
        start = time.perf_counter()
        named = policy_tensors(self.engine.module.model, self.tied)
        buckets = Counted(
            gathered_buckets(named, self.opts.sync_bucket_mb * 2**20, self.opts.zero_stage == 3)
        )
        if self.rank == 0:
            tmp = f"{path}.tmp"
            entries = [(n, full_shape(t), t.dtype) for n, t in named]
            write_safetensors_streamed(entries, buckets, tmp, metadata)
            os.replace(tmp, path)
        else:
            for _ in buckets:  # take part in every gather
                pass
        return {"seconds": time.perf_counter() - start, "buckets": float(buckets.count)}

    def transfer_endpoint(self) -> tuple[str, int]:
        """Address and free port for the NCCL transfer group's store (asked of rank 0)."""
        from rlengine.learner.weight_transfer import endpoint

        return endpoint()

    def open_weight_transfer(
        self,
        backend: str,
        engines: list,
        tensor_parallel_size: int,
        address: str,
        port: int,
        timeout_s: float,
    ) -> bool:
        """Join vLLM's weight transfer with ``engines`` (closing an earlier group first)."""
        from rlengine.learner.weight_transfer import EngineClient, PolicySource, WeightTransfer

        if self.transfer is not None:
            self.transfer.close(engines)
        zero3 = self.opts.zero_stage == 3
        source = PolicySource(self.engine.module.model, self.tied, self.opts.sync_bucket_mb * 2**20, zero3)
        client = EngineClient(engines, tensor_parallel_size, timeout_s)
        self.transfer = WeightTransfer(backend, self.rank, source, client, address, port)
        return True

    def push_weights(self) -> dict[str, float]:
        """Send the current weights to every engine through the open transfer (every rank calls it)."""
        return self.transfer.send()

    def save_checkpoint(self, directory: str, hf_dir: str | None) -> bool:
        """DeepSpeed engine state (optimizer, scheduler, RNG) under ``directory``; rank 0 also
        writes a Hugging Face model directory to ``hf_dir``."""
        client_state = {"torch_rng": torch.get_rng_state()}
        self.engine.save_checkpoint(directory, tag="engine", client_state=client_state)
        if hf_dir is not None:  # the weights as export_weights streams them, plus the HF configs
            if self.rank == 0:
                model = self.engine.module.model
                os.makedirs(hf_dir, exist_ok=True)
                model.config.save_pretrained(hf_dir)
                if model.generation_config is not None:
                    model.generation_config.save_pretrained(hf_dir)
            self.export_weights(os.path.join(hf_dir, "model.safetensors"), metadata={"format": "pt"})
        return True

    def load_checkpoint(self, directory: str) -> bool:
        _, client_state = self.engine.load_checkpoint(directory, tag="engine")
        if client_state and "torch_rng" in client_state:
            torch.set_rng_state(client_state["torch_rng"])
        return True
