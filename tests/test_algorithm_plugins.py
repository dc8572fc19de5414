"""The estimator / loss registry and algorithm plug-ins (``algorithm.advantage: file.py:fn``).

Registered functions against independent hand computations; plug-ins loaded relative to the YAML's
directory; every check ``rlengine config check`` makes of a plug-in; the learner's resolution of a
plug-in loss in another directory and another process. Pure: no Ray, no vLLM, no DeepSpeed (the
one LearnerRank test is marked slow)."""

from __future__ import annotations

import math
import pickle
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from rlengine.algorithms import (
    ADVANTAGES,
    POLICY_LOSSES,
    PolicyLossOutput,
    advantage_estimator,
    compute_advantages,
    compute_policy_loss,
    group_constant,
    group_mean,
    group_size,
    group_std,
    group_sum,
    policy_loss,
    register_advantage,
    register_policy_loss,
    whiten,
)
from rlengine.cli import main
from rlengine.config import load_config
from rlengine.errors import ConfigError
from rlengine.learner.spec import LearnerSpec
from rlengine.plugins import PluginError

ROOT = Path(__file__).resolve().parents[1]

# Rewards in three groups (sizes 3, 2, 1), the middle one all-equal, and token counts.
REWARDS = [1.0, 0.0, 0.0, 2.0, 2.0, 5.0]
GROUPS = [0, 0, 0, 1, 1, 2]
LENGTHS = [3, 1, 2, 4, 4, 2]


def _tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.tensor(REWARDS), torch.tensor(GROUPS), torch.tensor(LENGTHS, dtype=torch.float32)


def _whiten_by_hand(values: list[float], lengths: list[int], eps: float = 0.0) -> list[float]:
    tokens = [v for v, n in zip(values, lengths) for _ in range(n)]
    mean, std = statistics.fmean(tokens), statistics.stdev(tokens)
    return [(v - mean) / (std + eps) for v in values]


def write_plugin(directory: Path, body: str, name: str = "algos.py") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("import torch\n\n" + textwrap.dedent(body))
    return path


def write_config(directory: Path, *lines: str) -> Path:
    path = directory / "config.yaml"
    path.write_text("algorithm:\n" + "".join(f"  {line}\n" for line in lines))
    return path


# --------------------------------------------------------------------------- the registry


def test_registry_holds_the_builtins_with_their_declarations() -> None:
    assert list(ADVANTAGES) == ["grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline"]
    assert list(POLICY_LOSSES) == ["ppo", "gspo", "cispo", "bapo"]
    assert {n for n, e in ADVANTAGES.items() if e.group_baseline} == {
        "grpo",
        "dr_grpo",
        "rloo",
        "reinforce_pp_baseline",
    }
    declared = {
        n: (loss.default_clips, loss.clip_mode, loss.default_dual_clip, loss.dual_clip)
        for n, loss in POLICY_LOSSES.items()
    }
    assert declared == {
        "ppo": ((0.2, 0.2), "epsilon", None, True),
        "gspo": ((3e-4, 4e-4), "epsilon", None, True),
        "cispo": ((1.0, 3.0), "epsilon", None, False),
        "bapo": ((0.6, 1.2), "ratio", 3.0, True),
    }
    for name, entry in ADVANTAGES.items():
        assert advantage_estimator(name) is entry and entry.name == name
        assert "arXiv" in entry.fn.__doc__ and "[N]" in entry.fn.__doc__, name
    for name, loss in POLICY_LOSSES.items():
        assert policy_loss(name) is loss and loss.name == name
        assert "arXiv" in loss.fn.__doc__ and "[B, T]" in loss.fn.__doc__, name


