"""Bad input, table-driven: every mistake is a ConfigError raised while the config is built (so by
``rlengine config check`` and before ``train`` starts anything), naming the key and what was
expected, with the closest valid name where there is one."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlengine.cli import main
from rlengine.config import load_config
from rlengine.errors import ConfigError

BAD_OVERRIDES = [
    # (overrides, a regex the message must match)
    (["rollout.n=1"], r"rollout.n: 1 response per prompt with algorithm.advantage grpo.*rollout.n >= 2"),
    (["rollout.n=1", "algorithm.advantage=rloo"], r"rollout.n: 1 .* rloo"),
    (["rollout.n=0"], r"rollout.n: expected int >= 1, got 0"),
    (["algorithm.clip_low=1.5"], r"clip_low .*ppo.*must be <= 1, got 1.5"),
    (["algorithm.clip_low=-0.1"], r"algorithm.clip_low: expected float >= 0, got -0.1"),
    (["algorithm.clip_high=-1"], r"algorithm.clip_high: expected float >= 0, got -1.0"),
    (["algorithm.clip_high=.inf"], r"algorithm.clip_high: expected a finite number, got inf"),
    (["learner.lr=.nan"], r"learner.lr: expected a finite number, got nan"),
    (
        ["algorithm.preset=dapo", "algorithm.overlong_cache=64", "algorithm.loss=bapo"],
        r"bapo: clip_low/clip_high are ratio bounds",
    ),
    (["algorithm.dual_clip=0.5"], r"dual_clip must be a finite number > 1"),
    (["algorithm.loss=cispo", "algorithm.dual_clip=3.0"], r"cispo: dual_clip does not apply"),
    (
        ["algorithm.loss=bapo", "algorithm.bapo_max_low=0.5"],
        r"algorithm.bapo_max_low: expected a value in \[clip_low = 0.6, 1\]",
    ),
    (
        ["algorithm.loss=bapo", "algorithm.bapo_max_high=1.0"],
        r"algorithm.bapo_max_high: expected a value >= clip_high = 1.2",
    ),
    (
        ["algorithm.loss=bapo", "algorithm.bapo_target=1.0"],
        r"algorithm.bapo_target: expected float in \(0, 1\)",
    ),
    (["algorithm.kl_coef=-0.1"], r"algorithm.kl_coef: expected float >= 0, got -0.1"),
    (["algorithm.tis_cap=0"], r"algorithm.tis_cap: expected float > 0, got 0"),
    (["algorithm.entropy_coef=-1"], r"algorithm.entropy_coef: expected float >= 0"),
    (["algorithm.overlong_shaping=true"], r"algorithm.overlong_cache: overlong_shaping needs"),
    (
        ["algorithm.overlong_shaping=true", "algorithm.overlong_cache=9999"],
        r"overlong_cache \(9999\) must be <= rollout.max_tokens",
    ),
    (["algorithm.advantage=grpo2"], r"algorithm.advantage: .*grpo2"),
    (
        ["learner.mini_batch_size=1000"],
        r"learner.mini_batch_size: 1000 responses per optimizer step, but a step has only",
    ),
    (["learner.betas=[1.5]"], r"learner.betas\[0\]: expected float in \[0, 1\), got 1.5"),
    (["learner.betas=[0.9]"], r"learner.betas: expected two AdamW betas in \[0, 1\)"),
    (["learner.betas=[0.9,1.0]"], r"learner.betas"),
    (["learner.lr=-1.0"], r"learner.lr: expected float >= 0, got -1.0"),
    (["learner.lr=1e-6"], r"learner.lr: expected float, got '1e-6' \(str\).*write 1.0e-6"),
    (["learner.grad_clip=-1.0"], r"learner.grad_clip"),
    (["learner.min_lr_ratio=2.0"], r"learner.min_lr_ratio: expected float in \[0, 1\], got 2.0"),
    (["learner.num_ranks=0"], r"learner.num_ranks: expected int >= 1"),
    (["learner.ppo_epochs=0"], r"learner.ppo_epochs"),
    (["learner.zero_stage=4"], r"learner.zero_stage"),
    (
        ["rollout.placement=colocated", "rollout.num_engines=2", "learner.num_ranks=1"],
        r"learner.num_ranks \(1\) must equal rollout.num_engines x rollout.tensor_parallel_size "
        r"\(2 x 1 = 2\)",
    ),
    (
        ["rollout.weight_sync=nccl", "rollout.placement=colocated"],
        r"weight_sync: nccl needs rollout.placement: split",
    ),
    (["rollout.weight_sync=ipc"], r"rollout.weight_sync: ipc needs rollout.placement: colocated"),
    (
        ["rollout.placement=colocated", "rollout.mode=one_step_off_policy"],
        r"one_step_off_policy overlaps generation with the update.*engines sleep",
    ),
    (["rollout.balance=fastest"], r"rollout.balance: .*'even', 'tokens', 'throughput'"),
    (["rollout.placement=spread"], r"rollout.placement"),
    (["learner.shared_prefix=true", "learner.packing=true"], r"choose one layout"),
    (
        ["learner.micro_batch_tokns=10"],
        r"unknown key 'learner.micro_batch_tokns'.*did you mean 'micro_batch_tokens'",
    ),
    (["evaluation.samples=0"], r"evaluation.samples: expected int >= 1, got 0"),
    (["evaluation.every_n_steps=-1"], r"evaluation.every_n_steps: expected int >= 0, got -1"),
    (["evaluation.max_tokens=0"], r"evaluation.max_tokens"),
    (["evaluation.top_p=0"], r"evaluation.top_p: expected float in \(0, 1\]"),
    (["evaluation.limit=0"], r"evaluation.limit: expected int >= 1"),
    (["evaluation.benchmarks=[gsm8kk]"], r"unknown benchmark 'gsm8kk'.*did you mean 'gsm8k'"),
    (["reward.timeout_s=0"], r"reward.timeout_s: expected float > 0, got 0"),
    (["reward.num_workers=-1"], r"reward.num_workers: expected int >= 0"),
    (["reward.length_momentum=1.0"], r"reward.length_momentum: expected float in \[0, 1\)"),
    (["reward.functions=[math_verfy]"], r"unknown reward function 'math_verfy'.*did you mean 'math_verify'"),
    (
        ["reward.functions=[{function: math_verify, kwargs: {timeout: 3}}]"],
        r"unknown kwarg 'timeout' for the built-in math_verify \(did you mean 'timeout_s'\?\); it takes",
    ),
    (
        ["reward.functions=[{function: format, kwargs: {min_step: 2}}]"],
        r"unknown kwarg 'min_step'.*did you mean 'min_steps'",
    ),
    (
        ["reward.functions=[{function: conciseness, kwargs: {target: 2}}]"],
        r"unknown kwarg 'target' for the built-in conciseness.*it takes: reference",
    ),
    (["reward.functions=[{function: math_verify, wieght: 1}]"], r"unknown key\(s\) \['wieght'\]"),
    (["reward.functions=[math_verify, math_verify]"], r"objective name 'math_verify' is already used"),
    (["rollout.top_p=0"], r"rollout.top_p: expected float in \(0, 1\]"),
    (["rollout.temperature=0"], r"rollout.temperature: expected float > 0"),
    (
        ["rollout.max_tokens=600", "rollout.max_model_len=512"],
        r"rollout.max_tokens \(600\) must be smaller than rollout.max_model_len",
    ),
    (["rollout.num_engines=0"], r"rollout.num_engines"),
    (["trainer.max_steps=0"], r"trainer.max_steps: expected int >= 1, got 0"),
    (["trainer.batch_size=0"], r"trainer.batch_size"),
    (["trainer.max_minutes=0"], r"trainer.max_minutes"),
    (["data.source=gsm8kk"], r"data.source: unknown dataset 'gsm8kk' \(did you mean 'gsm8k'\?\); shipped:"),
    (["data.source=missing.jsonl"], r"data.source: file 'missing.jsonl' not found"),
    (["data.validation_size=-1"], r"data.validation_size: expected int >= 0"),
    (["reward_weighting.name=hypervolume"], r"set data.validation_size"),
    (["reward_weighting.name=gradint"], r"unknown reward_weighting 'gradint'.*did you mean 'gradient'"),
    (
        ["reward_weighting.name=gradient", "reward_weighting.lamda=1.0"],
        r"unknown key 'reward_weighting.lamda'.*did you mean 'lambda'",
    ),
    (
        ["replay.name=recap", "replay.sources=[{name: task, data: gsm8k_train}]"],
        r"replay.sources\[0\].name: expected a unique name other than 'task'",
    ),
    (
        ["replay.name=recap", "replay.sources=[{name: gsm, data: gsm8k_trian}]"],
        r"replay.sources\[0\].data: unknown dataset 'gsm8k_trian'.*did you mean 'gsm8k_train'",
    ),
    (
        ["replay.name=recap", "replay.sources=[{name: gsm, data: gsm8k_train, rewards: {math_verfy: 1.0}}]"],
        r"replay.sources\[0\].rewards: unknown objective 'math_verfy'.*did you mean 'math_verify'",
    ),
    (
        ["replay.name=recap", "replay.sources=[{name: gsm, data: gsm8k_train, kind: sft}]"],
        r"replay.sources\[0\].kind: invalid value 'sft'; allowed: 'rl', 'supervised'",
    ),
    (["replay.name=unifrom"], r"unknown replay 'unifrom'.*did you mean 'uniform'"),
    (["filter.name=balanced", "filter.low=0.9", "filter.high=0.1"], r"filter"),
    (["curriculum.name=pcll"], r"unknown curriculum 'pcll'.*did you mean 'pcl'"),
]


@pytest.mark.parametrize("overrides, message", BAD_OVERRIDES, ids=[" ".join(o) for o, _ in BAD_OVERRIDES])
def test_bad_config_is_rejected_with_a_specific_message(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_the_table_is_large_and_every_shipped_config_still_passes() -> None:
    assert len(BAD_OVERRIDES) >= 60
    root = Path(__file__).resolve().parent.parent
    for path in [*root.glob("configs/*.yaml"), *root.glob("examples/*/config.yaml")]:
        load_config(path)


WRONG_SIGNATURE = """
def two_args(completion, answer):
    return 1.0

