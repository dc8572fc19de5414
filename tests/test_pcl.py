"""PCL curriculum: selection rule, metrics, the value model's fit, state round-trips, config
errors and placements. On the real stack (the value model in its own Ray actor): test_e2e.py.
Whether PCL picks prompts nearer τ than ``uniform`` is a research claim: the last column of
benchmarks/curriculum_efficiency.py's table."""

from __future__ import annotations

import io
import math
import statistics
import time

import pytest
import torch

from rlengine.config import ConfigError, load_config
from rlengine.stages import Curriculum, StageContext, build_stage
from rlengine.stages.pcl import (
    PCLCurriculum,
    Selection,
    explained_variance,
    select_nearest,
    take_selections,
    within_step_explained_variance,
)
from rlengine.stages.value_model import (
    ValueModel,
    ValueModelConfig,
    ValueModelHandle,
    ValueModelSpec,
    build_value_model,
)

# --------------------------------------------------------------------------- selection rule


def test_select_nearest_returns_the_b_nearest_tau_in_candidate_order() -> None:
    predictions = [0.9, 0.45, 0.1, 0.62, 0.5, 0.3, 0.55]
    # distances to 0.5: .4 .05 .4 .12 0 .2 .05 -> the three nearest are 4, 1, 6
    assert select_nearest(predictions, 3, 0.5) == [1, 4, 6]
    assert select_nearest(predictions, 1, 0.5) == [4]
    assert select_nearest(predictions, 7, 0.5) == list(range(7))
    assert select_nearest(predictions, 2, 0.1) == [2, 5]


def test_select_nearest_breaks_ties_by_candidate_order() -> None:
    # 0.4 and 0.6 are equally far from 0.5; so are the three 0.0s from 0.5 (after 0.4 / 0.6)
    assert select_nearest([0.6, 0.0, 0.4, 0.0, 0.0], 1, 0.5) == [0]
    assert select_nearest([0.6, 0.0, 0.4, 0.0, 0.0], 3, 0.5) == [0, 1, 2]
    assert select_nearest([0.5] * 6, 4, 0.5) == [0, 1, 2, 3]


def test_explained_variance_by_hand() -> None:
    realised = [0.0, 0.5, 1.0, 0.5]  # variance 0.125
    assert explained_variance(realised, realised) == pytest.approx(1.0)
    assert explained_variance([0.5] * 4, realised) == pytest.approx(0.0)
    # residuals .1 .1 -.1 -.1: variance 0.01 -> 1 - 0.01 / 0.125 = 0.92
    assert explained_variance([-0.1, 0.4, 1.1, 0.6], realised) == pytest.approx(0.92)
    assert math.isnan(explained_variance([0.2, 0.3], [1.0, 1.0]))


# --------------------------------------------------------------------------- the stage on a scripted model


class ScriptedModel(ValueModelHandle):
    """Predicts a fixed pass rate per prompt id; records fits. Pure-logic stand-in for the value
    model (the real one is exercised below and in the real-stack run of test_e2e.py)."""

    def __init__(self, rates: dict[str, float], delay_s: float = 0.0) -> None:
        self.rates, self.fits, self.scored, self.delay_s = rates, [], [], delay_s
        super().__init__(self.call, "scripted")

    def call(self, method: str, *args):
        time.sleep(self.delay_s if method in ("predict", "fit") else 0.0)
        if method == "predict":
            self.scored.append([p[0] for p in args[0]])
            return [self.rates[p[0]] for p in args[0]]
        if method == "fit":
            self.fits.append(([p[0] for p in args[0]], list(args[1])))
            return {"loss": 0.0, "seconds": 0.0}
        return {} if method == "state_dict" else None


def rows(n: int) -> list[dict]:
    return [{"id": f"p{i}", "problem": f"problem {i}", "answer": "1", "prompt_ids": [1, i]} for i in range(n)]


def pcl_stage(model: ValueModelHandle, n_rows: int = 40, **options) -> PCLCurriculum:
    cfg = load_config(None, ["curriculum.name=pcl", *[f"curriculum.{k}={v}" for k, v in options.items()]])
    return PCLCurriculum(cfg.curriculum, StageContext(rows(n_rows), 0, ["acc"], [1.0]), model=model)