def test_bounds_read_epsilons_or_ratio_bounds() -> None:
    assert POLICY_LOSSES["ppo"].bounds(0.2, 0.28, None) == (0.8, 1.28, None)
    assert POLICY_LOSSES["gspo"].bounds(3e-4, 4e-4, 2.0) == (1 - 3e-4, 1 + 4e-4, 2.0)
    assert POLICY_LOSSES["cispo"].bounds(1.0, 3.0, None) == (0.0, 4.0, None)
    assert POLICY_LOSSES["bapo"].bounds(0.6, 1.2, None) == (0.6, 1.2, 3.0)  # the default dual clip
    assert POLICY_LOSSES["bapo"].bounds(0.6, 1.2, 5.0) == (0.6, 1.2, 5.0)
    with pytest.raises(ValueError, match=r"bapo: clip_low/clip_high are ratio bounds"):
        POLICY_LOSSES["bapo"].bounds(0.2, 0.2, None)
    with pytest.raises(ValueError, match=r"cispo: dual_clip does not apply \(use it with ppo, gspo, bapo\)"):
        POLICY_LOSSES["cispo"].bounds(1.0, 3.0, 3.0)
    with pytest.raises(ValueError, match=r"ppo: clip_low must be a finite number >= 0, got None"):
        POLICY_LOSSES["ppo"].bounds(None, 0.2, None)  # type: ignore[arg-type]


def test_unknown_names_and_double_registration() -> None:
    with pytest.raises(
        ValueError, match=r"unknown advantage estimator 'rlo'.*or a plug-in.*did you mean 'rloo'"
    ):
        advantage_estimator("rlo")
    with pytest.raises(ValueError, match=r"unknown policy loss 'gspoo'.*did you mean 'gspo'"):
        policy_loss("gspoo")
    with pytest.raises(ValueError, match="already registered"):
        register_advantage("grpo")(lambda rewards, group_index, *, lengths, eps: rewards)
    with pytest.raises(ValueError, match="already registered"):
        register_policy_loss("ppo", default_clips=(0.2, 0.2))(lambda *a, **k: a[0])
    assert list(ADVANTAGES)[-1] == "reinforce_pp_baseline" and list(POLICY_LOSSES)[-1] == "bapo"


# --------------------------------------------------------------------------- the group helpers


def test_group_helpers_by_hand() -> None:
    rewards, groups, _ = _tensors()
    assert group_size(groups).tolist() == [3, 3, 3, 2, 2, 1]
    assert group_sum(rewards, groups).tolist() == [1, 1, 1, 4, 4, 5]
    torch.testing.assert_close(group_mean(rewards, groups), torch.tensor([1 / 3] * 3 + [2.0, 2.0, 5.0]))
    sd = statistics.stdev([1.0, 0.0, 0.0])
    torch.testing.assert_close(group_std(rewards, groups), torch.tensor([sd] * 3 + [0.0, 0.0, 0.0]))
    assert group_constant(rewards, groups).tolist() == [False] * 3 + [True] * 3
    expected = _whiten_by_hand(REWARDS, LENGTHS, eps=0.1)
    torch.testing.assert_close(
        whiten(rewards, torch.tensor(LENGTHS, dtype=torch.float32), 0.1), torch.tensor(expected)
    )


# --------------------------------------------------------------------------- each estimator


def _expected_advantages(name: str) -> list[float]:
    """The estimators written out from their formulas, group by group (plain Python)."""
    members: dict[int, list[float]] = {}
    for r, g in zip(REWARDS, GROUPS):
        members.setdefault(g, []).append(r)
    out = []
    for r, g in zip(REWARDS, GROUPS):
        rs = members[g]
        flat = len(set(rs)) == 1
        mean = statistics.fmean(rs)
        if name == "grpo":
            out.append(0.0 if flat else (r - mean) / (statistics.stdev(rs) + 1e-6))
        elif name == "dr_grpo":
            out.append(0.0 if flat else r - mean)
        elif name == "rloo":
            out.append(0.0 if flat else r - (sum(rs) - r) / (len(rs) - 1))
        else:
            out.append(r if len(rs) == 1 else r - mean)
    if name == "reinforce_pp":
        return _whiten_by_hand(REWARDS, LENGTHS, eps=1e-6)
    if name == "reinforce_pp_baseline":
        return _whiten_by_hand(out, LENGTHS, eps=1e-6)
    return out


@pytest.mark.parametrize("name", list(ADVANTAGES))
def test_each_registered_estimator_by_hand(name: str) -> None:
    rewards, groups, lengths = _tensors()
    got = ADVANTAGES[name].fn(rewards, groups, lengths=lengths, eps=1e-6)
    torch.testing.assert_close(got, torch.tensor(_expected_advantages(name)), atol=1e-5, rtol=1e-5)
    # compute_advantages renumbers any ids to 0..G-1 and passes the lengths on
    via_entry = compute_advantages(name, rewards, torch.tensor(GROUPS) * 10 - 7, eps=1e-6, lengths=LENGTHS)
    torch.testing.assert_close(via_entry, got)


