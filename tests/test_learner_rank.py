"""The learner's computation without Ray: response-only chunked logprobs against the plain
full-logits implementation, and a LearnerRank driven in this process (a DeepSpeed world of one)."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
import torch

from rlengine.algorithms import entropy_from_logits
from rlengine.learner.batching import make_micro_batch, pack_micro_batches
from rlengine.learner.logprobs import PolicyModel
from rlengine.samples import Sample


def random_samples(seed: int, count: int = 6) -> list[Sample]:
    """Groups of 3, 2, 1 ... responses sharing a prompt (sample 2 has an empty response)."""
    rng = random.Random(seed)
    prompts = [[rng.randint(5, 40000) for _ in range(rng.randint(1, 9))] for _ in range(count)]
    group_of = [0, 0, 0, 1, 1, 2] + list(range(3, count))
    return [
        Sample(
            prompt_ids=prompts[group_of[i]],
            response_ids=[] if i == 2 else [rng.randint(5, 40000) for _ in range(rng.randint(1, 14))],
            advantage=rng.uniform(-1, 1),
        )
        for i in range(count)
    ]


def full_logits_reference(
    model, samples: list[Sample], temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain implementation: pad with an attention mask, run the LM head over every position,
    gather the response positions, log-softmax and entropy over the full vocabulary."""
    width = max(len(s.prompt_ids) + len(s.response_ids) for s in samples)
    ids = torch.zeros((len(samples), width), dtype=torch.long)
    attention = torch.zeros_like(ids)
    for i, s in enumerate(samples):
        seq = s.prompt_ids + s.response_ids
        ids[i, : len(seq)] = torch.tensor(seq)
        attention[i, : len(seq)] = 1
    logits = model(input_ids=ids, attention_mask=attention).logits.float() / temperature
    lps, ents = [], []
    for i, s in enumerate(samples):
        start, n = len(s.prompt_ids) - 1, len(s.response_ids)
        z = logits[i, start : start + n]
        lps.append(
            torch.log_softmax(z, -1).gather(-1, torch.tensor(s.response_ids).unsqueeze(-1)).squeeze(-1)
        )
        ents.append(entropy_from_logits(z))
    return torch.cat(lps), torch.cat(ents)


