"""Stage interfaces and plug-in stages from user files (config validation, building, YAML round trip)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlengine.config import ConfigError, dump_yaml, load_config
from rlengine.stages import BASES, REGISTRY, Curriculum, Filter, Replay, StageContext, build_stage

PLUGIN = '''
from dataclasses import dataclass


@dataclass
class ReverseConfig:
    every: int = 1
    """Take every n-th row."""


class ReverseCurriculum:
    config_class = ReverseConfig

    def __init__(self, config, context):
        self.rows = list(reversed(context.rows))[:: config.every]
        self.cursor = 0

    def select(self, num_prompts):
        out = [self.rows[(self.cursor + i) % len(self.rows)] for i in range(num_prompts)]
        self.cursor += num_prompts
        return out

    def observe(self, prompts, pass_rates):
        return {"curriculum/cursor": float(self.cursor)}

    def state_dict(self):
        return {"cursor": self.cursor}

    def load_state_dict(self, state):
        self.cursor = state["cursor"]


class NoConfig:
    def select(self, n): ...
    def observe(self, p, r): ...
    def state_dict(self): ...
    def load_state_dict(self, s): ...


@dataclass
class HalfConfig:
    pass


class Half:
    """Only the required method: the base class supplies the rest."""

    config_class = HalfConfig

    def __init__(self, config, context):
        self.rows = context.rows

    def select(self, n):
        return self.rows[:n]


class NoSelect:
    config_class = HalfConfig

    def observe(self, prompts, pass_rates):
        return {}


class BadObserve:
    config_class = HalfConfig

    def select(self, n):
        return []

    def observe(self, prompts):
        return {}


class LateReserve:
    """A replay whose reserve takes an extra required argument the step does not pass."""

    config_class = HalfConfig

    def mix(self, groups, step):
        return groups

    def reserve(self, batch_size, step, margin):
        return 0
'''


@pytest.fixture
def plugin_yaml(tmp_path: Path):
    (tmp_path / "my_stages.py").write_text(PLUGIN)

    def write(section: str) -> Path:
        path = tmp_path / "run.yaml"
        path.write_text(f"curriculum:\n{section}")
        return path

    return write


def test_builtin_stages_satisfy_their_protocol(tiny_model_dir) -> None:
    context = StageContext(
        rows=[{"id": "a", "problem": "p", "answer": "1"}],
        seed=0,
        objectives=["acc"],
        reward_weights=[1.0],
        policy_path=tiny_model_dir,
    )
    cfg = load_config(None)
    extra = {
        "pcl": ["curriculum.value_model.placement=driver"],  # no Ray in this test
        "hypervolume": ["data.validation_size=1"],
    }
    for kind, stages in REGISTRY.items():
        for name in stages:
            config = load_config(None, [f"{kind}.name={name}", *extra.get(name, [])]).__getattribute__(kind)
            stage = build_stage(kind, config, context)
            assert isinstance(stage, BASES[kind]) and type(stage) is stages[name][0], (kind, name)
            assert issubclass(stages[name][0], BASES[kind])  # built-ins derive from their base
    assert not isinstance(build_stage("filter", cfg.filter, context), Curriculum)


def test_plugin_without_the_base_class_gets_its_no_op_hooks(plugin_yaml) -> None:
    """A plug-in with only ``select`` works: observe, state_dict, load_state_dict and close come
    from the Curriculum base, and the step can call each of them directly."""
    cfg = load_config(plugin_yaml("  name: my_stages.py:Half\n"))
    rows = [{"id": str(i)} for i in range(3)]
    stage = build_stage("curriculum", cfg.curriculum, StageContext(rows, 0, ["acc"], [1.0]), cfg.config_dir)
    assert isinstance(stage, Curriculum) and type(stage).__name__ == "Half"
    assert stage.select(2) == rows[:2] and stage.observe(rows, [0.5] * 3) == {}
    assert stage.state_dict() == {} and stage.load_state_dict({}) is None and stage.close() is None
    replay = build_stage("replay", load_config(None).replay, StageContext(rows, 0, ["acc"], [1.0]))
    assert isinstance(replay, Replay) and replay.reserve(8, 0) == 0


def test_plugin_stage_from_a_file_relative_to_the_yaml(plugin_yaml) -> None:
    cfg = load_config(plugin_yaml("  name: my_stages.py:ReverseCurriculum\n  every: 2\n"))
    assert cfg.curriculum.name == "my_stages.py:ReverseCurriculum" and cfg.curriculum.every == 2
    rows = [{"id": str(i)} for i in range(6)]
    stage = build_stage("curriculum", cfg.curriculum, StageContext(rows, 0, ["acc"], [1.0]), cfg.config_dir)
    assert isinstance(stage, Curriculum) and not isinstance(stage, Filter)
    assert [r["id"] for r in stage.select(4)] == ["5", "3", "1", "5"]
    # the resolved config keeps the plug-in's name, so a run directory resumes with the same stage
    text = dump_yaml(cfg)
    assert "name: my_stages.py:ReverseCurriculum" in text and "every: 2" in text


@pytest.mark.parametrize(
    "section, message",
    [
        (
            "  name: my_stages.py:ReverseCurriculum\n  evry: 2\n",
            r"unknown key 'curriculum.evry' \(did you mean 'every'\?\)",
        ),
        (
            "  name: my_stages.py:ReverseCurriculum\n  every: two\n",
            r"curriculum.every: expected int, got 'two'",
        ),
        (
            "  name: my_stages.py:ReverseCurriculm\n",
            r"curriculum.name: .*'ReverseCurriculm' not found .*did you mean 'ReverseCurriculum'",
        ),
        ("  name: nope.py:X\n", r"curriculum.name: file not found: 'nope.py'"),
        ("  name: my_stages.py:NoConfig\n", r"needs a class attribute config_class"),
        ("  name: my_stages.py:NoSelect\n", r"'my_stages.py:NoSelect' lacks select\(\) \(a curriculum implements select,"),
        (
            "  name: my_stages.py:BadObserve\n",
            r"defines observe with a signature the step cannot call as observe\(self, prompts, pass_rates\)",
        ),
        (
            "  name: unifrom\n",
            r"curriculum.name: unknown curriculum 'unifrom' \(did you mean 'uniform'\?\).*my_file.py:MyClass",
        ),
    ],
)
def test_plugin_errors_name_the_key(plugin_yaml, section: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(plugin_yaml(section))


def test_plugin_hook_signature_is_checked_for_optional_hooks_too(tmp_path: Path) -> None:
    (tmp_path / "my_stages.py").write_text(PLUGIN)
    path = tmp_path / "run.yaml"
    path.write_text("replay:\n  name: my_stages.py:LateReserve\n")
    with pytest.raises(ConfigError, match=r"replay.name: .*defines reserve with a signature.*reserve\(self, batch_size, step\)"):
        load_config(path)