def strict(prompt, completion, answer, metadata, scale=1.0):
    return scale
"""


@pytest.mark.parametrize(
    "entry, message",
    [
        ("rewards.py:two_args", r"cannot be called as fn\(prompt, completion, answer, metadata\)"),
        ("{function: rewards.py:strict, kwargs: {scal: 2}}", r"fn\(.*scal=\.\.\.\).*did you mean 'scale'"),
    ],
)
def test_reward_plugin_signature_is_checked(tmp_path: Path, entry: str, message: str) -> None:
    (tmp_path / "rewards.py").write_text(WRONG_SIGNATURE)
    config = tmp_path / "run.yaml"
    config.write_text(f"reward:\n  functions: [{entry}]\n")
    with pytest.raises(ConfigError, match=message):
        load_config(config)
    config.write_text("reward:\n  functions: [{function: rewards.py:strict, kwargs: {scale: 2}}]\n")
    assert load_config(config).reward.functions  # the right kwargs pass


def test_empty_yaml_is_an_error_and_config_check_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="is empty; give at least model and data"):
        load_config(empty)
    assert main(["config", "check", str(empty)]) != 0
    assert "is empty" in capsys.readouterr().err


# ---------------------------------------------------------------- bad data files

GOOD_ROW = '{"problem": "What is 2 + 3?", "answer": "5"}\n'

BAD_DATA = [
    # (case, prompts.jsonl content (None: no file), a regex the message must match; FILE is its path)
    (
        "not JSON",
        GOOD_ROW + '{"problem": "What is 1 + 1?", "answer": 2\n',
        r"FILE:2: invalid JSON \(Expecting ',' delimiter at column 42\); expected one JSON object per line",
    ),
    (
        "no problem field",
        GOOD_ROW + '\n{"question": "What is 1 + 1?", "answer": "2"}\n',  # a blank line 2
        r"FILE:3: problem field 'problem' not found; fields present: \['question', 'answer'\]\. "
        r"Closest: 'question' \(set problem_field='question'\)",
    ),
    (
        "no answer field",
        GOOD_ROW * 2 + '{"problem": "What is 1 + 1?", "final": "2"}\n',
        r"FILE:3: answer field 'answer' not found; fields present: \['problem', 'final'\]",
    ),
    (
        "prompt not a string",
        GOOD_ROW + '{"problem": 42, "answer": "42"}\n',
        r"FILE:2: 'problem' must be the problem text, a non-empty string; got 42 \(number\)",
    ),
    ("empty file", "\n  \n", r"FILE: the file is empty \(no rows\); expected one JSON object per line"),
    ("no such file", None, r"data.source: file 'prompts.jsonl' not found \(tried prompts.jsonl, FILE\)"),
    (
        "null answer",
        GOOD_ROW + '{"problem": "What is 1 + 1?", "answer": null}\n',
        r"FILE:2: empty 'answer' \(got null\); expected the reference answer, a non-empty string or a number",
    ),
    (
        "not an object",
        '["What is 1 + 1?", "2"]\n',
        r"FILE:1: expected a JSON object per line .* got a JSON array",
    ),
    ("not UTF-8", GOOD_ROW + '{"problem": "caf\xe9", "answer": "1"}\n', r"FILE:2: not UTF-8 text"),
]
"""Bad prompt files. Every one is reported with the file, the 1-based line and what was expected."""


def write_prompts(path: Path, content: str | None) -> None:
    """``content`` as ``path`` (latin-1, so that ``\xe9`` is not UTF-8); None: no file at all."""
    if content is not None:
        path.write_bytes(content.encode("latin-1"))


@pytest.fixture
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make starting Ray an error (``ray.init`` and both names of ``init_ray``); vLLM engines and
    learner ranks are Ray actors, so nothing else can start either."""
    import ray

    import rlengine.build
    import rlengine.runtime

    started: list[str] = []

    def refuse(*args: object, **kwargs: object) -> None:
        started.append("ray")
        raise AssertionError("Ray was started before the bad data was reported")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(rlengine.runtime, "init_ray", refuse)
    monkeypatch.setattr(rlengine.build, "init_ray", refuse)
    return started


