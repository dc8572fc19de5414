"""Config validation: every bad input gets a clear error before anything heavy starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rlengine.config import ConfigError, load_config, parse_overrides

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_defaults_validate() -> None:
    cfg = load_config(None)
    assert cfg.rollout.n == 4 and cfg.curriculum.name == "uniform" and cfg.filter.name == "none"


def test_unknown_key_names_closest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'rollout.temprature'.*did you mean 'temperature'"):
        load_config(write(tmp_path, "rollout:\n  temprature: 0.7\n"))


def test_unknown_section_names_closest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'learnr'.*did you mean 'learner'"):
        load_config(write(tmp_path, "learnr:\n  lr: 1.0\n"))


def test_wrong_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"rollout.n: expected int, got 'four'"):
        load_config(write(tmp_path, "rollout:\n  n: four\n"))


def test_bad_enum_value() -> None:
    with pytest.raises(ConfigError, match=r"algorithm.advantage: invalid value 'grp'.*did you mean 'grpo'"):
        load_config(None, ["algorithm.advantage=grp"])


def test_bad_stage_name() -> None:
    with pytest.raises(ConfigError, match=r"filter.name: unknown filter 'nonee'.*did you mean 'none'"):
        load_config(None, ["filter.name=nonee"])


def test_missing_data_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data.source: file 'missing.jsonl' not found"):
        load_config(write(tmp_path, "data:\n  source: missing.jsonl\n"))


def test_unknown_reward_name() -> None:
    with pytest.raises(ConfigError, match=r"reward.functions:.*math_verfy.*math_verify"):
        load_config(None, ["reward.functions=[math_verfy]"])


def test_unimportable_reward_path(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("def f(:\n")
    with pytest.raises(ConfigError, match=r"reward.functions:.*broken.py"):
        load_config(write(tmp_path, "reward:\n  functions: [broken.py:f]\n"))
    with pytest.raises(ConfigError, match=r"reward.functions:.*nothere.py"):
        load_config(write(tmp_path, "reward:\n  functions: [nothere.py:f]\n"))


def test_plugin_reward_relative_to_yaml(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text("def brevity(prompt, completion, answer, metadata):\n    return 1.0\n")
    cfg = load_config(
        write(tmp_path, "reward:\n  functions: [math_verify, {function: mine.py:brevity, weight: 0.5}]\n")
    )
    assert cfg.reward.functions[1]["weight"] == 0.5


def test_overrides_are_typed() -> None:
    assert parse_overrides(["trainer.max_steps=50", "rollout.n=8", "a.b=x"]) == {
        "trainer": {"max_steps": 50},
        "rollout": {"n": 8},
        "a": {"b": "x"},
    }
    cfg = load_config(None, ["trainer.max_steps=50", "rollout.n=8", "rollout.temperature=1"])
    assert cfg.trainer.max_steps == 50 and cfg.rollout.n == 8 and cfg.rollout.temperature == 1.0
    with pytest.raises(ConfigError, match="expected section.key=value"):
        parse_overrides(["rollout.n"])


def test_preset_then_explicit_keys() -> None:
    cfg = load_config(
        None, ["algorithm.preset=dapo", "algorithm.overlong_cache=64", "algorithm.clip_high=0.3"]
    )
    assert (
        cfg.algorithm.clip_high == 0.3
        and cfg.algorithm.agg == "token_mean"
        and cfg.algorithm.overlong_shaping
    )
    with pytest.raises(ConfigError, match="algorithm.preset"):
        load_config(None, ["algorithm.preset=grpoo"])


def test_cross_field_checks() -> None:
    with pytest.raises(ConfigError, match="rollout.max_tokens"):
        load_config(None, ["rollout.max_tokens=2048", "rollout.max_model_len=1024"])
    with pytest.raises(ConfigError, match="overlong_cache"):
        load_config(None, ["algorithm.preset=dapo"])
    with pytest.raises(ConfigError, match="rollout.n: expected int >= 1"):
        load_config(None, ["rollout.n=0"])


def test_unknown_benchmark() -> None:
    with pytest.raises(ConfigError, match=r"evaluation.benchmarks\[0\].*gsm8kk.*gsm8k"):
        load_config(None, ["evaluation.benchmarks=[gsm8kk]"])


def test_shipped_quickstart_config_is_valid() -> None:
    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "configs").glob("*.yaml")):
        load_config(path)


def test_cli_config_check_and_show(tmp_path: Path) -> None:
    bad = write(tmp_path, "rollout:\n  temprature: 0.7\n")
    proc = subprocess.run(
        [sys.executable, "-m", "rlengine.cli", "config", "check", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "did you mean 'temperature'" in proc.stderr
    good = write(tmp_path, "rollout:\n  n: 2\n")
    proc = subprocess.run(
        [sys.executable, "-m", "rlengine.cli", "config", "show", str(good), "trainer.max_steps=7"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "max_steps: 7" in proc.stdout and "n: 2" in proc.stdout


def test_config_reference_is_up_to_date() -> None:
    from rlengine.config_doc import render

    doc = Path(__file__).resolve().parents[1] / "docs" / "config.md"
    assert doc.read_text() == render(), (
        "docs/config.md is stale: python -m rlengine.config_doc > docs/config.md"
    )
    assert "`clip_high`" in doc.read_text() and "`micro_batch_tokens`" in doc.read_text()


def test_an_override_that_changes_a_stage_starts_its_section_afresh(tmp_path) -> None:
    """The YAML's options belong to the stage it named: switching the stage from the command line
    drops them (before, ``reward_weighting.name=static`` on the gradient example was refused for
    ``every_n_steps``); keeping the stage keeps them, and options of the new stage still apply."""
    example = ROOT / "examples" / "multi_objective" / "config.yaml"
    static = load_config(example, ["reward_weighting.name=static"])
    assert static.reward_weighting.name == "static"
    gradient = load_config(example, ["reward_weighting.name=gradient"])
    assert (
        gradient.reward_weighting.every_n_steps == 1 and gradient.reward_weighting.layers == 2
    )  # the YAML's
    hv = load_config(example, ["reward_weighting.name=hypervolume", "reward_weighting.every_n_steps=3"])
    assert hv.reward_weighting.name == "hypervolume" and hv.reward_weighting.every_n_steps == 3
    with pytest.raises(ConfigError, match="unknown key 'curriculum.tau'"):
        load_config(ROOT / "configs" / "arith_pcl.yaml", ["curriculum.name=uniform", "curriculum.tau=0.3"])