# --------------------------------------------------------------------------- each loss

OLD = [[-1.0, -2.0, -0.5], [-1.5, -0.7, -3.0]]
SHIFT = [[0.5, -0.4, 0.05], [0.3, -0.9, 0.0]]  # log(pi / pi_old) per token
MASK = [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]
ADV = [1.0, -2.0]


def _loss_inputs() -> tuple[torch.Tensor, ...]:
    old = torch.tensor(OLD) * torch.tensor(MASK)
    logprobs = ((torch.tensor(OLD) + torch.tensor(SHIFT)) * torch.tensor(MASK)).requires_grad_(True)
    adv = torch.tensor(ADV).unsqueeze(-1).expand(2, 3) * torch.tensor(MASK)
    return logprobs, old, adv, torch.tensor(MASK)


def _clipped_by_hand(
    r: float, a: float, lower: float, upper: float, dual: float | None
) -> tuple[float, bool]:
    unclipped, clipped = -r * a, -min(max(r, lower), upper) * a
    value = max(unclipped, clipped)
    if dual is not None and a < 0 and value > -dual * a:
        return -dual * a, True
    return value, clipped > unclipped


@pytest.mark.parametrize(
    ("name", "clips", "dual"),
    [
        ("ppo", (0.2, 0.2), None),
        ("ppo", (0.2, 0.28), 1.5),
        ("bapo", (0.6, 1.2), None),
        ("gspo", (0.1, 0.1), None),
    ],
)
def test_clipped_losses_by_hand(name: str, clips: tuple[float, float], dual: float | None) -> None:
    entry = POLICY_LOSSES[name]
    lower, upper, dual_c = entry.bounds(*clips, dual)
    logprobs, old, adv, mask = _loss_inputs()
    out = entry.fn(logprobs, old, adv, mask, lower=lower, upper=upper, dual_clip=dual_c)
    assert isinstance(out, PolicyLossOutput)
    for b in range(2):
        valid = [t for t in range(3) if MASK[b][t]]
        seq_ratio = math.exp(statistics.fmean(SHIFT[b][t] for t in valid))
        for t in valid:
            r = seq_ratio if name == "gspo" else math.exp(SHIFT[b][t])
            value, clipped = _clipped_by_hand(r, ADV[b], lower, upper, dual_c)
            assert out.loss[b, t].item() == pytest.approx(value, rel=1e-5), (b, t)
            assert out.ratio[b, t].item() == pytest.approx(r, rel=1e-5)
            assert bool(out.clipped[b, t]) == clipped, (b, t)
    if name == "bapo":
        assert dual_c == 3.0 and bool(out.dual_clipped[1, 0]) is False and bool(out.clipped.any())


def test_cispo_by_hand() -> None:
    entry = POLICY_LOSSES["cispo"]
    lower, upper, _ = entry.bounds(0.3, 0.2, None)  # [0.7, 1.2]
    logprobs, old, adv, mask = _loss_inputs()
    out = entry.fn(logprobs, old, adv, mask, lower=lower, upper=upper, dual_clip=None)
    out.loss.sum().backward()
    for b in range(2):
        for t in range(3):
            if not MASK[b][t]:
                continue
            r = math.exp(SHIFT[b][t])
            w = min(max(r, 0.7), 1.2)
            lp = OLD[b][t] + SHIFT[b][t]
            assert out.loss[b, t].item() == pytest.approx(-w * ADV[b] * lp, rel=1e-5)
            assert logprobs.grad[b, t].item() == pytest.approx(
                -w * ADV[b], rel=1e-5
            )  # the weight is a constant
            assert bool(out.clipped[b, t]) == (r < 0.7 or r > 1.2)


# --------------------------------------------------------------------------- plug-ins in compute_*

ESTIMATOR = """
def doubled_centered(rewards, group_index, *, lengths, eps):
    means = torch.zeros(int(group_index.max()) + 1).index_add_(0, group_index, rewards)
    counts = torch.zeros_like(means).index_add_(0, group_index, torch.ones_like(rewards))
    return 2 * (rewards - (means / counts)[group_index]) + 0 * lengths
"""