@pytest.mark.parametrize("content, message", [c[1:] for c in BAD_DATA], ids=[c[0] for c in BAD_DATA])
def test_bad_data_file_is_reported_before_anything_starts(
    tmp_path: Path,
    tiny_model_dir: str,
    nothing_starts: list[str],
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    message: str,
) -> None:
    """``rlengine train`` with ``data.source`` a bad JSONL file beside the config: exit code 2 and
    one message naming the file, the line and what was expected, before Ray starts."""
    import re

    prompts = tmp_path / "prompts.jsonl"
    write_prompts(prompts, content)
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: {{name: {tiny_model_dir}}}\ndata: {{source: prompts.jsonl}}\n"
        f"trainer: {{output_dir: {tmp_path / 'run'}}}\n"
    )
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert re.search(message.replace("FILE", re.escape(str(prompts))), err), err
    assert "Traceback" not in err and not nothing_starts


@pytest.mark.parametrize(
    "content, message", [c[1:] for c in BAD_DATA if c[1]], ids=[c[0] for c in BAD_DATA if c[1]]
)
def test_lazy_data_reports_the_same_line(tmp_path: Path, content: str, message: str) -> None:
    """With ``data.lazy`` a row is checked when it is read, with the same file and line."""
    import re

    from rlengine.data import load_prompt_source
    from rlengine.errors import DataError

    prompts = tmp_path / "prompts.jsonl"
    write_prompts(prompts, content)
    with pytest.raises(DataError, match=message.replace("FILE", re.escape(str(prompts)))):
        list(load_prompt_source(str(prompts), lazy=True))


