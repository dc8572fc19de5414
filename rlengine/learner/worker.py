"""One DeepSpeed rank as a Ray actor: computes logprobs, runs policy updates, saves weights.

The driver (``LearnerGroup``) sends every rank the same rollout batch and a plan: for each
optimizer step, this rank's micro-batches (lists of sample indices). Every rank gets the
same number of micro-batches per optimizer step (empty ones are padded with a zero-weight
dummy), so collective operations (ZeRO gradient reduction, ZeRO-3 parameter gathering) line
up across ranks.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import ray
import torch

from rlengine.algorithms import compute_policy_loss, entropy_from_logits, kl_penalty, tis_weights
from rlengine.algorithms.losses import aggregate_loss


def agg_denominator(mask: torch.Tensor, agg: str) -> float:
    """The quantity ``aggregate_loss`` divides by (before the constant L of the _norm variant)."""
    if agg == "token_mean":
        return float(mask.sum())
    if agg == "seq_mean_token_sum_norm":
        return float(mask.shape[0])
    return float((mask.sum(-1) > 0).sum())


def lr_lambda(schedule: str, warmup: int, total: int, min_ratio: float):
    def fn(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return fn


def pad_batch(samples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad prompt+response sequences; response tensors are [B, T_resp]."""
    seqs = [s["prompt_ids"] + s["response_ids"] for s in samples]
    width = max(len(s) for s in seqs)
    resp_width = max(1, max(len(s["response_ids"]) for s in samples))
    batch = len(samples)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    attention = torch.zeros((batch, width), dtype=torch.long)
    # gather index: position whose logits predict response token j
    index = torch.zeros((batch, resp_width), dtype=torch.long)
    mask = torch.zeros((batch, resp_width), dtype=torch.float32)
    resp_ids = torch.zeros((batch, resp_width), dtype=torch.long)
    rollout_lp = torch.zeros((batch, resp_width), dtype=torch.float32)
    old_lp = torch.zeros((batch, resp_width), dtype=torch.float32)
    has_old = all("old_logprobs" in s for s in samples)
    for i, (s, seq) in enumerate(zip(samples, seqs)):
        input_ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention[i, : len(seq)] = 1
        n_prompt, n_resp = len(s["prompt_ids"]), len(s["response_ids"])
        if n_resp:
            index[i, :n_resp] = torch.arange(n_prompt - 1, n_prompt - 1 + n_resp)
            resp_ids[i, :n_resp] = torch.tensor(s["response_ids"], dtype=torch.long)
            mask[i, :n_resp] = 0.0 if s.get("loss_masked") else 1.0
            if s.get("rollout_logprobs"):
                rollout_lp[i, :n_resp] = torch.tensor(s["rollout_logprobs"], dtype=torch.float32)
            if has_old:
                old_lp[i, :n_resp] = torch.tensor(s["old_logprobs"], dtype=torch.float32)
    advantages = torch.tensor([float(s.get("advantage", 0.0)) for s in samples], dtype=torch.float32)
    lengths = torch.tensor([len(s["response_ids"]) for s in samples])
    out = {
        "input_ids": input_ids,
        "attention_mask": attention,
        "index": index,
        "mask": mask,
        "response_ids": resp_ids,
        "rollout_logprobs": rollout_lp,
        "advantages": advantages,
        "lengths": lengths,
    }
    if has_old:
        out["old_logprobs"] = old_lp
    return out