LOSS = """
def plain_pg(logprobs, old_logprobs, advantages, mask, *, lower, upper, dual_clip):
    return -advantages * logprobs


def halved_ppo(logprobs, old_logprobs, advantages, mask, *, lower, upper, dual_clip):
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped, clipped = -advantages * ratio, -advantages * ratio.clamp(lower, upper)
    return (0.5 * torch.maximum(unclipped, clipped), ratio, clipped > unclipped)


halved_ppo.default_clips = (0.1, 0.3)


def ratio_mode(logprobs, old_logprobs, advantages, mask, *, lower, upper, dual_clip):
    return -advantages * logprobs * (upper - lower)


ratio_mode.clip_mode = "ratio"
ratio_mode.default_clips = (0.5, 2.0)
"""


def test_plugin_estimator_resolves_against_base_dir(tmp_path: Path, elsewhere: Path) -> None:
    write_plugin(tmp_path / "cfg", ESTIMATOR)
    rewards, groups, _ = _tensors()
    got = compute_advantages("algos.py:doubled_centered", rewards, groups * 3 + 1, base_dir=tmp_path / "cfg")
    expected = [
        2 * (r - statistics.fmean(x for x, h in zip(REWARDS, GROUPS) if h == g))
        for r, g in zip(REWARDS, GROUPS)
    ]
    torch.testing.assert_close(got, torch.tensor(expected))
    with pytest.raises(PluginError, match=r"file not found: 'algos.py'"):  # not in the current directory
        compute_advantages("algos.py:doubled_centered", rewards, groups)
    entry = advantage_estimator("algos.py:doubled_centered", tmp_path / "cfg")
    assert entry.group_baseline is False  # not declared: not assumed
    assert (
        advantage_estimator(str(tmp_path / "cfg" / "algos.py") + ":doubled_centered") is entry
    )  # one cache entry


def test_module_spec_of_a_builtin_equals_the_builtin() -> None:
    rewards, groups, lengths = _tensors()
    spec = "rlengine.algorithms.advantages:reinforce_pp_baseline"
    assert compute_advantages(spec, rewards, groups, lengths=lengths).equal(
        compute_advantages("reinforce_pp_baseline", rewards, groups, lengths=lengths)
    )
    logprobs, old, adv, mask = _loss_inputs()
    for agg in ("token_mean", "seq_mean_token_sum_norm"):
        plug = compute_policy_loss(
            "rlengine.algorithms.losses:ppo", logprobs, old, adv, mask, agg, clip_high=0.28
        )
        builtin = compute_policy_loss("ppo", logprobs, old, adv, mask, agg, clip_high=0.28)
        assert plug[0].equal(builtin[0]) and plug[1] == builtin[1]


def test_plugin_loss_outputs_and_metrics(tmp_path: Path, elsewhere: Path) -> None:
    write_plugin(tmp_path, LOSS)
    logprobs, old, adv, mask = _loss_inputs()
    # a plain tensor: the loss alone; the metrics use the token ratio and report nothing clipped
    loss, metrics = compute_policy_loss(
        "algos.py:plain_pg", logprobs, old, adv[:, 0], mask, "token_mean", base_dir=tmp_path
    )
    lp = [[OLD[b][t] + SHIFT[b][t] for t in range(3)] for b in range(2)]
    tokens = [(b, t) for b in range(2) for t in range(3) if MASK[b][t]]
    assert loss.item() == pytest.approx(statistics.fmean(-ADV[b] * lp[b][t] for b, t in tokens), rel=1e-5)
    ratios = [math.exp(SHIFT[b][t]) for b, t in tokens]
    assert metrics["clipfrac"] == 0.0 and metrics["ratio/mean"] == pytest.approx(
        statistics.fmean(ratios), rel=1e-5
    )
    assert metrics["ratio/max"] == pytest.approx(max(ratios), rel=1e-5)
    assert metrics["approx_kl"] == pytest.approx(
        statistics.fmean(r - 1 - math.log(r) for r in ratios), rel=1e-4
    )
    # a tuple (loss, ratio, clipped): clipfrac counts the plug-in's clipped tokens; token weights apply
    weights = torch.full((2, 3), 2.0)
    loss, metrics = compute_policy_loss(
        "algos.py:halved_ppo", logprobs, old, adv[:, 0], mask, "token_mean",
        clip_low=0.1, clip_high=0.3, token_weights=weights, base_dir=tmp_path,
    )  # fmt: skip
    values = [_clipped_by_hand(math.exp(SHIFT[b][t]), ADV[b], 0.9, 1.3, None) for b, t in tokens]
    assert loss.item() == pytest.approx(statistics.fmean(v for v, _ in values), rel=1e-5)  # 2 x 0.5
    assert metrics["clipfrac"] == pytest.approx(sum(c for _, c in values) / len(values))
    # clip_mode "ratio": clip_low / clip_high are the bounds themselves
    loss, _ = compute_policy_loss(
        "algos.py:ratio_mode",
        logprobs,
        old,
        adv,
        mask,
        "token_mean",
        clip_low=0.5,
        clip_high=2.0,
        base_dir=tmp_path,
    )
    assert loss.item() == pytest.approx(
        1.5 * statistics.fmean(-ADV[b] * lp[b][t] for b, t in tokens), rel=1e-5
    )
    with pytest.raises(ValueError, match="ratio bounds"):
        compute_policy_loss("algos.py:ratio_mode", logprobs, old, adv, mask, "token_mean", base_dir=tmp_path)