@pytest.mark.parametrize("command", ["train", "eval"])
def test_bad_evaluation_file_is_reported_before_anything_starts(
    tmp_path: Path,
    tiny_model_dir: str,
    nothing_starts: list[str],
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    """A bad benchmark file: in ``evaluation.benchmarks`` of a run that evaluates (checked when
    the data is loaded, not at the first evaluation), and in ``rlengine eval --benchmarks``."""
    bench = tmp_path / "bench.jsonl"
    bench.write_text(GOOD_ROW + '{"problem": "What is 1 + 1?", "answer": null}\n')
    if command == "train":
        config = tmp_path / "run.yaml"
        config.write_text(
            f"model: {{name: {tiny_model_dir}}}\ndata: {{source: synthetic_arithmetic}}\n"
            f"evaluation: {{every_n_steps: 1, benchmarks: [gsm8k, bench.jsonl]}}\n"
            f"trainer: {{output_dir: {tmp_path / 'run'}}}\n"
        )
        argv = ["train", str(config)]
        prefix = "evaluation.benchmarks[1]: "
    else:
        argv = [
            "eval",
            "--model",
            tiny_model_dir,
            "--benchmarks",
            f"gsm8k,{bench}",
            "--output",
            str(tmp_path),
        ]
        prefix = ""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{prefix}{bench}:2: empty 'answer' (got null)" in err, err
    assert "Traceback" not in err and not nothing_starts


# ---------------------------------------------------------------- plug-ins

PLUGIN_STAGE = """
from dataclasses import dataclass

@dataclass
class MineConfig:
    pass

class Mine:
    config_class = MineConfig
    def __init__(self, config, context): ...
    def select(self, num_prompts): return []
    def observe(self, prompts, pass_rates): return {}
    def state_dict(self): return {}
    def load_state_dict(self, state): ...
"""


def test_a_plugin_beside_the_config_wins_over_one_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative ``file.py:Name`` is looked up beside the YAML file first, then in the current
    directory; the first that exists is the one imported."""
    from rlengine.plugins import load_object

    configs, cwd = tmp_path / "configs", tmp_path / "cwd"
    configs.mkdir()
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for folder, score in ((configs, 1.0), (cwd, 2.0)):
        (folder / "rewards.py").write_text(
            f"def score(prompt, completion, answer, metadata):\n    return {score}\n"
        )
    (configs / "stages.py").write_text(PLUGIN_STAGE)
    (cwd / "stages.py").write_text("Mine = 'the one in the current directory'\n")
    config = configs / "run.yaml"
    config.write_text("reward: {functions: [rewards.py:score]}\ncurriculum: {name: stages.py:Mine}\n")
    assert load_config(config).curriculum.name == "stages.py:Mine"  # the cwd one is not a class
    assert load_object("rewards.py:score", configs)("p", "c", "a", {}) == 1.0
    assert load_object("rewards.py:score", None)("p", "c", "a", {}) == 2.0  # no config file: cwd
    (configs / "stages.py").unlink()
    with pytest.raises(ConfigError, match=r"curriculum.name: 'stages.py:Mine' is not a class"):
        load_config(config)  # only now is the current directory's file used


def test_a_missing_plugin_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    configs = tmp_path / "configs"
    configs.mkdir()
    config = configs / "run.yaml"
    looked = rf"\(looked in: {configs / 'mine.py'}, {tmp_path / 'mine.py'}\)"
    config.write_text("curriculum: {name: mine.py:Mine}\n")
    with pytest.raises(ConfigError, match=rf"curriculum.name: file not found: 'mine.py' {looked}"):
        load_config(config)
    config.write_text("reward: {functions: [mine.py:score]}\n")
    with pytest.raises(ConfigError, match=rf"reward.functions: .*file not found: 'mine.py' {looked}"):
        load_config(config)


def test_only_what_the_config_names_is_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a config imports the named file (and what that file imports), nothing else: no
    folder is scanned, no entry points are read, a file beside the plug-in never shadows an
    installed module, and ``sys.path`` is left as it was (even when the plug-in changes it)."""
    import importlib.metadata
    import sys

    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "rewards.py").write_text(
        "import sys\nimport tabnanny\nimport helper_beside_it\n"
        "sys.path.append('/added/by/the/plugin')\n"
        "def score(prompt, completion, answer, metadata):\n    return helper_beside_it.ONE\n"
    )
    (folder / "helper_beside_it.py").write_text("ONE = 1.0\n")
    for decoy in ("tabnanny.py", "decoy.py", "conftest.py", "__init__.py"):  # shadows / bystanders
        (folder / decoy).write_text("raise RuntimeError('a file the config does not name was imported')\n")
    config = folder / "run.yaml"
    config.write_text("reward: {functions: [rewards.py:score]}\n")

    def no_entry_points(*args: object, **kwargs: object) -> None:
        raise AssertionError("entry points were read")

    monkeypatch.setattr(importlib.metadata, "entry_points", no_entry_points)
    monkeypatch.delitem(sys.modules, "tabnanny", raising=False)  # so the import really looks
    monkeypatch.delitem(sys.modules, "helper_beside_it", raising=False)
    path_before = list(sys.path)
    load_config(config)
    assert sys.path == path_before
    from_folder = sorted(
        Path(m.__file__).name
        for m in list(sys.modules.values())
        if getattr(m, "__file__", None) and Path(m.__file__).parent == folder
    )
    assert from_folder == ["helper_beside_it.py", "rewards.py"]
    assert Path(sys.modules["tabnanny"].__file__).parent != folder  # the standard library's