@ray.remote(num_cpus=0)
class LearnerRank:
    """A DeepSpeed engine over the policy (and, when KL is on, a frozen reference model)."""

    def __init__(self, model_path: str, options: dict[str, Any]) -> None:
        threads = options.get("threads")
        if threads:
            torch.set_num_threads(int(threads))
        import deepspeed
        import transformers
        from transformers import AutoModelForCausalLM

        transformers.utils.logging.disable_progress_bar()

        self.options = options
        self.rank = int(os.environ["RANK"])
        self.world_size = int(os.environ["WORLD_SIZE"])
        self.device = torch.device("cuda", 0) if options["gpu"] else torch.device("cpu")
        if options["gpu"]:
            torch.cuda.set_device(0)
        deepspeed.init_distributed(dist_backend="nccl" if options["gpu"] else "gloo")
        torch.manual_seed(options["seed"] + self.rank)
        dtype = getattr(torch, options["dtype"])
        model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=dtype, trust_remote_code=options["trust_remote_code"]
        )
        model.config.use_cache = False
        if options["grad_checkpointing"]:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.tied = bool(getattr(model.config, "tie_word_embeddings", False))
        self.pad_id = model.config.pad_token_id or model.config.eos_token_id or 0
        if isinstance(self.pad_id, list):
            self.pad_id = self.pad_id[0]
        optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=options["lr"],
            betas=tuple(options["betas"]),
            weight_decay=options["weight_decay"],
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lr_lambda(
                options["lr_schedule"],
                options["warmup_steps"],
                options["total_steps"],
                options["min_lr_ratio"],
            ),
        )
        ds_config = {
            "train_micro_batch_size_per_gpu": 1,
            "gradient_accumulation_steps": 1,
            "gradient_clipping": options["grad_clip"],
            "zero_optimization": {"stage": options["zero_stage"]},
            "bf16": {"enabled": options["dtype"] == "bfloat16"},
            "fp16": {"enabled": False},
            "steps_per_print": 1 << 30,
            "zero_allow_untested_optimizer": True,
            "wall_clock_breakdown": False,
        }
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config
        )
        self.ref = None
        if options["kl_coef"] > 0:
            self.ref = AutoModelForCausalLM.from_pretrained(
                model_path, dtype=dtype, trust_remote_code=options["trust_remote_code"]
            ).to(self.device)
            self.ref.eval().requires_grad_(False)

    def ready(self) -> int:
        return self.rank

    # ------------------------------------------------------------------ forward

    def _token_logprobs(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor], with_entropy: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logprobs [B, T] of the response tokens (and their entropies) at the rollout temperature."""
        input_ids = batch["input_ids"].to(self.device)
        attention = batch["attention_mask"].to(self.device)
        logits = model(input_ids=input_ids, attention_mask=attention).logits
        index = batch["index"].to(self.device)
        gathered = torch.gather(logits, 1, index.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
        gathered = gathered.float() / self.options["temperature"]
        del logits
        logprobs = torch.gather(gathered, -1, batch["response_ids"].to(self.device).unsqueeze(-1)).squeeze(-1)
        logprobs = logprobs - torch.logsumexp(gathered, dim=-1)
        entropy = entropy_from_logits(gathered) if with_entropy else None
        return logprobs, entropy

    @torch.no_grad()
    def compute_logprobs(
        self, samples: list[dict], micro_batches: list[list[int]], which: str
    ) -> dict[int, list]:
        """Logprobs of the response tokens under ``which`` (``policy`` or ``ref``), by sample index."""
        model = self.engine.module if which == "policy" else self.ref
        was_training = model.training
        model.eval()
        result: dict[int, list] = {}
        for indices in micro_batches:
            part = [samples[i] for i in indices] if indices else [samples[0]]
            batch = pad_batch(part, self.pad_id)
            logprobs, _ = self._token_logprobs(model, batch, with_entropy=False)
            for row, i in enumerate(indices):
                result[i] = logprobs[row, : int(batch["lengths"][row])].cpu().tolist()
        model.train(was_training)
        return result

    # ------------------------------------------------------------------ update

    def train(
        self, samples: list[dict], plan: list[list[list[int]]], denominators: list[float]
    ) -> dict[str, float]:
        """Run every optimizer step of ``plan`` (this rank's micro-batches) and return metrics."""
        opts = self.options
        self.engine.train()
        sums: dict[str, float] = {}
        weights: dict[str, float] = {}

        def add(key: str, value: float, weight: float = 1.0) -> None:
            sums[key] = sums.get(key, 0.0) + value * weight
            weights[key] = weights.get(key, 0.0) + weight

        start = time.perf_counter()
        for step_index, micro_batches in enumerate(plan):
            denominator = max(denominators[step_index], 1e-8)
            step_loss = 0.0
            finite = True
            for m, indices in enumerate(micro_batches):
                part = [samples[i] for i in indices] if indices else [samples[0]]
                batch = pad_batch(part, self.pad_id)
                mask = batch["mask"].to(self.device)
                if not indices:
                    mask = torch.zeros_like(mask)  # dummy micro-batch keeps collectives in step
                logprobs, entropy = self._token_logprobs(self.engine, batch, with_entropy=True)
                old = batch["old_logprobs"].to(self.device) if "old_logprobs" in batch else logprobs.detach()
                rollout_lp = batch["rollout_logprobs"].to(self.device)
                token_weights = None
                if opts["tis_cap"] is not None:
                    token_weights = tis_weights(old, rollout_lp, opts["tis_cap"])
                loss, metrics = compute_policy_loss(
                    opts["loss"],
                    logprobs,
                    old,
                    batch["advantages"].to(self.device),
                    mask,
                    opts["agg"],
                    clip_low=opts["clip_low"],
                    clip_high=opts["clip_high"],
                    dual_clip=opts["dual_clip"],
                    max_response_length=opts["max_response_length"],
                    token_weights=token_weights,
                )
                total = loss
                if self.ref is not None and opts["kl_placement"] == "loss":
                    with torch.no_grad():
                        ref_lp, _ = self._token_logprobs(self.ref, batch, with_entropy=False)
                    kl = kl_penalty(logprobs, ref_lp, opts["kl_kind"])
                    kl_loss = aggregate_loss(kl, mask, opts["agg"], opts["max_response_length"])
                    total = total + opts["kl_coef"] * kl_loss
                    add("kl/mean", float(kl_loss.detach()), agg_denominator(mask, opts["agg"]))
                ent = aggregate_loss(entropy, mask, opts["agg"], opts["max_response_length"])
                if opts["entropy_coef"] > 0:
                    total = total - opts["entropy_coef"] * ent
                share = agg_denominator(mask, opts["agg"]) / denominator
                if not torch.isfinite(total.detach()):
                    finite = False
                    total = torch.nan_to_num(total, nan=0.0, posinf=0.0, neginf=0.0) * 0.0
                scaled = total * share * self.world_size  # DeepSpeed averages gradients over ranks
                self.engine.set_gradient_accumulation_boundary(m == len(micro_batches) - 1)
                self.engine.backward(scaled)
                step_loss += float(loss.detach()) * share
                tokens = float(mask.sum())
                if tokens > 0:
                    add("entropy/mean", float(ent.detach()), tokens)
                    for key in ("clipfrac", "approx_kl", "ratio/mean"):
                        if key in metrics:
                            add(f"actor/{key}", float(metrics[key]), tokens)
                    if "ratio/max" in metrics:
                        sums["actor/ratio_max"] = max(
                            sums.get("actor/ratio_max", 0.0), float(metrics["ratio/max"])
                        )
                        weights["actor/ratio_max"] = 1.0
                    valid = mask > 0
                    has_rollout = rollout_lp.abs().sum() > 0
                    if has_rollout:
                        gap = (logprobs.detach() - rollout_lp).abs()[valid]
                        add("rollout/logprob_diff_mean", float(gap.mean()), tokens)
                        sums["rollout/logprob_diff_max"] = max(
                            sums.get("rollout/logprob_diff_max", 0.0), float(gap.max())
                        )
                        weights["rollout/logprob_diff_max"] = 1.0
            grad_norm, skipped = self._step(finite)
            add("learner/skipped_steps", float(skipped))
            if not skipped:
                add("loss/policy", step_loss)
                add("grad_norm", grad_norm)
        result = {k: sums[k] / weights[k] if weights[k] else 0.0 for k in sums}
        result["lr"] = float(self.scheduler.get_last_lr()[0])
        result["time/learner_compute"] = time.perf_counter() - start
        result["_weights"] = weights
        return result

    def _step(self, finite: bool) -> tuple[float, bool]:
        """Optimizer step on every rank, or on none: when any rank saw a non-finite loss the
        step is skipped (gradients are dropped) and reported as skipped."""
        import torch.distributed as dist

        flag = torch.tensor([0.0 if finite else 1.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() > 0:
            self.engine.optimizer.zero_grad()
            return 0.0, True
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        norm = float(norm) if norm is not None else 0.0
        if not math.isfinite(norm):
            return norm, True
        return norm, False

    # ------------------------------------------------------------------ weights

    def _full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """HF-named full state dict on rank 0 (collective under ZeRO-3); None elsewhere."""
        import deepspeed

        module = self.engine.module
        params = list(module.parameters())
        if self.options["zero_stage"] == 3:
            ctx = deepspeed.zero.GatheredParameters(params, modifier_rank=None)
        else:
            ctx = torch.no_grad()
        with ctx:
            if self.rank != 0:
                return None
            state = {}
            for name, tensor in module.state_dict().items():
                if self.tied and name == "lm_head.weight":
                    continue
                # clone: ZeRO keeps parameters as views into one flat buffer
                state[name] = tensor.detach().to("cpu").contiguous().clone()
            return state

    def export_weights(self, path: str) -> float:
        """Write the policy as one safetensors file (atomically) for the engines to reload."""
        from safetensors.torch import save_file

        start = time.perf_counter()
        state = self._full_state_dict()
        if state is not None:
            tmp = f"{path}.tmp"
            save_file(state, tmp)
            os.replace(tmp, path)
        return time.perf_counter() - start

    def save_checkpoint(self, directory: str, hf_dir: str | None) -> bool:
        """DeepSpeed engine state (optimizer, scheduler, RNG) under ``directory``; rank 0 also
        writes a Hugging Face model directory to ``hf_dir``."""
        client_state = {"torch_rng": torch.get_rng_state()}
        self.engine.save_checkpoint(directory, tag="engine", client_state=client_state)
        state = self._full_state_dict()
        if state is not None and hf_dir is not None:
            self.engine.module.save_pretrained(hf_dir, state_dict=state, safe_serialization=True)
        return True

    def load_checkpoint(self, directory: str) -> bool:
        _, client_state = self.engine.load_checkpoint(directory, tag="engine")
        if client_state and "torch_rng" in client_state:
            torch.set_rng_state(client_state["torch_rng"])
        return True

    def parameter_checksum(self) -> float:
        state = self._full_state_dict()
        return float(sum(t.double().sum() for t in state.values())) if state is not None else 0.0