def test_plugins_are_loaded_and_checked_once_per_process(tmp_path: Path) -> None:
    write_plugin(
        tmp_path,
        """
        CALLS = []


        def counted(rewards, group_index, *, lengths, eps):
            CALLS.append(len(rewards))
            return rewards - rewards.mean()
        """,
    )
    spec = "algos.py:counted"
    first = advantage_estimator(spec, tmp_path)
    assert advantage_estimator(spec, tmp_path) is first
    compute_advantages(spec, torch.tensor([1.0, 2.0]), torch.tensor([0, 0]), base_dir=tmp_path)
    assert sys.modules[first.fn.__module__].CALLS == [5, 2]  # one trial call, then the real one


def test_plugin_estimator_checked_on_every_call(tmp_path: Path) -> None:
    """The trial call passes (5 rewards summing to 4); real batches that break the estimator are
    refused with the estimator named, not handed to the learner."""
    write_plugin(
        tmp_path,
        """
        def fragile(rewards, group_index, *, lengths, eps):
            return rewards / (rewards.sum() - 3)


        def five(rewards, group_index, *, lengths, eps):
            return rewards[:5]
        """,
    )
    assert advantage_estimator("algos.py:fragile", tmp_path) and advantage_estimator(
        "algos.py:five", tmp_path
    )
    with pytest.raises(ValueError, match=r"advantage estimator algos.py:fragile: returned NaN or inf"):
        compute_advantages("algos.py:fragile", [1.0, 2.0], [0, 0], base_dir=tmp_path)
    with pytest.raises(ValueError, match=r"advantage estimator algos.py:five: returned \(5,\) for 6 rewards"):
        compute_advantages("algos.py:five", REWARDS, GROUPS, base_dir=tmp_path)


# --------------------------------------------------------------------------- config check


def test_plugins_fill_the_config(tmp_path: Path, elsewhere: Path) -> None:
    write_plugin(tmp_path, ESTIMATOR + LOSS)
    cfg = load_config(
        write_config(tmp_path, "advantage: algos.py:doubled_centered", "loss: algos.py:halved_ppo")
    )
    a = cfg.algorithm
    assert (a.advantage, a.loss, a.clip_low, a.clip_high) == (
        "algos.py:doubled_centered",
        "algos.py:halved_ppo",
        0.1,
        0.3,
    )
    a = load_config(write_config(tmp_path, "loss: algos.py:plain_pg")).algorithm
    assert (a.clip_low, a.clip_high) == (0.2, 0.2)  # no default_clips: 0.2 / 0.2
    a = load_config(write_config(tmp_path, "loss: algos.py:ratio_mode", "clip_high: 3.0")).algorithm
    assert (a.clip_low, a.clip_high) == (0.5, 3.0)
    with pytest.raises(
        ConfigError, match=r"algorithm.clip_low / clip_high \(loss algos.py:ratio_mode.*ratio bounds"
    ):
        load_config(write_config(tmp_path, "loss: algos.py:ratio_mode", "clip_low: 1.5"))
    with pytest.raises(ConfigError, match=r"algos.py:plain_pg: dual_clip must be a finite number > 1"):
        load_config(write_config(tmp_path, "loss: algos.py:plain_pg", "dual_clip: 0.5"))