@pytest.mark.parametrize("fused_head", [True, False], ids=["fused-head", "checkpointed-head"])
@pytest.mark.parametrize("layout", ["padded", "packed", "shared_prefix"])
def test_chunked_logprobs_equal_full_logits_in_fp32(tiny_model_dir, layout: str, fused_head: bool) -> None:
    """Values equal the full-vocabulary computation to 1e-5 and gradients to 1e-5 of their scale (fp32), with chunks of 3
    tokens (so chunking and the recomputation in backward are exercised) and temperature 0.7."""
    from transformers import AutoModelForCausalLM

    samples = random_samples(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    policy = PolicyModel(model, temperature=0.7)
    policy.chunk_tokens, policy.fused_head = 3, fused_head
    weights = torch.randn(
        sum(len(s.response_ids) for s in samples), generator=torch.Generator().manual_seed(1)
    )

    ref_lp, ref_ent = full_logits_reference(model, samples, 0.7)
    (ref_lp * weights).sum().add(ref_ent.sum()).backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    batch = make_micro_batch(
        samples, pad_id=0, packed=layout == "packed", shared_prefix=layout == "shared_prefix"
    )
    if layout == "shared_prefix":
        assert batch.input_ids.shape[0] == 3  # one row per distinct prompt
    lp, ent = policy(
        batch.input_ids,
        batch.positions,
        batch.targets,
        batch.position_ids,
        with_entropy=True,
        entropy_grad=True,
        attention_mask=batch.attention_mask,
    )
    (lp * weights).sum().add(ent.sum()).backward()
    assert lp.shape == ref_lp.shape and torch.allclose(lp, ref_lp, atol=1e-5)
    assert torch.allclose(ent, ref_ent, atol=1e-5)
    for name, param in model.named_parameters():  # fp32 summation order: 1e-5 of the gradient's scale
        scale = ref_grads[name].abs().max()
        assert (param.grad - ref_grads[name]).abs().max() <= 1e-5 * scale + 1e-7, name
    # without an entropy bonus the entropy carries no gradient (a metric only)
    lp2, ent2 = policy(
        batch.input_ids,
        batch.positions,
        batch.targets,
        batch.position_ids,
        with_entropy=True,
        attention_mask=batch.attention_mask,
    )
    assert lp2.requires_grad and not ent2.requires_grad and torch.allclose(ent2, ref_ent, atol=1e-5)
    # [N] -> [B, T] puts every token at its sample's row
    rows = batch.to_rows(lp.detach())
    assert torch.equal(rows[2], torch.zeros_like(rows[2]))  # sample 2 has an empty response
    assert torch.allclose(rows[0, : batch.lengths[0]], ref_lp[: batch.lengths[0]], atol=1e-5)


def test_packed_budget_counts_real_tokens() -> None:
    lengths = [5, 30, 7, 12, 40, 3]
    padded = pack_micro_batches(list(range(6)), lengths, 40)
    packed = pack_micro_batches(list(range(6)), lengths, 40, packed=True)
    assert all(len(b) == 1 or sum(lengths[i] for i in b) <= 40 for b in packed)
    assert len(packed) < len(padded)  # no padding: more sequences per micro-batch


def test_shared_prefix_plan_keeps_groups_together_within_the_budget() -> None:
    """Shared-prefix micro-batches hold whole groups: every response once, each group in as few
    micro-batches as the budget allows, and the built layout (rows x longest row) within budget."""
    from rlengine.learner.batching import plan_updates, planning_lengths, prompt_groups

    rng = random.Random(0)
    samples = []
    for _ in range(8):
        prompt = [rng.randrange(10, 1000) for _ in range(rng.randrange(20, 60))]
        samples += [
            Sample(prompt, [rng.randrange(10, 1000) for _ in range(rng.randrange(5, 64))]) for _ in range(8)
        ]
    groups = prompt_groups(samples)
    assert groups == [i // 8 for i in range(64)]
    kwargs = {"ranks": 1, "mini_batch_size": None, "ppo_epochs": 1, "token_budget": 1024, "seed": 0}
    lengths = planning_lengths(samples, groups)
    micro = plan_updates(lengths, groups=groups, **kwargs)[0][0]
    scattered = plan_updates(lengths, **kwargs)[0][0]  # length order alone: groups spread out
    assert sorted(i for b in micro for i in b) == list(range(64))

    def layout_tokens(batch: list[int]) -> int:
        return make_micro_batch([samples[i] for i in batch], 0, shared_prefix=True).input_ids.numel()

    assert all(layout_tokens(b) <= 1024 for b in micro)
    split = sum(len({groups[i] for i in b}) for b in micro) - 8  # extra rows from groups cut in two
    assert split <= len(micro) - 1  # only a group at a micro-batch boundary is cut
    assert sum(map(layout_tokens, micro)) < 0.75 * sum(map(layout_tokens, scattered))


@pytest.fixture(scope="module")
def in_process_rank_spec(tiny_model_dir):
    from rlengine.learner.spec import single_process_world
    from tests.conftest import learner_spec

    with single_process_world():
        yield lambda *overrides: learner_spec(
            tiny_model_dir, "learner.grad_clip=0.0", "learner.lr=0.0", *overrides
        )


@pytest.mark.slow
def test_learner_rank_without_ray(tiny_model_dir, in_process_rank_spec) -> None:
    """A LearnerRank built in this process: its logprobs match the plain implementation, and packed
    rows or shared-prefix rows give the same loss and gradient as padded rows."""
    from transformers import AutoModelForCausalLM

    from rlengine.learner.batching import plan_updates, step_denominators
    from rlengine.learner.rank import LearnerRank

    samples = [s for s in random_samples(1) if s.response_ids]
    reference, _ = full_logits_reference(AutoModelForCausalLM.from_pretrained(tiny_model_dir), samples, 1.0)
    results = {}
    for layout in ("padded", "packed", "shared_prefix"):
        packed, shared = layout == "packed", layout == "shared_prefix"
        spec = in_process_rank_spec(
            f"learner.packing={str(packed).lower()}",
            f"learner.shared_prefix={str(shared).lower()}",
            "learner.micro_batch_tokens=40",
        )
        rank = LearnerRank(spec)
        plan = plan_updates(
            [s.length for s in samples],
            ranks=1,
            mini_batch_size=None,
            ppo_epochs=1,
            token_budget=40,
            seed=0,
            packed=packed,
        )
        logprobs = rank.compute_logprobs(samples, plan[0][0], "policy")
        flat = torch.tensor([x for i in range(len(samples)) for x in logprobs[i]])
        assert torch.allclose(flat, reference, atol=1e-5)
        results[layout] = rank.train(samples, plan[0], step_denominators(samples, plan, "token_mean"))
        assert len(plan[0][0]) > 1  # several micro-batches: accumulation is exercised
    for layout in ("packed", "shared_prefix"):
        for key in ("grad_norm", "loss/policy", "entropy/mean"):
            assert results[layout][key] == pytest.approx(results["padded"][key], rel=1e-5), (layout, key)
    assert results["padded"]["grad_norm"] > 0


@pytest.mark.slow
def test_compiled_layers_give_the_same_logprobs(tiny_model_dir, in_process_rank_spec) -> None:
    """learner.compile: torch.compile'd decoder layers compute the same logprobs and gradients."""
    from rlengine.learner.batching import plan_updates, step_denominators
    from rlengine.learner.rank import LearnerRank

    samples = [s for s in random_samples(2) if s.response_ids]
    plan = plan_updates(
        [s.length for s in samples],
        ranks=1,
        mini_batch_size=None,
        ppo_epochs=1,
        token_budget=40,
        seed=0,
    )
    results = {}
    for compiled in (False, True):
        rank = LearnerRank(
            in_process_rank_spec(f"learner.compile={str(compiled).lower()}", "learner.micro_batch_tokens=40")
        )
        logprobs = rank.compute_logprobs(samples, plan[0][0], "policy")
        metrics = rank.train(samples, plan[0], step_denominators(samples, plan, "token_mean"))
        results[compiled] = (
            torch.tensor([x for i in range(len(samples)) for x in logprobs[i]]),
            metrics["grad_norm"],
        )
    assert torch.allclose(results[True][0], results[False][0], atol=1e-5)
    assert results[True][1] == pytest.approx(results[False][1], rel=1e-4) and results[False][1] > 0


@pytest.mark.slow
def test_dummy_micro_batch_changes_nothing(tiny_model_dir, in_process_rank_spec) -> None:
    """An empty micro-batch (padding that keeps ranks' collectives in step) adds no gradient and
    no weight to any metric."""
    from rlengine.learner.batching import step_denominators
    from rlengine.learner.rank import LearnerRank

    samples = [s for s in random_samples(3) if s.response_ids]
    plain = [[[0, 1, 2], [3, 4]]]
    padded = [[[0, 1, 2], [], [3, 4]]]
    results = []
    for plan in (plain, padded):
        rank = LearnerRank(in_process_rank_spec())
        results.append(rank.train(samples, plan, step_denominators(samples, [plan], "token_mean")))
    for key in ("grad_norm", "loss/policy", "entropy/mean", "actor/clipfrac"):
        assert results[1][key] == pytest.approx(results[0][key], rel=1e-6), key
    assert results[0]["entropy/mean"] > 1.0


def test_write_safetensors_streams_views_and_reads_back(tmp_path) -> None:
    """The weight-sync writer stores views into one flat buffer (ZeRO's layout), non-contiguous,
    bf16, scalar and empty tensors so that safetensors itself reads them back unchanged."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from rlengine.learner.export import write_safetensors

    flat = torch.randn(6 * 4 + 5)
    tensors = {
        "a.weight": flat[:24].view(6, 4),  # views sharing one storage: save_file refuses these
        "b.bias": flat[24:],
        "c.transposed": torch.randn(3, 5).t(),
        "d.bf16": torch.randn(7, 3).to(torch.bfloat16),
        "e.scalar": torch.tensor(2.5),
        "f.empty": torch.zeros(0, 4),
        "g.int": torch.arange(9, dtype=torch.int64).view(3, 3),
    }
    path = tmp_path / "w.safetensors"
    write_safetensors(tensors, str(path))
    loaded = load_file(str(path))
    assert loaded.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and loaded[name].shape == tensor.shape, name
        assert torch.equal(loaded[name], tensor), name
    with safe_open(str(path), framework="pt") as f:  # lazy per-tensor reads, as the engines do
        assert torch.equal(f.get_tensor("c.transposed"), tensors["c.transposed"])
    with pytest.raises(TypeError, match="complex"):
        write_safetensors({"z": torch.zeros(2, dtype=torch.complex64)}, str(tmp_path / "z.safetensors"))


@pytest.mark.slow
def test_bapo_bounds_are_searched_per_step_and_logged(tiny_model_dir, in_process_rank_spec) -> None:
    """With ``loss: bapo``, the bounds the learner uses are searched from the step's own ratios
    (stale samples bring old logprobs) and are the ones logged as actor/bapo_low / actor/bapo_high."""
    from rlengine.algorithms import bapo_adapt_bounds
    from rlengine.learner.batching import step_denominators
    from rlengine.learner.rank import LearnerRank

    samples = [s for s in random_samples(4) if s.response_ids]
    for i, sample in enumerate(samples):
        sample.advantage = 1.0 if i % 3 == 0 else -1.0  # negative-dominated: the search must move
    plan = [[[0, 1, 2], [3, 4]]]
    rank = LearnerRank(in_process_rank_spec("algorithm.loss=bapo"))
    current = rank.compute_logprobs(samples, plan[0], "policy")
    shift = [0.5 if i % 2 else -0.3 for i in range(len(samples))]  # log(pi / pi_old) per sample
    for i, sample in enumerate(samples):
        sample.old_logprobs = [lp - shift[i] for lp in current[i]]
    ratios = torch.tensor([[math.exp(shift[i]) for i in range(len(samples)) for _ in current[i]]])
    adv = torch.tensor([[samples[i].advantage for i in range(len(samples)) for _ in current[i]]])
    expected = bapo_adapt_bounds(ratios, adv, torch.ones_like(ratios), c_low_max=0.9, c_high_max=3.0)
    assert expected != (0.6, 1.2)
    metrics = rank.train(samples, plan, step_denominators(samples, [plan], "token_mean"))
    assert (metrics["actor/bapo_low"], metrics["actor/bapo_high"]) == pytest.approx(expected, abs=1e-6)

    fresh = [dataclasses.replace(s, old_logprobs=None) for s in samples]
    metrics = LearnerRank(in_process_rank_spec("algorithm.loss=bapo")).train(
        fresh, plan, step_denominators(fresh, [plan], "token_mean")
    )
    on_policy = bapo_adapt_bounds(torch.ones_like(ratios), adv, torch.ones_like(ratios))
    assert (metrics["actor/bapo_low"], metrics["actor/bapo_high"]) == pytest.approx(on_policy)


@pytest.mark.slow
@pytest.mark.parametrize("zero_stage", [2, 3])
def test_the_weight_source_for_vllm_transfer_streams_what_the_file_sync_writes(
    tiny_model_dir, in_process_rank_spec, tmp_path, zero_stage: int
) -> None:
    """``rollout.weight_sync: nccl | ipc`` hands vLLM a PolicySource. Its metadata must agree with
    its stream element for element (vLLM sizes the receive buffers from it), and the stream must be
    the same tensors the file sync writes, gathered bucket by bucket under ZeRO-3."""
    from safetensors.torch import load_file

    from rlengine.learner.rank import LearnerRank
    from rlengine.learner.weight_transfer import PolicySource

    rank = LearnerRank(in_process_rank_spec(f"learner.zero_stage={zero_stage}"))
    rank.export_weights(str(tmp_path / "policy.safetensors"))
    exported = load_file(str(tmp_path / "policy.safetensors"))
    model = rank.engine.module.model
    source = PolicySource(model, rank.tied, bucket_bytes=2**16, zero3=zero_stage == 3)
    if zero_stage == 3:  # partitioned: the local parameters are empty until gathered
        assert all(p.numel() == 0 for p in model.parameters())
    meta = source.metadata()
    assert [m.name for m in meta] == list(exported) and "lm_head.weight" not in exported
    streamed = [(name, tensor.clone()) for name, tensor in source]
    assert [name for name, _ in streamed] == [m.name for m in meta]
    for m, (name, tensor) in zip(meta, streamed):
        assert tuple(tensor.shape) == m.shape and tensor.dtype == m.dtype, name
        assert torch.equal(tensor, exported[name]), name
    assert source.bytes == sum(t.numel() * t.element_size() for t in exported.values())
    # vLLM's own per-layer grouping of the stream checks the order against the metadata
    grouped = [name for names, _ in source.iter_groups() for name in names]
    assert grouped == [m.name for m in meta]


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [["algorithm.tis_cap=1.5"], ["algorithm.loss=bapo"]],
    ids=["tis", "bapo-adaptive"],
)
def test_objective_gradient_is_the_gradient_of_the_update(in_process_rank_spec, overrides) -> None:
    """With one objective whose advantages are the samples' own, the per-objective gradient's
    squared norm (gradient weighting's Gram matrix) equals the squared norm DeepSpeed measures for
    the update itself: the same TIS weights and BAPO's adapted bounds, on stale samples whose
    old logprobs differ from vLLM's and from the current policy's."""
    from rlengine.learner.batching import step_denominators
    from rlengine.learner.rank import LearnerRank

    samples = [s for s in random_samples(5) if s.response_ids]
    plan = [[[0, 1, 2], [3, 4]]]
    rank = LearnerRank(in_process_rank_spec(*overrides))
    current = rank.compute_logprobs(samples, plan[0], "policy")
    for i, sample in enumerate(samples):
        sample.advantage = 1.0 if i % 3 == 0 else -1.0  # negative-dominated: BAPO's search moves
        sample.old_logprobs = [lp - (0.4 if i % 2 else -0.3) for lp in current[i]]
        sample.rollout_logprobs = [lp + 0.6 for lp in sample.old_logprobs]  # TIS weights capped or not
    denominators = step_denominators(samples, [plan], "token_mean")
    micro = [i for step in plan for i in step]
    gram = rank.objective_gradients(samples, micro, denominators[0], [[s.advantage for s in samples]], 0)[
        "gram"
    ]
    metrics = rank.train(samples, plan, denominators)
    assert gram[0][0] == pytest.approx(metrics["grad_norm"] ** 2, rel=1e-4) and gram[0][0] > 0
    if "algorithm.loss=bapo" in overrides:
        assert (metrics["actor/bapo_low"], metrics["actor/bapo_high"]) != (0.6, 1.2)  # the bounds moved


def test_off_policy_weights_are_the_truncated_proximal_over_behaviour_ratio() -> None:
    """The decoupled objective's behaviour weight min(π_prox / π_behaviour, C) on stale rows; 1 on
    fresh rows and on rows without behaviour logprobs."""
    from types import SimpleNamespace

    from rlengine.learner.off_policy import off_policy_weights

    base = Sample(prompt_ids=[1], response_ids=[5, 6], rollout_logprobs=[-1.0, -2.0])
    samples = [
        dataclasses.replace(base, old_logprobs=[-0.5, -1.5], stale=True),  # π_prox / π_b = e^0.5
        dataclasses.replace(base, old_logprobs=[-3.0, 0.0], stale=True),  # e^-2 and e^2 (capped)
        dataclasses.replace(base, old_logprobs=[-0.5, -1.5]),  # fresh: 1
        dataclasses.replace(
            base, rollout_logprobs=[], old_logprobs=[-0.5, -1.5], stale=True
        ),  # no behaviour: 1
    ]
    weights = off_policy_weights(make_micro_batch(samples, 0), SimpleNamespace(off_policy_cap=2.0))
    expected = [[math.exp(0.5)] * 2, [math.exp(-2.0), 2.0], [1.0, 1.0], [1.0, 1.0]]
    assert torch.allclose(weights, torch.tensor(expected))


@pytest.mark.slow
def test_decoupled_correction_weights_stale_tokens_and_behaviour_as_old_clips_them(
    in_process_rank_spec,
) -> None:
    """A stale sample whose behaviour logprobs are log π − 0.5 (π_prox / π_behaviour = e^0.5):
    decoupled trains at ratio 1 with weight min(e^0.5, C); behaviour-as-old sees ratio e^0.5 and
    clips it, and TIS against the same behaviour logprobs adds a weight of exactly 1 (no correction)."""
    from rlengine.learner.batching import step_denominators
    from rlengine.learner.rank import LearnerRank

    samples = [s for s in random_samples(5) if s.response_ids]
    plan = [[list(range(len(samples)))]]
    spec = in_process_rank_spec()
    rank = LearnerRank(spec)
    current = rank.compute_logprobs(samples, plan[0], "policy")
    stale = [
        dataclasses.replace(
            s,
            advantage=1.0,
            stale=True,
            rollout_logprobs=[x - 0.5 for x in current[i]],
            old_logprobs=current[i],
        )
        for i, s in enumerate(samples)
    ]
    denominators = step_denominators(stale, [plan], "token_mean")
    decoupled = rank.train(stale, plan, denominators)
    weight = min(math.exp(0.5), spec.algorithm.off_policy_cap)
    assert decoupled["loss/policy"] == pytest.approx(-weight, rel=1e-5)  # -w·r·A with r = 1, A = 1
    assert decoupled["actor/behaviour_weight_mean"] == pytest.approx(weight, rel=1e-5)
    assert decoupled["actor/stale_ratio_deviation"] == pytest.approx(
        math.exp(0.5) - 1, rel=1e-4
    )  # π_θ / π_behaviour - 1

    as_old = [dataclasses.replace(s, old_logprobs=s.rollout_logprobs) for s in stale]
    for tis in (None, 2.0):
        rank.algo = dataclasses.replace(spec.algorithm, off_policy_correction="behaviour_as_old", tis_cap=tis)
        metrics = rank.train(as_old, plan, denominators)
        assert metrics["loss/policy"] == pytest.approx(-1.2, rel=1e-5)  # ratio e^0.5 clipped at 1 + 0.2
        assert metrics["actor/clipfrac"] == pytest.approx(1.0)


@pytest.mark.slow
@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_source_terms_are_aggregated_on_their_own_and_weighted_by_lambda(in_process_rank_spec, agg) -> None:
    """RECAP's loss Σ_k λ_k · L_k: a step over task samples and a supervised source's reference
    completions, mixed within micro-batches, has the loss λ_task · L_task + λ_sup · L_sup, with each
    L_k the step's loss over source k alone (the policy loss; the NLL, checked by hand), under every
    aggregation. λ = 1 on one source is the plain loss, bit for bit."""
    from rlengine.algorithms import aggregate_loss
    from rlengine.learner.batching import source_scales, step_denominators
    from rlengine.learner.rank import LearnerRank

    rank = LearnerRank(in_process_rank_spec(f"algorithm.agg={agg}", "algorithm.kl_coef=0.0"))
    task = [s for s in random_samples(7) if s.response_ids]
    supervised = [
        Sample(s.prompt_ids, s.response_ids[: 2 + i], source="sft", supervised=True)
        for i, s in enumerate(random_samples(8, count=4))
        if s.response_ids
    ]

    def step_loss(samples: list[Sample], micro_batches: list[list[int]]) -> float:
        plan = [[micro_batches]]  # one rank, one optimizer step
        denominators = step_denominators(samples, plan, agg)
        return rank.train(samples, plan[0], denominators, source_scales(samples, plan, agg))["loss/total"]

    def halves(count: int) -> list[list[int]]:
        return [list(range(0, count, 2)), list(range(1, count, 2))]

    plain_plan = [[halves(len(task))]]
    plain = rank.train(task, plain_plan[0], step_denominators(task, plain_plan, agg))["loss/total"]
    task_loss = step_loss(task, halves(len(task)))
    assert task_loss == plain and plain != 0.0  # one source, λ = 1: exactly the plain loss
    logprobs = rank.compute_logprobs(supervised, [list(range(len(supervised)))], "policy")
    width = max(len(s.response_ids) for s in supervised)
    nll = torch.zeros(len(supervised), width)
    mask = torch.zeros(len(supervised), width)
    for i, s in enumerate(supervised):
        nll[i, : len(s.response_ids)] = -torch.tensor(logprobs[i])
        mask[i, : len(s.response_ids)] = 1.0
    sft_loss = float(aggregate_loss(nll, mask, agg, rank.spec.max_response_length))
    assert step_loss(supervised, halves(len(supervised))) == pytest.approx(sft_loss, rel=1e-5)
    lambdas = {"task": 0.7, "sft": 1.3}
    mixed = [dataclasses.replace(s, source_weight=lambdas[s.source]) for s in task + supervised]
    combined = step_loss(mixed, halves(len(mixed)))  # each micro-batch holds both sources
    assert combined == pytest.approx(0.7 * task_loss + 1.3 * sft_loss, rel=1e-5)
    ones = [dataclasses.replace(s, source_weight=1.0) for s in mixed]
    assert step_loss(ones, halves(len(ones))) == pytest.approx(task_loss + sft_loss, rel=1e-5)
