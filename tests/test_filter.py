"""Filter stage: keep rule, refill loop, carry-over, config checks (pure logic), and the trainer
step with the filter on stub parts. The real-stack run (refill, carry-over, resume) is in
tests/test_e2e.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rlengine.config import ConfigError, load_config
from rlengine.episode import Episode, Group, unpack_groups
from rlengine.stages import REGISTRY, StageContext, build_stage, build_stage_config
from rlengine.stages.filter import BalancedFilter, NonzeroVarianceFilter, refill_size
from tests.stubs import stub_trainer


def make_group(pass_rate: float, n: int = 4, tag: str = "g") -> Group:
    passes = round(pass_rate * n)
    episodes = [
        Episode.single(
            f"{tag}-{i}",
            [i, i + 1],
            [-0.5, -0.25],
            "stop",
            version=3,
            scores={"acc": float(i < passes)},
            reward=float(i < passes),
            correct=i < passes,
        )
        for i in range(n)
    ]
    return Group(
        prompt={"id": tag, "prompt": f"p {tag}", "answer": "1", "operands": [1, 2], "prompt_ids": [7, 8, 9]},
        prompt_ids=[7, 8, 9],
        episodes=episodes,
    )


def groups(rates: list[float], prefix: str, n: int = 4) -> list[Group]:
    return [make_group(p, n, f"{prefix}{i}") for i, p in enumerate(rates)]


class ScriptedRefill:
    """Answers refill round k with the k-th scripted list of pass rates (cut or padded to the ask)."""

    def __init__(self, *rounds: list[float]) -> None:
        self.rounds = list(rounds)
        self.requests: list[int] = []

    def __call__(self, num_prompts: int) -> list[Group]:
        self.requests.append(num_prompts)
        rates = self.rounds.pop(0) if self.rounds else []
        rates = (rates + [0.0] * num_prompts)[:num_prompts]
        return groups(rates, f"r{len(self.requests)}-")


def stage(name: str, *overrides: str):
    config = build_stage_config("filter", {"name": name, **parse(overrides)})
    return build_stage(
        "filter", config, StageContext(rows=[], seed=0, objectives=["acc"], reward_weights=[1.0])
    )


def parse(overrides) -> dict:
    out = {}
    for item in overrides:
        key, value = item.split("=")
        out[key] = json.loads(value)
    return out


def ids(batch: list[Group]) -> list[str]:
    return [g.prompt["id"] for g in batch]


# --------------------------------------------------------------------------- keep rule


def test_balanced_keeps_inclusive_band() -> None:
    f = stage("balanced")
    batch, metrics = f.keep(groups([0.0, 0.25, 0.5, 0.75, 1.0], "a"), 3, ScriptedRefill())
    assert ids(batch) == ["a1", "a2", "a3"]
    assert metrics["filter/kept_fraction"] == pytest.approx(3 / 5) and metrics["filter/rounds"] == 1
    # boundaries are inclusive: with n=5, p = 0.2 and 0.8 are kept, 0.0 / 1.0 are not
    f = stage("balanced")
    batch, _ = f.keep(groups([0.0, 0.2, 0.8, 1.0], "b", n=5), 2, ScriptedRefill())
    assert ids(batch) == ["b1", "b2"]
    # a narrower band drops what the default keeps
    f = stage("balanced", "low=0.5", "high=0.5")
    batch, _ = f.keep(groups([0.25, 0.5, 0.75], "c"), 1, ScriptedRefill())
    assert ids(batch) == ["c1"]


def test_nonzero_variance_is_open_unit_band() -> None:
    f = stage("nonzero_variance")
    assert isinstance(f, NonzeroVarianceFilter) and isinstance(f, BalancedFilter)
    # p = 0.1 (n=10) is outside balanced's default band but has variance, so DAPO keeps it
    rates = [0.0, 0.1, 0.9, 1.0]
    batch, _ = f.keep(groups(rates, "a", n=10), 2, ScriptedRefill())
    assert ids(batch) == ["a1", "a2"]
    batch, _ = stage("balanced").keep(groups(rates, "a", n=10), 2, ScriptedRefill(*[[]] * 3))
    assert ids(batch) == []


def test_registry_and_defaults() -> None:
    assert {"none", "nonzero_variance", "balanced"} <= set(REGISTRY["filter"])
    cfg = load_config(None, ["filter.name=balanced"]).filter
    got = (cfg.name, cfg.low, cfg.high, cfg.max_rounds, cfg.carry_over, cfg.max_carry)
    assert got == ("balanced", 0.2, 0.8, 4, False, None)  # carry-over is off by default, as in DAPO
    cfg = load_config(None, ["filter.name=nonzero_variance", "filter.max_rounds=2"]).filter
    assert (cfg.name, cfg.max_rounds, cfg.carry_over) == ("nonzero_variance", 2, False)


# --------------------------------------------------------------------------- refill loop


def test_refill_size_rule() -> None:
    assert refill_size(2, kept=2, generated=4, max_oversample=4.0) == 4  # keep rate 1/2 -> 2 / 0.5
    assert refill_size(1, kept=3, generated=8, max_oversample=4.0) == 3  # ceil(8 / 3)
    assert refill_size(3, kept=0, generated=8, max_oversample=4.0) == 12  # nothing kept: cap
    assert refill_size(3, kept=1, generated=100, max_oversample=2.0) == 6  # rate floored at 1/2
    assert refill_size(3, kept=8, generated=8, max_oversample=4.0) == 3  # never below the shortfall


def test_refill_until_target_exact_counts() -> None:
    f = stage("balanced", "carry_over=true")
    source = ScriptedRefill([0.5, 0.0, 0.0, 0.0], [0.5, 0.25, 0.75])
    batch, m = f.keep(groups([0.0, 1.0, 0.5, 0.5], "a"), 4, source)
    # round 1 keeps 2 of 4 -> asks 2 / (2/4) = 4; round 2 keeps 1 -> asks ceil(1 * 8 / 3) = 3
    assert source.requests == [4, 3]
    assert ids(batch) == ["a2", "a3", "r1-0", "r2-0"]
    assert m["filter/rounds"] == 3 and m["filter/extra_rollouts"] == (4 + 3) * 4
    assert m["filter/kept_fraction"] == pytest.approx(6 / 11)
    assert m["filter/carried_over"] == 0 and m["filter/shortfall"] == 0
    assert m["filter/carry_buffer"] == 2 and ids(f.buffer) == ["r2-1", "r2-2"]


def test_max_rounds_then_train_on_what_was_kept() -> None:
    f = stage("balanced", "max_rounds=3")
    source = ScriptedRefill([0.0] * 16, [0.5] + [0.0] * 15)
    batch, m = f.keep(groups([0.5, 1.0, 1.0, 1.0], "a"), 4, source)
    # round 2: ceil(3 * 4 / 1) = 12; round 3: ceil(3 * 16 / 1) = 48, capped at max_oversample * 3 = 12
    assert source.requests == [12, 12]
    assert ids(batch) == ["a0", "r2-0"] and m["filter/rounds"] == 3 and m["filter/shortfall"] == 2
    assert m["filter/extra_rollouts"] == (12 + 12) * 4 and f.buffer == []
    # max_rounds=1: never refills
    f, source = stage("nonzero_variance", "max_rounds=1"), ScriptedRefill([0.5] * 8)
    batch, m = f.keep(groups([0.5, 0.0], "a"), 2, source)
    assert source.requests == [] and ids(batch) == ["a0"] and m["filter/rounds"] == 1


def test_nothing_survives_returns_empty_batch() -> None:
    f = stage("nonzero_variance", "max_rounds=2")
    source = ScriptedRefill()
    batch, m = f.keep(groups([1.0, 1.0], "a"), 2, source)
    assert batch == [] and source.requests == [8]
    assert m["filter/kept_fraction"] == 0 and m["filter/shortfall"] == 2 and m["filter/rounds"] == 2


# --------------------------------------------------------------------------- carry-over


def test_carry_over_survives_checkpoint_and_is_used_first(tmp_path: Path) -> None:
    f = stage("balanced", "carry_over=true")
    batch, m = f.keep(groups([0.5, 0.5, 0.5, 0.25, 0.75, 0.0], "a"), 3, ScriptedRefill())
    assert (
        ids(batch) == ["a0", "a1", "a2"] and ids(f.buffer) == ["a3", "a4"] and m["filter/carry_buffer"] == 2
    )
    saved = list(f.buffer)

    torch.save({"filter": f.state_dict()}, tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=False)  # as rlengine/checkpoint.py loads it
    resumed = stage("balanced", "carry_over=true")
    resumed.load_state_dict(state["filter"])
    assert resumed.buffer == saved and resumed.buffer[0].pass_rate == 0.25
    assert resumed.buffer[0].episodes[0].logprobs == [-0.5, -0.25] and resumed.buffer[0].policy_version == 3

    source = ScriptedRefill()
    batch, m = resumed.keep(groups([0.0, 0.5, 1.0], "b"), 3, source)
    assert ids(batch) == ["a3", "a4", "b1"] and source.requests == []
    assert m["filter/carried_over"] == 2 and m["filter/rounds"] == 1 and resumed.buffer == []
    assert m["filter/kept_fraction"] == pytest.approx(1 / 3)  # counts this step's new groups only


def test_carry_off_and_cap() -> None:
    f = stage("balanced", "carry_over=false")
    _, m = f.keep(groups([0.5] * 5, "a"), 2, ScriptedRefill())
    assert f.buffer == [] and unpack_groups(f.state_dict()["buffer"]) == [] and m["filter/dropped"] == 3
    f = stage("balanced", "carry_over=true", "max_carry=2")
    _, m = f.keep(groups([0.5] * 5, "a"), 1, ScriptedRefill())
    assert ids(f.buffer) == ["a3", "a4"] and m["filter/dropped"] == 2  # oldest surplus dropped first


# --------------------------------------------------------------------------- config validation


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["filter.low=0.9", "filter.high=0.2"], r"filter.low \(0.9\) must be <= filter.high \(0.2\)"),
        (["filter.low=-0.1"], r"filter.low: expected float in \[0, 1\], got -0.1"),
        (["filter.high=1.5"], r"filter.high: expected float in \[0, 1\], got 1.5"),
        (["filter.max_rounds=0"], r"filter.max_rounds: expected int >= 1, got 0"),
        (["filter.max_carry=-1"], r"filter.max_carry: expected int >= 0, got -1"),
        (["filter.max_oversample=0.5"], r"filter.max_oversample: expected float >= 1, got 0.5"),
        (["filter.max_oversample=.nan"], r"filter.max_oversample: expected a finite number, got nan"),
        (["filter.low=high"], r"filter.low: expected float"),
    ],
)
def test_balanced_config_errors(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["filter.name=balanced", *overrides])


def test_nonzero_variance_has_no_band_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'filter.low'"):
        load_config(None, ["filter.name=nonzero_variance", "filter.low=0.1"])


# --------------------------------------------------------------------------- trainer step (stub actors)


def filter_trainer(tmp_path: Path, passes, *overrides: str):
    from rlengine.data import make_arithmetic

    cfg = load_config(
        None, ["trainer.batch_size=4", "rollout.n=4", "reward.functions=[math_verify]", *overrides]
    )
    rows = [{**r, "prompt": r["problem"], "prompt_ids": [5, 6]} for r in make_arithmetic(40, seed=0)]
    return stub_trainer(cfg, rows, tmp_path, passes=passes)


def test_trainer_counts_refill_rounds(tmp_path: Path) -> None:
    # prompt i of the synthetic set: i % 3 == 0 -> 2 of 4 pass, else none pass
    t = filter_trainer(
        tmp_path,
        lambda pid: 2 if int(pid.split("/")[-1]) % 3 == 0 else 0,
        "filter.name=balanced",
        "filter.max_rounds=4",
    )
    m = t.step()
    assert len(t.pool.calls) == m["filter/rounds"] >= 2 and t.pool.calls[0] == 4
    assert m["rollouts/generated"] == 4 * sum(t.pool.calls) == 16 + m["filter/extra_rollouts"]
    # an independent count: every prompt scored, with the pass rate the stub reward gives it
    scored = t.rollouts.rewards.prompt_ids[::4]  # 4 responses per prompt, scored together
    expected = [t.rollouts.rewards.passes(pid) / 4 for pid in scored]
    assert len(scored) == sum(t.pool.calls) and m["pass_rate/mean"] == pytest.approx(
        sum(expected) / len(expected)
    )
    assert sorted(t.logger.histograms["pass_rate/generated"]) == sorted(expected)
    assert t.logger.histograms["pass_rate/kept"] == [0.5] * len(t.logger.histograms["pass_rate/kept"])
    assert m["effective_ratio"] == 1.0 and m["rollouts/kept"] == 4 * (4 - m["filter/shortfall"])
    assert [len(samples) for samples in t.learner.trained] == [m["rollouts/kept"]]
    # reward faults of every round are counted, not only the first round's
    assert m["rollouts/rounds"] == m["filter/rounds"]
    assert (m["reward/errors"], m["reward/timeouts"]) == (m["filter/rounds"], 2 * m["filter/rounds"])


def test_trainer_step_survives_empty_batch(tmp_path: Path) -> None:
    from rlengine.runlog import LEARNER_METRICS
    from rlengine.runlog import _clean as clean

    t = filter_trainer(tmp_path, lambda pid: 0, "filter.name=nonzero_variance", "filter.max_rounds=2")
    m = t.step()
    assert t.learner.trained == [] and m["train/skipped"] == 1.0 and m["filter/shortfall"] == 4
    assert m["rollouts/kept"] == 0 and m["effective_ratio"] == 0.0 and m["rollouts/generated"] == 4 * (4 + 16)
    # no update happened: the learner's metrics are missing values (null in metrics.jsonl), not zeros
    assert all(math.isnan(m[k]) for k in LEARNER_METRICS) and math.isnan(m["reward/mean"])

    nan_free = {k: v for k, v in m.items() if k not in (*LEARNER_METRICS, "reward/mean")}
    assert all(not (isinstance(v, float) and math.isnan(v)) for v in nan_free.values())
    json.dumps({k: clean(v) for k, v in m.items()}, allow_nan=False)


def test_stage_hooks_run_on_a_step_without_samples(tmp_path: Path) -> None:
    """before_update runs on an empty step too, so a stage's step counter does not shift."""
    t = filter_trainer(tmp_path, lambda pid: 0, "filter.name=nonzero_variance", "filter.max_rounds=1")
    calls: list[int] = []
    before = t.reward_weighting.before_update
    t.reward_weighting.before_update = lambda groups, samples: (calls.append(len(samples)), before(groups, samples))[1]
    t.step()
    assert calls == [0] and t.learner.trained == []


# The filter on the real stack (refill, carry-over, resume): tests/test_e2e.py.