def test_group_baseline_attribute_decides_the_rollout_n_check(tmp_path: Path) -> None:
    write_plugin(
        tmp_path,
        """
        def grouped(rewards, group_index, *, lengths, eps):
            return rewards * 0


        grouped.group_baseline = True


        def batchwise(rewards, group_index, *, lengths, eps):
            return rewards - rewards.mean()
        """,
    )
    with pytest.raises(
        ConfigError, match=r"rollout.n: 1 response per prompt with algorithm.advantage algos.py:grouped"
    ):
        load_config(write_config(tmp_path, "advantage: algos.py:grouped"), ["rollout.n=1"])
    assert (
        load_config(write_config(tmp_path, "advantage: algos.py:batchwise"), ["rollout.n=1"]).rollout.n == 1
    )


BAD_PLUGINS = [
    # (key, body of algos.py, function, a regex the ConfigError must match)
    ("advantage", "", "nope", r"algorithm.advantage: advantage estimator 'nope' not found in .*algos.py"),
    (
        "advantage",
        "def my_estimator(rewards, group_index, *, lengths, eps):\n    return rewards\n",
        "my_estimatr",
        r"algorithm.advantage: advantage estimator 'my_estimatr' not found.*did you mean 'my_estimator'",
    ),
    ("advantage", "est = 3\n", "est", r"algorithm.advantage: algos.py:est: int 3 is not callable"),
    (
        "advantage",
        "def est(rewards):\n    return rewards\n",
        "est",
        r"algorithm.advantage: algos.py:est: cannot be called as fn\(rewards, group_index, \*, lengths, eps\): "
        r"too many positional",
    ),
    (
        "advantage",
        "def est(rewards, group_index, *, length, eps):\n    return rewards\n",
        "est",
        r"cannot be called as .*missing a required argument: 'length'",
    ),
    (
        "advantage",
        "def est(rewards, group_index, *, lengths, eps):\n    return rewards[:1]\n",
        "est",
        r"algorithm.advantage: algos.py:est: returned shape \(1,\) for 5 rewards in 3 groups .*expected \[5\]",
    ),
    (
        "advantage",
        "def est(rewards, group_index, *, lengths, eps):\n    return rewards.tolist()\n",
        "est",
        r"returned list for 5 rewards .*expected a tensor",
    ),
    (
        "advantage",
        "def est(rewards, group_index, *, lengths, eps):\n    return rewards / 0 * 0\n",
        "est",
        r"algorithm.advantage: algos.py:est: returned NaN or inf",
    ),
    (
        "advantage",
        "def est(rewards, group_index, *, lengths, eps):\n    return 1 / 0\n",
        "est",
        r"algos.py:est: raised ZeroDivisionError on a trial call with 5 rewards in 3 groups: division by zero",
    ),
    (
        "advantage",
        "def est(rewards, group_index, *, lengths, eps):\n    return group_index\n",
        "est",
        r"returned dtype torch.int64 .*expected a float tensor",
    ),
    (
        "loss",
        "def loss(logprobs, old_logprobs, advantages, mask):\n    return logprobs\n",
        "loss",
        r"algorithm.loss: algos.py:loss: cannot be called as fn\(logprobs, old_logprobs, advantages, mask, \*, "
        r"lower, upper, dual_clip\): got an unexpected keyword argument 'lower'",
    ),
    (
        "loss",
        "def loss(logprobs, old_logprobs, advantages, mask, *, lower, upper, dual_clip):\n    return logprobs.sum(-1)\n",
        "loss",
        r"algorithm.loss: algos.py:loss: returned shape \(2,\) for \[B, T\] = \[2, 3\] tensors \(the per-token loss\)",
    ),
    (
        "loss",
        "def loss(logprobs, old_logprobs, advantages, mask, *, lower, upper, dual_clip):\n"
        "    return logprobs / (logprobs - logprobs)\n",
        "loss",
        r"algorithm.loss: algos.py:loss: returned NaN or inf",
    ),
    (
        "loss",
        "def loss(logprobs, old_logprobs, advantages, mask, *, lower, upper, dual_clip):\n"
        "    return -advantages * old_logprobs\n",
        "loss",
        r"algorithm.loss: algos.py:loss: the per-token loss does not depend on logprobs",
    ),
    (
        "loss",
        "def loss(logprobs, old_logprobs, advantages, mask, *, lower, upper, dual_clip):\n"
        "    return (logprobs, logprobs[:, :1])\n",
        "loss",
        r"returned shape \(2, 1\) .*\(PolicyLossOutput.ratio\)",
    ),
    (
        "loss",
        "def loss(logprobs, old_logprobs, advantages, mask, *, lower, upper, dual_clip):\n"
        "    return (logprobs,) * 5\n",
        "loss",
        r"algos.py:loss: returned a tuple of 5 items",
    ),
    (
        "loss",
        "def loss(logprobs, old_logprobs, advantages, mask, *, lower, upper, dual_clip):\n    return logprobs\n"
        "loss.default_clips = 0.2\n",
        "loss",
        r"algorithm.loss: algos.py:loss: default_clips must be \(clip_low, clip_high\), got 0.2",
    ),
    (
        "loss",
        "def loss(logprobs, old_logprobs, advantages, mask, *, lower, upper, dual_clip):\n    return logprobs\n"
        "loss.default_clips = (1.5, 0.2)\n",
        "loss",
        r"default_clips \(1.5, 0.2\): algos.py:loss: clip_low is an epsilon below a ratio of 1",
    ),
    (
        "loss",
        "def loss(logprobs, old_logprobs, advantages, mask, *, lower, upper, dual_clip):\n    return logprobs\n"
        "loss.clip_mode = 'ratios'\n",
        "loss",
        r"clip_mode must be 'epsilon' or 'ratio', got 'ratios'",
    ),
    (
        "loss",
        "raise RuntimeError('broken plug-in')\n",
        "loss",
        r"algorithm.loss: failed to import .*RuntimeError: broken",
    ),
]