def test_pcl_select_scores_k_times_b_candidates_and_keeps_the_nearest() -> None:
    rates = {f"p{i}": (i % 10) / 10 for i in range(40)}
    model = ScriptedModel(rates)
    stage = pcl_stage(model, candidates_factor=4)
    chosen = stage.select(5)
    scored = model.scored[-1]
    assert len(scored) == 20 and len(set(scored)) == 20
    expected = [scored[i] for i in select_nearest([rates[s] for s in scored], 5, 0.5)]
    assert [r["id"] for r in chosen] == expected
    assert all(abs(rates[r["id"]] - 0.5) <= 0.2 for r in chosen)


def test_pcl_observe_reports_prediction_quality_then_fits_on_every_rolled_out_prompt() -> None:
    rates = {f"p{i}": 0.5 for i in range(40)}
    model = ScriptedModel(rates, delay_s=0.05)
    stage = pcl_stage(model, candidates_factor=2)
    first = stage.select(2)
    refill = stage.select(1)  # a refill round of the balanced filter
    prompts = first + refill
    realised = [0.25, 0.75, 1.0]
    metrics = stage.observe(prompts, realised)
    assert metrics["curriculum/candidates"] == 6  # 2 x 2 + 2 x 1
    assert metrics["curriculum/value_mse"] == pytest.approx(statistics.fmean([0.0625, 0.0625, 0.25]))
    assert metrics["curriculum/predicted_pass_rate"] == pytest.approx(0.5)
    assert metrics["curriculum/realised_pass_rate"] == pytest.approx(2 / 3)
    assert metrics["curriculum/distance_to_tau"] == pytest.approx(statistics.fmean([0.25, 0.25, 0.5]))
    assert metrics["time/curriculum"] >= 3 * 0.05  # both selections' predictions and the fit
    assert model.fits == [([p["id"] for p in prompts], realised)]
    # the next step starts afresh
    empty = stage.observe([], [])
    assert empty["curriculum/candidates"] == 0 and empty["time/curriculum"] < 0.05


def test_pcl_fit_history_refits_the_last_steps() -> None:
    model = ScriptedModel({f"p{i}": 0.3 + i / 100 for i in range(40)})
    stage = pcl_stage(model, fit_history=2)
    first = stage.select(2)
    stage.observe(first, [0.0, 1.0])
    second = stage.select(2)
    stage.observe(second, [0.5, 0.25])
    third = stage.select(2)
    metrics = stage.observe(third, [0.75, 0.75])
    ids = lambda rows: [r["id"] for r in rows]  # noqa: E731
    assert model.fits[0] == (ids(first), [0.0, 1.0])
    assert model.fits[1] == (ids(first) + ids(second), [0.0, 1.0, 0.5, 0.25])
    assert model.fits[2] == (ids(second) + ids(third), [0.5, 0.25, 0.75, 0.75])  # the oldest step dropped
    assert len(stage.state_dict()["history"]) == 2
    # within-step explained variance over the window's predictions (made before each step's rollouts)
    predicted = {i: model.rates[i] for i in ids(second) + ids(third)}
    window = metrics["curriculum/explained_variance_window"]
    expected = within_step_explained_variance(
        [
            list(zip([predicted[i] for i in ids(second)], [0.5, 0.25])),
            list(zip([predicted[i] for i in ids(third)], [0.75, 0.75])),
        ]
    )
    assert window == pytest.approx(expected)


class DriftingModel(ScriptedModel):
    """A scripted model that moves with every fit (its prediction is the prompt's rate plus 0.1 per
    fit so far), so a prediction made before a fit differs from one made after it. Records what
    each ``predict`` returned."""

    def __init__(self, rates: dict[str, float]) -> None:
        super().__init__(rates)
        self.returned: list[dict[str, float]] = []

    def call(self, method: str, *args):
        if method != "predict":
            return super().call(method, *args)
        self.scored.append([p[0] for p in args[0]])
        values = {p[0]: min(1.0, self.rates[p[0]] + 0.1 * len(self.fits)) for p in args[0]}
        self.returned.append(values)
        return [values[p[0]] for p in args[0]]


