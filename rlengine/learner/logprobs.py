"""Per-token logprobs and entropies of a causal LM without full-vocabulary copies.

The policy loss needs, for each response token, ``log softmax(z / T)[token]`` and (for the
entropy metric and bonus) ``H(softmax(z / T))``, where ``z`` are the logits at the position
before the token. A plain implementation runs the LM head over every position of the padded
batch, materialises ``[B, T, V]`` logits, copies the response part to fp32 and builds several
more full-vocabulary tensors for logsumexp and entropy. Here instead:

* the backbone runs once and only the ``N`` positions that predict response tokens go through
  the LM head (prompt and padding positions never do);
* the head, the log-softmax and the entropy run in chunks of tokens, logits in the model's
  dtype and the reductions in fp32, so at most one ``[chunk, V]`` fp32 block is alive;
* backward never needs the logits: the forward already knows the derivative of each output with
  respect to the logits (``onehot - p`` for a logprob, ``-p (log p + H)`` for an entropy), so it
  keeps that, in the model's dtype, and backward only runs the two head matmuls
  (:class:`HeadLogprobs`, like Liger's fused linear cross-entropy but for per-token outputs).

That needs the head weight as a tensor. Under ZeRO-3 the weight is partitioned and gathered only
inside the head module's own call, so there the chunks call the module and are activation-
checkpointed instead (their logits are recomputed in backward: one more head matmul).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

CHUNK_ELEMENTS = {"cuda": 2**27, "cpu": 2**23}
"""Logit elements per chunk (512 MB in fp32 on GPU, 32 MB on CPU where a few such temporaries per
chunk would otherwise dominate the learner's memory): chunk tokens = elements // vocabulary size."""


def _chunk_logprobs(
    hidden: Tensor,
    targets: Tensor,
    head: Callable[[Tensor], Tensor],
    temperature: float,
    softcap: float | None,
    with_entropy: bool,
) -> tuple[Tensor, Tensor]:
    logits = head(hidden)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    logits = logits.float() / temperature
    lse = torch.logsumexp(logits, dim=-1)
    logprobs = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse
    if not with_entropy:
        return logprobs, torch.zeros_like(logprobs)
    # H = -sum p log p = lse - sum p z
    entropy = lse - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return logprobs, entropy


class HeadLogprobs(torch.autograd.Function):
    """``(logprobs [N], entropy [N])`` of ``targets`` under ``softmax(hidden @ weight.T / T)``.

    Forward runs in chunks and saves, per chunk, the derivative of its outputs with respect to the
    logits in ``hidden``'s dtype (the entropy's only when ``entropy_grad``); backward scales them by
    the incoming gradients and runs ``grad @ weight`` and ``grad.T @ hidden``.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, chunk, entropy_grad):  # noqa: ANN001
        logprobs, entropies, d_logprob, d_entropy = [], [], [], []
        for start in range(0, hidden.shape[0], chunk):
            h, t = hidden[start : start + chunk], targets[start : start + chunk]
            z = (h @ weight.t()).float() / temperature
            lse = torch.logsumexp(z, dim=-1, keepdim=True)
            logp = z - lse
            del z
            p = logp.exp()
            entropy = -(p * logp).sum(-1)
            logprobs.append(logp.gather(-1, t.unsqueeze(-1)).squeeze(-1))
            entropies.append(entropy)
            if entropy_grad:  # dH/dz = -p (log p + H)
                d_entropy.append((-p * (logp + entropy.unsqueeze(-1))).to(hidden.dtype))
            del logp
            p.neg_().scatter_add_(-1, t.unsqueeze(-1), torch.ones_like(t, dtype=p.dtype).unsqueeze(-1))
            d_logprob.append(p.to(hidden.dtype))  # d logp_t / dz = onehot(t) - p
            del p
        ctx.save_for_backward(hidden, weight, *d_logprob, *d_entropy)
        ctx.temperature, ctx.chunk, ctx.entropy_grad, ctx.chunks = (
            temperature,
            chunk,
            entropy_grad,
            len(d_logprob),
        )
        entropy = torch.cat(entropies)
        if not entropy_grad:
            ctx.mark_non_differentiable(entropy)
        return torch.cat(logprobs), entropy

    @staticmethod
    def backward(ctx, grad_logprobs, grad_entropy):  # noqa: ANN001
        hidden, weight, *saved = ctx.saved_tensors
        d_logprob, d_entropy = saved[: ctx.chunks], saved[ctx.chunks :]
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        for i, start in enumerate(range(0, hidden.shape[0], ctx.chunk)):
            stop = start + d_logprob[i].shape[0]
            g = d_logprob[i] * (grad_logprobs[start:stop] / ctx.temperature).to(hidden.dtype).unsqueeze(-1)
            if ctx.entropy_grad and grad_entropy is not None:
                g = g + d_entropy[i] * (grad_entropy[start:stop] / ctx.temperature).to(
                    hidden.dtype
                ).unsqueeze(-1)
            if grad_hidden is not None:
                grad_hidden[start:stop] = g @ weight
            if grad_weight is not None:  # the matmul in the model's dtype, accumulated over chunks in fp32
                grad_weight += g.t() @ hidden[start:stop]
        grad_weight = grad_weight.to(weight.dtype) if grad_weight is not None else None
        return grad_hidden, grad_weight, None, None, None, None


def token_logprobs(
    hidden: Tensor,
    targets: Tensor,
    head: Callable[[Tensor], Tensor],
    *,
    temperature: float = 1.0,
    softcap: float | None = None,
    with_entropy: bool = False,
    entropy_grad: bool = False,
    chunk_tokens: int = 1024,
    weight: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """``(logprobs [N], entropy [N] or None)`` of ``targets`` given the final hidden states
    ``hidden [N, H]`` at the positions that predict them. Equal (fp32) to
    ``log_softmax(head(hidden) / T).gather(targets)`` and ``entropy_from_logits(head(hidden) / T)``.

    With ``weight`` (the head's weight; no bias, no softcap) gradients go through
    :class:`HeadLogprobs`; otherwise each chunk calls ``head`` under activation checkpointing.
    ``entropy_grad`` says whether the entropy will be differentiated (an entropy bonus).
    """
    if hidden.shape[0] == 0:
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return empty, (empty if with_entropy else None)
    recompute = torch.is_grad_enabled() and (
        hidden.requires_grad or any(p.requires_grad for p in _params(head))
    )
    if recompute and weight is not None and softcap is None:
        logprobs, entropy = HeadLogprobs.apply(
            hidden, weight, targets, temperature, chunk_tokens, entropy_grad
        )
        return logprobs, (entropy if with_entropy else None)
    parts_lp, parts_ent = [], []
    for start in range(0, hidden.shape[0], chunk_tokens):
        args = (hidden[start : start + chunk_tokens], targets[start : start + chunk_tokens])
        if recompute:
            lp, ent = checkpoint(
                _chunk_logprobs, *args, head, temperature, softcap, with_entropy, use_reentrant=False
            )
        else:
            lp, ent = _chunk_logprobs(*args, head, temperature, softcap, with_entropy)
        parts_lp.append(lp)
        parts_ent.append(ent)
    entropy = torch.cat(parts_ent) if entropy_grad else torch.cat(parts_ent).detach()
    return torch.cat(parts_lp), (entropy if with_entropy else None)


def _params(module: object) -> list[Tensor]:
    return list(module.parameters()) if isinstance(module, nn.Module) else []


class PolicyModel(nn.Module):
    """A Hugging Face causal LM that returns logprobs of given tokens instead of logits.

    This wrapper is the module DeepSpeed trains, so its forward (and ZeRO-3's parameter
    gathering) covers backbone and head together. ``model`` is the Hugging Face model itself
    (``save_pretrained`` and the exported weights use its names).
    """

    def __init__(self, model: nn.Module, temperature: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.temperature = float(temperature)
        self.softcap = getattr(model.config, "final_logit_softcapping", None)
        head = model.get_output_embeddings()
        self.chunk_tokens: int | None = None
        """Tokens per head chunk; None = from :data:`CHUNK_ELEMENTS` for the device."""
        self.fused_head = getattr(head, "bias", None) is None and not self.softcap
        """Differentiate through :class:`HeadLogprobs` (needs the head weight as a tensor: the
        learner turns this off under ZeRO-3, where only the head's own call gathers it)."""

    def compile_layers(self) -> None:
        """``torch.compile`` every decoder layer (dynamic shapes: micro-batch lengths vary)."""
        backbone = getattr(self.model, self.model.base_model_prefix)
        layers = getattr(backbone, "layers", None)
        for layer in layers if isinstance(layers, nn.ModuleList) else [backbone]:
            layer.compile(dynamic=True)

    def forward(
        self,
        input_ids: Tensor,
        positions: Tensor,
        targets: Tensor,
        position_ids: Tensor | None = None,
        with_entropy: bool = False,
        entropy_grad: bool = False,
        attention_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Logprobs (and entropies) of ``targets`` predicted at flat ``positions`` of ``input_ids``.

        Right-padded rows need no attention mask (causal attention never lets a real token see the
        padding after it); packed rows pass ``position_ids`` restarting at 0 per sequence;
        shared-prefix rows pass both and a 4-D boolean ``attention_mask``.
        """
        backbone = getattr(self.model, self.model.base_model_prefix)
        out = backbone(
            input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask, use_cache=False
        )
        hidden = out.last_hidden_state
        hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions)
        head = self.model.get_output_embeddings()
        return token_logprobs(
            hidden,
            targets,
            head,
            temperature=self.temperature,
            softcap=self.softcap,
            with_entropy=with_entropy,
            entropy_grad=entropy_grad,
            chunk_tokens=self.chunk_tokens
            or max(64, CHUNK_ELEMENTS["cuda" if hidden.is_cuda else "cpu"] // head.weight.shape[0]),
            weight=head.weight if self.fused_head else None,
        )