@pytest.mark.parametrize(("key", "body", "function", "pattern"), BAD_PLUGINS)
def test_bad_plugin_is_a_config_error_naming_the_key(
    key: str, body: str, function: str, pattern: str, tmp_path: Path, elsewhere: Path
) -> None:
    write_plugin(tmp_path, body)
    with pytest.raises(ConfigError, match=pattern):
        load_config(write_config(tmp_path, f"{key}: algos.py:{function}"))


@pytest.mark.parametrize("key", ["advantage", "loss"])
def test_missing_plugin_file(key: str, tmp_path: Path, elsewhere: Path) -> None:
    (tmp_path / "cfg").mkdir()
    path = write_config(tmp_path / "cfg", f"{key}: algos.py:fn")
    with pytest.raises(
        ConfigError, match=rf"algorithm.{key}: file not found: 'algos.py' \(looked in: .*cfg/algos.py"
    ):
        load_config(path)


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        (
            "algorithm.advantage=rlooo",
            r"algorithm.advantage: invalid value 'rlooo'; allowed: 'grpo', .*'file.py:function' \(did you mean 'rloo'\?\)",
        ),
        (
            "algorithm.advantage=reinforce_pp_base",
            r"algorithm.advantage: invalid value .*did you mean 'reinforce_pp_baseline'",
        ),
        (
            "algorithm.loss=cipso",
            r"algorithm.loss: invalid value 'cipso'; allowed: 'ppo', 'gspo', 'cispo', 'bapo', .*did you mean 'cispo'",
        ),
        (
            "algorithm.loss=my_loss.py",
            r"algorithm.loss: invalid value 'my_loss.py'.*or a plug-in 'file.py:function'",
        ),
    ],
)
def test_misspelt_builtin_names_the_closest(override: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [override])