@pytest.mark.parametrize("n_rows", [40, 4])  # 4 rows: consecutive steps select the same prompt ids
def test_pcl_one_step_off_observes_each_step_with_its_own_predictions(n_rows) -> None:
    """The one-step-off producer's order: select(t + 1) runs before observe(t). Each observe must
    report on the predictions that chose its own step's prompts (made before its rollouts), never
    the next step's, and keep the next step's for it, through a checkpoint too."""
    model = DriftingModel({f"p{i}": 0.2 + 0.15 * (i % 4) for i in range(n_rows)})
    stage = pcl_stage(model, n_rows=n_rows, candidates_factor=2, fit_history=2)
    realised = {0: [0.25, 1.0], 1: [0.0, 0.5], 2: [0.75, 0.25]}
    selected = {0: stage.select(2), 1: stage.select(2)}  # take(0), then run_ahead(0)
    steps: dict[int, dict] = {0: stage.observe(selected[0], realised[0])}
    selected[2] = stage.select(2)  # run_ahead(1), after the first fit
    buffer = io.BytesIO()
    torch.save(stage.state_dict(), buffer)  # a checkpoint while steps 1 and 2 are pending
    buffer.seek(0)
    restored = pcl_stage(model, n_rows=n_rows, candidates_factor=2, fit_history=2)
    restored.load_state_dict(torch.load(buffer, weights_only=False))
    steps[1] = restored.observe(selected[1], realised[1])
    steps[2] = restored.observe(selected[2], realised[2])  # the last step: nothing runs ahead
    for step, metrics in steps.items():
        predicted = [model.returned[step][r["id"]] for r in selected[step]]
        assert all(math.isfinite(metrics[k]) for k in metrics if k != "curriculum/explained_variance_window")
        assert metrics["curriculum/value_mse"] == pytest.approx(
            statistics.fmean((p - r) ** 2 for p, r in zip(predicted, realised[step]))
        )
        assert metrics["curriculum/predicted_pass_rate"] == pytest.approx(statistics.fmean(predicted))
        assert metrics["curriculum/explained_variance"] == pytest.approx(
            explained_variance(predicted, realised[step])
        )
        assert metrics["curriculum/candidates"] == 4
    # the fits: each step's prompts and pass rates (fit_history 2), and the window's predictions
    ids = {step: [r["id"] for r in rows] for step, rows in selected.items()}
    assert [f[0] for f in model.fits] == [ids[0], ids[0] + ids[1], ids[1] + ids[2]]
    assert [f[1] for f in model.fits] == [realised[0], realised[0] + realised[1], realised[1] + realised[2]]
    assert [[e[2] for e in step] for step in restored.history] == [
        [model.returned[s][i] for i in ids[s]] for s in (1, 2)
    ]
    assert restored.pending == []  # observed predictions are dropped


def test_take_selections_counts_repeats_and_drops_selections_never_rolled_out() -> None:
    def sel(*ids: str) -> Selection:
        return Selection(list(ids), [0.5] * len(ids), 2 * len(ids), 0.0)

    this, refill, ahead = sel("a", "b"), sel("b"), sel("a", "c")
    # this step drew b twice (a refill after an epoch end); the next step's a stays pending
    assert take_selections([this, refill, ahead], ["a", "b", "b"]) == ([this, refill], [ahead])
    # a selection older than the observed one that no observe covers is dropped
    orphan = sel("x")
    assert take_selections([orphan, this, ahead], ["a", "b"]) == ([this], [ahead])
    assert take_selections([this], ["z"]) == ([], [this])


def test_within_step_explained_variance_by_hand() -> None:
    # step 1: realised 0 / 1 around mean 0.5 (SS 0.5); predictions 0.2 / 0.6: residuals -0.2 / 0.4,
    # around their mean 0.1: SS 0.09 + 0.09 = 0.18. Step 2 adds a common shift of +0.3 only:
    # realised 0.3 / 1.3 (SS 0.5), residuals 0.1 / 0.7 (SS 0.18) -> 1 - 0.36 / 1.0 = 0.64
    steps = [[(0.2, 0.0), (0.6, 1.0)], [(0.2, 0.3), (0.6, 1.3)]]
    assert within_step_explained_variance(steps) == pytest.approx(0.64)
    assert within_step_explained_variance(steps[:1]) == pytest.approx(
        explained_variance([0.2, 0.6], [0.0, 1.0])
    )
    assert math.isnan(within_step_explained_variance([[(0.1, 0.5), (0.2, 0.5)], [(0.3, 1.0)]]))


def test_pcl_candidates_are_distinct_and_cover_the_data_once_per_epoch() -> None:
    model = ScriptedModel({f"p{i}": 0.5 for i in range(10)})
    stage = pcl_stage(model, n_rows=10, candidates_factor=4)
    stage.select(2)
    stage.select(2)
    scored = model.scored[0] + model.scored[1]
    assert len(set(model.scored[0])) == 8
    assert len(set(scored[:10])) == 10  # first epoch: every prompt once
    stage.select(5)  # wants 20 candidates of 10 rows: all 10, once each
    assert sorted(model.scored[2]) == sorted(f"p{i}" for i in range(10))


# --------------------------------------------------------------------------- the real value model


