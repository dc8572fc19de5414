"""The examples/ folder: every config validates, plug-ins resolve next to their YAML file, and the
Python parts behave as their READMEs say at their smallest size. Fast: no Ray, no vLLM."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from reward.loader import load_reward_function, parse_reward_specs
from rlengine.algorithms import advantage_estimator, compute_advantages, compute_policy_loss, policy_loss
from rlengine.cli import main
from rlengine.config import ConfigError, load_config
from rlengine.data import make_arithmetic
from rlengine.stages import STAGE_KINDS, Curriculum, StageContext, build_stage, stage_class

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CONFIGS = sorted(EXAMPLES.glob("*/config.yaml"))
RUN_SH = EXAMPLES / "eval_compare" / "run.sh"
SHIPPED_CONFIGS = CONFIGS + sorted((ROOT / "configs").rglob("*.yaml"))
"""Every YAML a user may start from: the examples, configs/ and the GPU recipes in configs/gpu/."""


# --------------------------------------------------------------------------- layout


def test_example_folders_and_commands() -> None:
    folders = sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    assert folders == [
        "custom_algorithm",
        "custom_reward",
        "custom_stage",
        "dapo_gsm8k",
        "eval_compare",
        "multi_objective",
    ]
    assert [p.parent.name for p in CONFIGS] == [
        "custom_algorithm",
        "custom_reward",
        "custom_stage",
        "dapo_gsm8k",
        "multi_objective",
    ]
    for name in folders:
        readme = (EXAMPLES / name / "README.md").read_text()
        command = (
            "bash examples/eval_compare/run.sh"
            if name == "eval_compare"
            else f"rlengine train examples/{name}/config.yaml"
        )
        assert command in readme, f"{name}/README.md does not give its command {command!r}"
        assert "2-core CPU" in readme, f"{name}/README.md does not say what to expect on a 2-core CPU"


# --------------------------------------------------------------------------- every config


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_check_passes(path: Path, elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    cfg = load_config(path)
    gpus = cfg.rollout.num_engines * cfg.rollout.tensor_parallel_size + cfg.learner.num_ranks
    if cfg.rollout.placement == "colocated":  # a rank and an engine on every GPU
        gpus = cfg.learner.num_ranks
    assert out[0] == f"{path}: OK" and f"total on GPU machines: {gpus} GPU(s)" in out[3], out
    assert cfg.config_dir == str(path.parent)
    if path.parent.name == "gpu":  # recipes for GPU clusters: a hub model in bf16
        assert cfg.model.name.startswith("Qwen/") and cfg.model.dtype == "bfloat16"
    else:  # runs on this CPU with the built-in model
        assert cfg.model.name == "smollm2-135m-instruct" and cfg.model.dtype == "float32"
    assert cfg.rollout.max_tokens < cfg.rollout.max_model_len


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.parent.name)
def test_plugins_resolve_next_to_the_yaml(path: Path, elsewhere: Path) -> None:
    cfg = load_config(path)
    found = []
    for spec in parse_reward_specs(cfg.reward.functions):
        if ".py:" in spec.function:
            fn = load_reward_function(spec.function, base_dir=cfg.config_dir)
            file = spec.function.rsplit(":", 1)[0]
            assert Path(fn.__code__.co_filename) == path.parent / file
            found.append(spec.function)
    for kind in STAGE_KINDS:
        name = getattr(cfg, kind).name
        if ".py:" in name:
            cls, config_cls = stage_class(kind, name, cfg.config_dir)
            assert Path(sys.modules[cls.__module__].__file__) == path.parent / name.rsplit(":", 1)[0]
            assert type(getattr(cfg, kind)) is config_cls
            found.append(name)
    for spec, find in ((cfg.algorithm.advantage, advantage_estimator), (cfg.algorithm.loss, policy_loss)):
        if ".py:" in spec:
            fn = find(spec, cfg.config_dir).fn
            assert Path(fn.__code__.co_filename) == path.parent / spec.rsplit(":", 1)[0]
            found.append(spec)
    expected = {
        "custom_algorithm": ["algos.py:opo_advantages", "algos.py:kl_cov_loss"],
        "custom_reward": ["rewards.py:shows_working"],
        "custom_stage": ["stages.py:EasyFirstCurriculum"],
        "dapo_gsm8k": [],
        "multi_objective": [],
    }
    assert found == expected[path.parent.name]


@pytest.mark.parametrize("name", ["custom_algorithm", "custom_reward", "custom_stage"])
def test_yaml_without_its_plugin_file_is_rejected(
    name: str, tmp_path: Path, elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "config.yaml"
    shutil.copy(EXAMPLES / name / "config.yaml", copy)
    assert main(["config", "check", str(copy)]) == 2
    assert "not found" in capsys.readouterr().err


# --------------------------------------------------------------------------- custom_algorithm

ALGO_YAML = EXAMPLES / "custom_algorithm" / "config.yaml"


def test_custom_algorithm_config() -> None:
    cfg = load_config(ALGO_YAML)
    a = cfg.algorithm
    assert (a.advantage, a.loss, a.clip_low, a.clip_high) == (
        "algos.py:opo_advantages",
        "algos.py:kl_cov_loss",
        0.2,
        0.28,  # kl_cov_loss.default_clips
    )
    assert advantage_estimator(a.advantage, cfg.config_dir).group_baseline
    with pytest.raises(
        ConfigError, match=r"rollout.n: 1 response per prompt with algorithm.advantage algos.py"
    ):
        load_config(ALGO_YAML, ["rollout.n=1"])
    responses = cfg.trainer.batch_size * cfg.rollout.n
    assert responses // cfg.learner.mini_batch_size == 2  # a second, off-policy optimizer step


def test_opo_advantages_by_hand() -> None:
    cfg = load_config(ALGO_YAML)
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 3.0])
    groups = torch.tensor([7, 7, 7, 2, 2, 5])
    lengths = torch.tensor([10, 30, 0, 5, 9, 4])
    adv = compute_advantages(
        cfg.algorithm.advantage, rewards, groups, lengths=lengths, base_dir=cfg.config_dir
    )
    baseline = (10 * 1.0 + 30 * 0.0 + 1 * 0.0) / (10 + 30 + 1)  # an empty response weighs 1 token
    expected = [1 - baseline, -baseline, -baseline, 0.0, 0.0, 0.0]  # all-equal group and singleton: 0
    torch.testing.assert_close(adv, torch.tensor(expected))
    # equal lengths: the plain group mean (dr_grpo)
    same = compute_advantages(
        cfg.algorithm.advantage, rewards, groups, lengths=[4] * 6, base_dir=cfg.config_dir
    )
    torch.testing.assert_close(same, compute_advantages("dr_grpo", rewards, groups))


def test_kl_cov_loss_penalises_the_highest_covariance_token(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(ALGO_YAML)
    a = cfg.algorithm
    loss = policy_loss(a.loss, cfg.config_dir)
    module = sys.modules[loss.fn.__module__]
    monkeypatch.setattr(module, "KL_COV_FRACTION", 0.2)  # 1 of 6 loss tokens
    old = torch.tensor([[-1.0, -2.0, -0.5, -3.0], [-1.5, -0.2, -2.5, -1.0]])
    shift = torch.tensor([[0.1, -0.1, 0.05, 0.0], [0.2, -0.3, 0.1, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    adv = torch.tensor([1.0, -1.0])

    def run(name: str, **kw: object) -> tuple[float, torch.Tensor, dict]:
        lp = (old + shift).clone().requires_grad_(True)
        value, metrics = compute_policy_loss(
            name, lp, old, adv, mask, "token_mean", clip_low=a.clip_low, clip_high=a.clip_high,
            base_dir=cfg.config_dir, **kw,
        )  # fmt: skip
        value.backward()
        return value.item(), lp.grad, metrics

    kl_cov, grad, metrics = run(a.loss)
    ppo, ppo_grad, ppo_metrics = run("ppo")
    # covariance over the 6 loss tokens: (lp - mean lp) * (A - mean A); the largest is row 1, token 2
    lp = (old + shift)[mask > 0]
    cov = (lp - lp.mean()) * (adv.repeat_interleave(3) - 0.0)
    top = int(cov.argmax())
    assert (top // 3, top % 3) == (1, 2)
    assert kl_cov == pytest.approx(ppo + abs(0.1) / 6, rel=1e-5)  # beta |log r| on that token, / 6 tokens
    extra = grad - ppo_grad
    assert extra[1, 2].item() == pytest.approx(1.0 / 6, rel=1e-5)  # d |log r| / d lp = sign(0.1)
    extra[1, 2] = 0.0
    assert extra.abs().max().item() < 1e-7
    assert metrics == ppo_metrics  # clipfrac, ratios: the surrogate's
    # on-policy (r = 1) the penalty is 0 and adds no gradient
    lp0 = old.clone().requires_grad_(True)
    on, _ = compute_policy_loss(a.loss, lp0, old, adv, mask, "token_mean", clip_low=0.2, clip_high=0.28,
                                base_dir=cfg.config_dir)  # fmt: skip
    on.backward()
    torch.testing.assert_close(lp0.grad, torch.tensor([[-1 / 6] * 3 + [0.0], [1 / 6] * 3 + [0.0]]))


# --------------------------------------------------------------------------- custom_reward


@pytest.fixture(scope="module")
def shows_working():
    cfg = load_config(EXAMPLES / "custom_reward" / "config.yaml")
    specs = parse_reward_specs(cfg.reward.functions)
    assert [(s.name, s.weight) for s in specs] == [("math_verify", 1.0), ("shows_working", 0.5)]
    assert specs[1].kwargs == {"min_steps": 1, "bare_answer_score": 0.5}
    return load_reward_function(specs[1].function, base_dir=cfg.config_dir)


@pytest.mark.parametrize(
    ("completion", "answer", "expected"),
    [
        (r"37 + 405 = 442, so the answer is \boxed{442}.", "442", 1.0),
        (r"The answer is \boxed{442}.", "442", 0.5),  # right, but no working
        (r"37 + 405 = 452, so \boxed{452}.", "442", 0.0),  # wrong answer
        (r"37 + 405 = 442, but I think \boxed{443}.", "442", 0.0),  # true working, wrong answer
        (r"37 + 400 = 436, 436 + 5 = 442. \boxed{442}", "442", 0.0),  # a false step
        (r"3 + 4 + 5 = 12 \boxed{12}", "12", 1.0),  # a chain
        (r"$12 \times 3 = 36$, hence \boxed{36}", "36", 1.0),  # LaTeX operator
        (r"1,000 - 1 = 999 \boxed{999}", "999", 1.0),  # thousands separator
        (r"5 - 8 = -3 \boxed{-3}", "-3", 1.0),
        (r"2 / 3 = 0.67 \boxed{\frac{2}{3}}", "2/3", 1.0),  # rounded decimal right side
        (r"7 / 2 = 3 \boxed{3.5}", "3.5", 0.0),  # an integer right side must be exact
        (r"5 / 0 = 1 \boxed{1}", "1", 0.0),
        ("20 + 3 = 23 and then 23 * 2 = 46, so 46", "46", 1.0),  # last number as the answer
        ("no answer here", "46", 0.0),
    ],
)
def test_shows_working_scores(shows_working, completion: str, answer: str, expected: float) -> None:
    assert (
        shows_working("What is it?", completion, answer, {"id": "t"}, min_steps=1, bare_answer_score=0.5)
        == expected
    )


def test_shows_working_kwargs(shows_working) -> None:
    one_step = r"20 + 3 = 23. \boxed{23}"
    two_steps = r"20 + 3 = 23. 23 * 2 = 46. \boxed{46}"
    assert shows_working("", one_step, "23", {}) == 1.0  # defaults: min_steps 1
    assert shows_working("", one_step, "23", {}, min_steps=2) == 0.5
    assert shows_working("", one_step, "23", {}, min_steps=2, bare_answer_score=0.25) == 0.25
    assert shows_working("", two_steps, "46", {}, min_steps=2) == 1.0
    assert shows_working("", "Answer: 23 (see 1 + 1 = 2)", "23", {}, answer_pattern=r"Answer: (\d+)") == 1.0


# --------------------------------------------------------------------------- custom_stage

STAGE_YAML = EXAMPLES / "custom_stage" / "config.yaml"
ROWS = make_arithmetic(60, seed=0, ops=("add", "sub", "mul"), max_digits=2)
LEVEL_COUNTS = {1: 10, 2: 32, 3: 18}


def build_curriculum(*overrides: str, seed: int = 0, rows: list[dict] | None = None):
    cfg = load_config(STAGE_YAML, list(overrides))
    context = StageContext(rows=rows or ROWS, seed=seed, objectives=["math_verify"], reward_weights=[1.0])
    return build_stage("curriculum", cfg.curriculum, context, cfg.config_dir)


def ids(rows: list[dict]) -> list[str]:
    return [r["id"] for r in rows]


def level_ids(level: int) -> set[str]:
    return {r["id"] for r in ROWS if r["level"] == level}


def test_curriculum_config_from_yaml() -> None:
    cfg = load_config(STAGE_YAML)
    c = cfg.curriculum
    assert type(c).__name__ == "EasyFirstConfig" and c.name == "stages.py:EasyFirstCurriculum"
    assert (c.level_field, c.start_level, c.advance_threshold, c.window) == ("level", None, 0.5, 8)
    with pytest.raises(
        ConfigError, match=r"curriculum.advance_threshold: expected a value in \[0, 1\], got 1.5"
    ):
        load_config(STAGE_YAML, ["curriculum.advance_threshold=1.5"])
    with pytest.raises(ConfigError, match=r"unknown key 'curriculum.windw'.*did you mean 'window'"):
        load_config(STAGE_YAML, ["curriculum.windw=3"])


def test_curriculum_is_a_curriculum_and_serves_easiest_first() -> None:
    assert {level: len(level_ids(level)) for level in (1, 2, 3)} == LEVEL_COUNTS
    stage = build_curriculum()
    assert isinstance(stage, Curriculum)
    first = stage.select(10)
    assert set(ids(first)) == level_ids(1)  # only level 1 is unlocked at the start
    assert ids(stage.select(4)) == ids(first)[:4]  # it cycles through the unlocked rows
    # everything unlocked: the order is by level, easiest first
    everything = build_curriculum("curriculum.start_level=3").select(60)
    assert [r["level"] for r in everything] == [1] * 10 + [2] * 32 + [3] * 18
    # the seed shuffles within a level only
    other = build_curriculum("curriculum.start_level=3", seed=1).select(60)
    assert [r["level"] for r in other] == [r["level"] for r in everything]
    assert ids(other) != ids(everything) and set(ids(other)) == set(ids(everything))


def test_curriculum_advances_after_high_pass_rates() -> None:
    stage = build_curriculum()
    first = stage.select(10)
    low = stage.observe(first, [0.25] * 10)
    assert low == {
        "curriculum/level": 1.0,
        "curriculum/frontier_pass_rate": 0.25,
        "curriculum/advanced": 0.0,
        "curriculum/unlocked_fraction": 10 / 60,
    }
    # high pass rates unlock level 2, but only once the window (8 frontier prompts) is full
    fresh = build_curriculum()
    batch = fresh.select(10)
    assert fresh.observe(batch[:7], [1.0] * 7)["curriculum/advanced"] == 0.0  # window not full yet
    metrics = fresh.observe(batch[7:8], [1.0])
    assert metrics["curriculum/advanced"] == 1.0 and metrics["curriculum/level"] == 2.0
    assert metrics["curriculum/unlocked_fraction"] == 42 / 60
    # the newly unlocked level is served next, then it wraps around to the easiest rows
    assert set(ids(fresh.select(32))) == level_ids(2)
    assert [r["level"] for r in fresh.select(10)] == [1] * 10
    # pass rates of prompts below the frontier do not count towards it
    held = fresh.observe(batch[:8], [1.0] * 8)
    assert held["curriculum/level"] == 2.0 and held["curriculum/advanced"] == 0.0
    # the last level is never passed
    top = build_curriculum("curriculum.start_level=3")
    hard = [r for r in ROWS if r["level"] == 3][:8]
    assert top.observe(hard, [1.0] * 8) == {
        "curriculum/level": 3.0,
        "curriculum/frontier_pass_rate": 1.0,
        "curriculum/advanced": 0.0,
        "curriculum/unlocked_fraction": 1.0,
    }


def test_curriculum_state_round_trip() -> None:
    stage = build_curriculum()
    batch = stage.select(10)
    assert stage.observe(batch[:8], [1.0] * 8)["curriculum/level"] == 2.0
    level2 = stage.select(5)
    stage.observe(level2[:3], [0.5] * 3)
    state = json.loads(json.dumps(stage.state_dict()))  # plain data, as stored in checkpoints

    restored = build_curriculum()
    restored.load_state_dict(state)
    expected = ids(stage.select(12))
    assert ids(restored.select(12)) == expected
    assert ids(build_curriculum().select(12)) != expected  # without the state it would differ
    # the pass-rate window came back too: 3 x 0.5 + 5 x 1.0 over a window of 8
    more = [r for r in ROWS if r["level"] == 2][:5]
    after = stage.observe(more, [1.0] * 5)
    assert restored.observe(more, [1.0] * 5) == after
    assert after["curriculum/frontier_pass_rate"] == 0.8125 and after["curriculum/level"] == 3.0

    with pytest.raises(ValueError, match="saved with 60 rows, this run has 59"):
        build_curriculum(rows=ROWS[:59]).load_state_dict(state)


def test_curriculum_needs_the_level_field() -> None:
    rows = [{k: v for k, v in r.items() if k != "level"} for r in ROWS]
    with pytest.raises(ValueError, match="lack the level field 'level'"):
        build_curriculum(rows=rows)
    renamed = [{**r, "difficulty": original["level"]} for r, original in zip(rows, ROWS)]
    stage = build_curriculum("curriculum.level_field=difficulty", rows=renamed)
    assert {r["difficulty"] for r in stage.select(10)} == {1}


# --------------------------------------------------------------------------- dapo_gsm8k

DAPO_YAML = EXAMPLES / "dapo_gsm8k" / "config.yaml"


def test_dapo_config() -> None:
    cfg = load_config(DAPO_YAML)
    a = cfg.algorithm
    assert (a.preset, a.clip_low, a.clip_high, a.kl_coef, a.agg) == ("dapo", 0.2, 0.28, 0.0, "token_mean")
    assert a.overlong_shaping and a.overlong_cache == 64 and cfg.rollout.max_tokens == 256
    assert cfg.filter.name == "nonzero_variance" and cfg.filter.max_rounds == 2
    assert cfg.data.source == "gsm8k_train"
    # the preset's own cache (4096) does not fit the CPU budget: the example must set it
    with pytest.raises(ConfigError, match=r"overlong_cache \(4096\) must be <= rollout.max_tokens \(256\)"):
        load_config(DAPO_YAML, ["algorithm.overlong_cache=4096"])


def _gpu_overrides(text: str, prefix: str) -> list[str]:
    """The overrides of the GPU command in ``text`` (lines continued with a backslash)."""
    lines = [line.removeprefix(prefix).strip() for line in text.splitlines() if line.startswith(prefix)]
    start = next(
        i for i, line in enumerate(lines) if line.startswith("rlengine train") and "model.name=" in line
    )
    command = []
    for line in lines[start:]:
        command.append(line.rstrip("\\").strip())
        if not line.endswith("\\"):
            break
    args = shlex.split(" ".join(command))
    assert args[:3] == ["rlengine", "train", "examples/dapo_gsm8k/config.yaml"]
    return args[3:]


def test_dapo_gpu_settings_are_valid_and_match_the_comments() -> None:
    from_yaml = _gpu_overrides(DAPO_YAML.read_text(), "#")
    from_readme = _gpu_overrides((EXAMPLES / "dapo_gsm8k" / "README.md").read_text(), "")
    assert from_yaml == from_readme
    cfg = load_config(DAPO_YAML, from_yaml)
    assert (cfg.model.name, cfg.model.dtype) == ("Qwen/Qwen2.5-Math-1.5B", "bfloat16")
    assert (cfg.rollout.n, cfg.rollout.max_tokens, cfg.rollout.max_model_len) == (16, 3072, 4096)
    assert cfg.algorithm.overlong_cache == 512 and cfg.filter.name == "nonzero_variance"
    # every "# GPU: value" comment names the value its override sets
    overrides = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in from_yaml)}
    section, commented = None, {}
    for line in DAPO_YAML.read_text().splitlines():
        if re.match(r"^\w+:", line):
            section = line.split(":")[0]
        match = re.match(r"^\s+(\w+):.*# GPU: (.+?)(?: \(.*\))?$", line)
        if match:
            commented[f"{section}.{match[1]}"] = yaml.safe_load(match[2])
    assert len(commented) == 17
    assert {k: overrides.get(k) for k in commented} == commented


# --------------------------------------------------------------------------- eval_compare


def test_run_sh_syntax() -> None:
    result = subprocess.run(["bash", "-n", str(RUN_SH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert os.access(RUN_SH, os.X_OK)


def test_run_sh_evaluates_newest_checkpoint_and_compares(tmp_path: Path) -> None:
    """With a stand-in ``rlengine`` that records its arguments: the three commands run.sh issues."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    fake = bin_dir / "rlengine"
    fake.write_text(f'#!/usr/bin/env bash\necho "$*" >> {shlex.quote(str(log))}\n')
    fake.chmod(0o755)
    run = tmp_path / "run"
    for step in (2, 10, 9):
        (run / "checkpoints" / f"step_{step}" / "model").mkdir(parents=True)
        (run / "checkpoints" / f"step_{step}" / "model" / "config.json").write_text("{}")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "OUT": str(tmp_path / "out")}
    result = subprocess.run(["bash", str(RUN_SH), str(run)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    out, newest = tmp_path / "out", run / "checkpoints" / "step_10" / "model"
    common = "--benchmarks gsm8k --limit 20 --samples 1 --max-tokens 256"
    assert log.read_text().splitlines() == [
        f"eval --model smollm2-135m-instruct {common} --output {out}/A_smollm2-135m-instruct",
        f"eval --model {newest} {common} --output {out}/B_step_10",
        f"eval --compare {out}/A_smollm2-135m-instruct {out}/B_step_10",
    ]

    empty = tmp_path / "empty"
    (empty / "checkpoints").mkdir(parents=True)
    result = subprocess.run(["bash", str(RUN_SH), str(empty)], capture_output=True, text=True, env=env)
    assert result.returncode == 2 and "no checkpoints/step_N/model" in result.stderr