# ---------------------------------------------------------------- run directories


def fake_checkpointed_run(run_dir: Path, *overrides: str) -> None:
    """A run directory as a finished run leaves it: config.yaml and one complete checkpoint."""
    from rlengine.config import dump_yaml

    cfg = load_config(None, [f"trainer.output_dir={run_dir}", *overrides])
    (run_dir / "checkpoints" / "step_2").mkdir(parents=True)
    (run_dir / "checkpoints" / "step_2" / "trainer_state.pt").write_bytes(b"x")
    (run_dir / "config.yaml").write_text(dump_yaml(cfg))


def test_resume_with_nothing_to_resume_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rlengine.resume import checkpoint_to_resume

    cfg = load_config(None, [f"trainer.output_dir={tmp_path / 'run'}", "resume=true"])
    with pytest.raises(
        ConfigError, match="has no complete checkpoint .* nothing to resume; drop resume=true"
    ):
        checkpoint_to_resume(cfg)
    (tmp_path / "run" / "checkpoints" / "step_1.tmp").mkdir(
        parents=True
    )  # an interrupted write does not count
    with pytest.raises(ConfigError, match="nothing to resume"):
        checkpoint_to_resume(cfg)
    assert checkpoint_to_resume(load_config(None, [f"trainer.output_dir={tmp_path / 'fresh'}"])) is None