def difficulty_prompts(count: int, seed: int = 0) -> tuple[list[tuple[str, str, list[int]]], list[float]]:
    """Prompts whose tokens carry a difficulty d in 0..4 (token 300 + d, repeated among noise
    tokens); the pass rate falls with d."""
    generator = torch.Generator().manual_seed(seed)
    prompts, targets = [], []
    for i in range(count):
        d = i % 5
        noise = torch.randint(1000, 2000, (6,), generator=generator).tolist()
        ids = [300 + d, noise[0], 300 + d, *noise[1:], 300 + d]
        prompts.append((f"q{seed}/{i}", "", ids))
        targets.append(0.9 - 0.2 * d)
    return prompts, targets


def spec_for(model_dir: str, **options) -> ValueModelSpec:
    return ValueModelSpec(ValueModelConfig(**options), model_dir, shares_policy_tokenizer=True, seed=0)


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_value_model_learns_a_difficulty_feature(tiny_model_dir, head) -> None:
    model = ValueModel(spec_for(tiny_model_dir, head=head, batch_size=16))
    train, train_y = difficulty_prompts(60, seed=0)
    test, test_y = difficulty_prompts(30, seed=1)
    before = statistics.fmean((p - y) ** 2 for p, y in zip(model.predict(test), test_y))
    assert before == pytest.approx(
        statistics.fmean((0.5 - y) ** 2 for y in test_y), abs=1e-6
    )  # starts at tau
    for step in range(15):
        chunk = slice((step * 20) % 60, (step * 20) % 60 + 20)
        model.fit(train[chunk], train_y[chunk])
    after = statistics.fmean((p - y) ** 2 for p, y in zip(model.predict(test), test_y))
    assert after < 0.1 * statistics.pvariance(test_y) and after < 0.1 * before, (before, after)


def test_value_model_head_training_caches_features_and_full_training_moves_the_backbone(
    tiny_model_dir,
) -> None:
    prompts, targets = difficulty_prompts(10)
    head_only = ValueModel(spec_for(tiny_model_dir, batch_size=4, cache_size=6))
    frozen = {k: v.clone() for k, v in head_only.backbone.state_dict().items()}
    head_only.fit(prompts, targets)
    assert len(head_only.cache) == 6  # least recently used beyond cache_size dropped
    assert all(torch.equal(v, head_only.backbone.state_dict()[k]) for k, v in frozen.items())
    full = ValueModel(spec_for(tiny_model_dir, train="full", lr=1e-3, batch_size=4))
    before = {k: v.clone() for k, v in full.backbone.state_dict().items()}
    full.fit(prompts, targets)
    assert not full.cache
    assert any(not torch.equal(v, full.backbone.state_dict()[k]) for k, v in before.items())


def test_full_training_keeps_fp32_master_weights_under_a_bf16_model(tiny_model_dir, monkeypatch) -> None:
    """``train: full`` with ``model.dtype: bfloat16``: AdamW at the default lr of 1e-5 moves each
    weight by about 1e-5, far below bf16's spacing, so bf16 weights would never change. The
    trained backbone keeps fp32 weights and computes in bf16 under autocast."""
    weight = torch.tensor([0.02, -0.05, 1.0], dtype=torch.bfloat16)
    assert torch.equal(weight.clone().add_(torch.full((3,), 1e-5)), weight)  # the problem: rounded away
    from rlengine.stages import value_model

    assert value_model.precision("bfloat16", "cuda", True) == (torch.float32, torch.bfloat16)
    assert value_model.precision("bfloat16", "cuda", False) == (torch.bfloat16, torch.bfloat16)
    assert value_model.precision("float16", "cuda", True) == (torch.float32, torch.float16)
    assert value_model.precision("bfloat16", "cpu", True) == (torch.float32, torch.float32)
    prompts, targets = difficulty_prompts(8)

    def fraction_moved(rule: tuple[torch.dtype, torch.dtype]) -> float:
        """One full fit at lr 1e-5 (two epochs of two steps: the head's last layer starts at zero,
        so the backbone gets no gradient before the second step) under a patched precision rule."""
        monkeypatch.setattr(value_model, "precision", lambda *_: rule)
        model = ValueModel(spec_for(tiny_model_dir, train="full", batch_size=4, epochs_per_step=2))
        assert (model.weight_dtype, model.compute_dtype) == rule
        before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
        model.fit(prompts, targets)
        after = model.backbone.state_dict()
        assert all(v.dtype == rule[0] for v in after.values())
        assert max((after[k] - before[k]).abs().max().item() for k in before) < 1e-4  # ~lr per step
        layers = [k for k in before if "embed" not in k]  # most embedding rows are of unused tokens
        moved = sum((after[k] != before[k]).sum().item() for k in layers)
        return moved / sum(before[k].numel() for k in layers)

    # the GPU rule exercised on CPU (bf16 forward under CPU autocast), against bf16 weights
    fp32_master, bf16_weights = (
        fraction_moved((torch.float32, torch.bfloat16)),
        fraction_moved((torch.bfloat16,) * 2),
    )
    assert fp32_master > 0.9 and bf16_weights < 0.25, (
        fp32_master,
        bf16_weights,
    )  # bf16: only near-zero weights