def test_config_check_reports_a_bad_plugin(
    tmp_path: Path, elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_plugin(tmp_path, "def est(rewards, group_index, *, lengths, eps):\n    return rewards[:2]\n")
    path = write_config(tmp_path, "advantage: algos.py:est")
    assert main(["config", "check", str(path)]) == 2
    assert "algorithm.advantage: algos.py:est: returned shape (2,)" in capsys.readouterr().err


# --------------------------------------------------------------------------- the learner's resolution

RESOLVE_IN_A_FRESH_PROCESS = """
import pickle, sys, torch
from rlengine.algorithms import compute_policy_loss
spec = pickle.loads(sys.stdin.buffer.read())
lp = torch.zeros(1, 2, requires_grad=True)
loss, _ = compute_policy_loss(spec.algorithm.loss, lp, torch.zeros(1, 2), torch.tensor([2.0]), torch.ones(1, 2),
                              spec.algorithm.agg, clip_low=spec.algorithm.clip_low, clip_high=spec.algorithm.clip_high)
loss.backward()
print(spec.algorithm.loss, lp.grad.tolist())
"""


def test_learner_spec_carries_plugins_that_resolve_anywhere(tmp_path: Path, elsewhere: Path) -> None:
    write_plugin(tmp_path / "cfg", LOSS + ESTIMATOR)
    cfg = load_config(
        write_config(tmp_path / "cfg", "loss: algos.py:halved_ppo", "advantage: algos.py:doubled_centered")
    )
    spec = LearnerSpec.from_config(cfg, "model-dir")
    absolute = str(tmp_path / "cfg" / "algos.py")
    assert spec.config_dir == str(tmp_path / "cfg")
    assert (spec.algorithm.loss, spec.algorithm.advantage) == (
        f"{absolute}:halved_ppo",
        f"{absolute}:doubled_centered",
    )
    assert cfg.algorithm.loss == "algos.py:halved_ppo"  # the run's config is left as written
    assert (spec.algorithm.clip_low, spec.algorithm.clip_high) == (0.1, 0.3)
    # the rank calls compute_policy_loss(algo.loss, ...) with no base directory, from any directory
    assert policy_loss(spec.algorithm.loss).fn.__name__ == "halved_ppo"
    # ... and in a fresh process (a Ray actor), once the spec is unpickled there
    result = subprocess.run(
        [sys.executable, "-c", RESOLVE_IN_A_FRESH_PROCESS],
        input=pickle.dumps(spec),
        capture_output=True,
        cwd=elsewhere,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().split() == [f"{absolute}:halved_ppo", "[[-0.5,", "-0.5]]"]  # 0.5 * -A / T
    # built-in names leave the config's algorithm section itself in the spec
    builtin = load_config(None)
    assert LearnerSpec.from_config(builtin, "model-dir").algorithm is builtin.algorithm


@pytest.mark.slow
def test_learner_rank_trains_with_a_plugin_loss(
    tmp_path: Path, tiny_model_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A LearnerRank in this process (DeepSpeed, a world of one) uses the plug-in loss: twice the
    PPO loss gives twice the built-in's policy loss and gradient norm."""
    from rlengine.learner.batching import step_denominators
    from rlengine.learner.rank import LearnerRank
    from rlengine.learner.spec import single_process_world
    from tests.conftest import SMALL_LEARNER
    from tests.test_learner_rank import random_samples

    write_plugin(
        tmp_path / "cfg",
        """
        from rlengine.algorithms import POLICY_LOSSES


        def doubled_ppo(logprobs, old_logprobs, advantages, mask, *, lower, upper, dual_clip):
            out = POLICY_LOSSES["ppo"].fn(logprobs, old_logprobs, advantages, mask, lower=lower, upper=upper, dual_clip=dual_clip)
            return out._replace(loss=2 * out.loss)
        """,
    )
    path = write_config(tmp_path / "cfg", "loss: algos.py:doubled_ppo")
    monkeypatch.chdir(tmp_path)
    samples = [s for s in random_samples(5) if s.response_ids]
    plan = [[[0, 1, 2], [3, 4]]]
    results = {}
    for loss in ("algos.py:doubled_ppo", "ppo"):
        overrides = [*SMALL_LEARNER, "learner.grad_clip=0.0", "learner.lr=0.0", f"algorithm.loss={loss}"]
        spec = LearnerSpec.from_config(load_config(path, overrides), tiny_model_dir)
        with single_process_world():
            results[loss] = LearnerRank(spec).train(
                samples, plan, step_denominators(samples, [plan], "token_mean")
            )
    plugin, builtin = results["algos.py:doubled_ppo"], results["ppo"]
    assert plugin["loss/policy"] == pytest.approx(2 * builtin["loss/policy"], rel=1e-5)
    assert (
        plugin["grad_norm"] == pytest.approx(2 * builtin["grad_norm"], rel=1e-4) and builtin["grad_norm"] > 0
    )
    assert plugin["actor/clipfrac"] == builtin["actor/clipfrac"]