def test_resume_refuses_changes_the_checkpoint_cannot_continue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rlengine.resume import checkpoint_to_resume

    run = tmp_path / "run"
    fake_checkpointed_run(run, "rollout.n=4")
    saved = (run / "config.yaml").read_text()
    for change, key in (
        ("rollout.n=8", "rollout.n: 4 -> 8"),
        ("model.name=other-model", "model.name"),
        ("learner.zero_stage=3", "learner.zero_stage: 2 -> 3"),
    ):
        assert main(["train", str(run), change]) == 2
        err = capsys.readouterr().err
        assert "resume of" in err and "refused" in err and key in err, err
        assert (run / "config.yaml").read_text() == saved  # the saved config is untouched
    with pytest.warns(UserWarning, match=r"changed config: learner.lr: 1e-06 -> 2e-06"):
        assert (
            checkpoint_to_resume(
                load_config(
                    run / "config.yaml", [f"trainer.output_dir={run}", "resume=true", "learner.lr=2.0e-6"]
                )
            )
            == run / "checkpoints" / "step_2"
        )
    with pytest.raises(FileExistsError, match="already has checkpoints .* pass resume=true"):
        checkpoint_to_resume(load_config(None, [f"trainer.output_dir={run}"]))
    assert main(["config", "check", str(run), "rollout.n=8"]) == 2  # config check sees it too
    assert "refused" in capsys.readouterr().err