def test_value_model_layers_option_cuts_the_backbone(tiny_model_dir) -> None:
    model = ValueModel(spec_for(tiny_model_dir, layers=1))
    assert len(model.backbone.layers) == 1
    with pytest.raises(ValueError, match="layers: expected 1..2"):
        ValueModel(spec_for(tiny_model_dir, layers=3))


def test_pcl_state_round_trips_through_a_checkpoint(tiny_model_dir) -> None:
    """Weights, optimizer moments, fit counter and the data cursor: a restored stage selects the
    same prompts and fits like the original from then on (equal up to float rounding: the feature
    cache is not checkpointed, and features recomputed in other batches round differently)."""
    data = [
        {"id": p[0], "problem": "x", "answer": "1", "prompt_ids": p[2]} for p in difficulty_prompts(40)[0]
    ]
    targets = {p[0]: y for p, y in zip(*difficulty_prompts(40))}
    cfg = load_config(None, ["curriculum.name=pcl", "curriculum.value_model.placement=driver"]).curriculum
    context = StageContext(data, 3, ["acc"], [1.0], policy_path=tiny_model_dir)

    def run_step(stage) -> tuple[list[str], dict]:
        chosen = stage.select(4)
        return [r["id"] for r in chosen], stage.observe(chosen, [targets[r["id"]] for r in chosen])

    original = build_stage("curriculum", cfg, context)
    assert isinstance(original, Curriculum)
    for _ in range(3):
        run_step(original)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)  # the checkpoint's format
    restored = build_stage("curriculum", cfg, context)
    buffer.seek(0)
    restored.load_state_dict(torch.load(buffer, weights_only=False))
    assert restored.model.state_dict()["optimizer"]["state"]  # Adam moments came along
    for _ in range(2):
        ids_a, metrics_a = run_step(original)
        ids_b, metrics_b = run_step(restored)
        assert ids_a == ids_b
        for key in ("curriculum/fit_loss", "curriculum/predicted_pass_rate"):
            assert metrics_a[key] == pytest.approx(metrics_b[key], rel=1e-5, abs=1e-7)


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "override, message",
    [
        ("curriculum.tau=1.0", "curriculum.tau: expected float in \\(0, 1\\), got 1.0"),
        ("curriculum.candidates_factor=0", "curriculum.candidates_factor: expected int >= 1, got 0"),
        ("curriculum.value_model.lr=-1", "curriculum.value_model.lr: expected float > 0"),
        (
            "curriculum.value_model.batch_size=0",
            "curriculum.value_model.batch_size: expected int >= 1",
        ),
        ("curriculum.value_model.head=transformer", "curriculum.value_model.head"),
        ("curriculum.value_model.placment=actor", "did you mean 'placement'"),
        ("curriculum.candidate_factor=2", "did you mean 'candidates_factor'"),
    ],
)
def test_pcl_config_errors(override, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["curriculum.name=pcl", override])


# --------------------------------------------------------------------------- placements


@pytest.mark.slow
def test_actor_and_learner_placements_compute_what_the_driver_does(tiny_model_dir, ray_session) -> None:
    from conftest import learner_group

    prompts, targets = difficulty_prompts(12)
    spec = spec_for(tiny_model_dir, batch_size=8)
    driver = build_value_model(spec, "driver")
    driver.fit(prompts, targets)
    expected = driver.predict(prompts)
    learner = learner_group(tiny_model_dir)
    try:
        for placement in ("actor", "learner"):
            handle = build_value_model(spec, placement, learner)
            assert handle.placement == placement
            handle.fit(prompts, targets)
            assert handle.predict(prompts) == pytest.approx(expected, abs=1e-5)
            state = handle.state_dict()
            assert torch.allclose(
                state["head"]["layers.0.weight"], driver.state_dict()["head"]["layers.0.weight"], atol=1e-5
            )
            handle.close()
    finally:
        learner.shutdown()