# ---------------------------------------------------------------- command line


@pytest.mark.parametrize(
    "argv, message",
    [
        (["eval"], "give --model MODEL"),
        (
            ["eval", "--model", "smollm2-135m-instruct", "--benchmarks", ","],
            "--benchmarks: no benchmark names in ','",
        ),
        (["eval", "--model", "smollm2-135m-instruct", "--benchmarks", "gsm8kk"], "did you mean 'gsm8k'"),
        (["eval", "--model", "no-such-model"], "model 'no-such-model' not found"),
        (["eval", "--model", "smollm2-135m-instruct", "--objectives", "math_verfy"], "--objectives: 'math_verfy'"),
        (
            ["eval", "--compare", "BAD_JSON", "BAD_JSON"],
            "--compare: '.*bad.json' is not an evaluation result",
        ),
        (["eval", "--compare", "NOT_EVAL", "NOT_EVAL"], "no 'benchmarks' key"),
        (
            ["eval", "--model", "smollm2-135m-instruct", "--output", "UNDER_FILE"],
            "--output: cannot create the directory",
        ),
        (
            ["train", "configs/quickstart.yaml", "trainer.output_dir=UNDER_FILE"],
            "trainer.output_dir: cannot create",
        ),
        (["train", "no_such.yaml"], "config file 'no_such.yaml' not found"),
        (["train", "configs/quickstart.yaml", "learner.lr"], "learner.lr"),
        (["config", "check", "configs/quickstart.yaml", "rollout.n=1"], "rollout.n: 1 response per prompt"),
    ],
)
def test_bad_command_line_gets_a_message_not_a_traceback(
    argv: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import re

    root = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(root)
    (tmp_path / "bad.json").write_text("{")
    (tmp_path / "not_eval.json").write_text('{"a": 1}')
    (tmp_path / "a_file").write_text("")
    names = {
        "BAD_JSON": tmp_path / "bad.json",
        "NOT_EVAL": tmp_path / "not_eval.json",
        "UNDER_FILE": tmp_path / "a_file" / "x",
    }
    argv = [next((a.replace(k, str(v)) for k, v in names.items() if k in a), a) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err, err


# ---------------------------------------------------------------- faults during a run


def test_failing_rewards_and_skipped_updates_stop_the_run_with_a_diagnosis(tmp_path: Path) -> None:
    from rlengine.runlog import health_problem
    from tests.test_filter import filter_trainer

    t = filter_trainer(tmp_path, lambda pid: 2)  # the stub rewards report 1 error and 2 timeouts per round
    metrics = t.step()
    assert metrics["reward/failure_fraction"] == pytest.approx(
        3 / 16
    )  # 4 prompts x 4 responses x 1 objective
    ok = dict(max_skipped_steps=3, max_failure_fraction=0.5, reward_messages=[])
    assert health_problem([metrics], **ok) is None
    failing = {**metrics, "reward/failure_fraction": 0.75}
    message = health_problem(
        [failing], **{**ok, "reward_messages": ["reward 'acc' on item 3: ZeroDivisionError"]}
    )
    assert "75% of the reward calls failed" in message and "ZeroDivisionError" in message
    assert "reward.max_failure_fraction = 0.5" in message

    steps = [{"step": i, "learner/skipped_steps": 0.0, "grad_norm": 2.0, "lr": 1e-6} for i in (1, 2)]
    steps += [{"step": i, "learner/skipped_steps": 1.0, "grad_norm": float("nan")} for i in (3, 4)]
    assert health_problem(steps, **ok) is None  # two in a row, the limit is three
    steps.append({"step": 5, "learner/skipped_steps": 1.0})
    message = health_problem(steps, **ok)
    assert message.startswith("steps 3-5: every update was skipped") and "last finite step was 2" in message
    assert health_problem(steps, **{**ok, "max_skipped_steps": 0}) is None  # 0 = never stop
    steps.append({"step": 6, "learner/skipped_steps": 0.5})  # one optimizer step of two went through
    assert health_problem(steps, **ok) is None
