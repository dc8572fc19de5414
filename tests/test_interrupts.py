"""Runs being stopped, on the real stack (tiny model): SIGTERM from a scheduler, Ctrl-C, and
``kill -9`` followed by a resume that matches an uninterrupted run. A rollout engine that dies or
hangs is tested in tests/test_scale_out.py. See docs/reliability.md."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from rlengine.config import load_config
from tests.conftest import tiny_run_overrides

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def metric_lines(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def start_training(run: Path, model_dir: str, *extra: str) -> subprocess.Popen:
    """``rlengine train`` in its own process group (like a job a person or a scheduler started);
    its output goes to ``run``'s sibling ``<name>.out`` / ``<name>.err`` (see :func:`finish`)."""
    config = run.parent / f"{run.name}.yaml"
    config.write_text("trainer:\n  seed: 0\n")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    with open(run.parent / f"{run.name}.out", "w") as out, open(run.parent / f"{run.name}.err", "w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "rlengine.cli", "train", str(config)]
            + [*tiny_run_overrides(model_dir, run), *extra],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=err,
            start_new_session=True,
            # a job started from a terminal has Ctrl-C at its default even when pytest itself runs in
            # a background job (which starts with SIGINT ignored, and Python keeps it ignored)
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def finish(proc: subprocess.Popen, run: Path, timeout_s: float, what: str) -> str:
    """Wait for the process (failing the test after ``timeout_s``); returns its stderr."""
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        pytest.fail(f"{what} did not stop the run within {timeout_s:g} s")
    return (run.parent / f"{run.name}.err").read_text()


def wait_until(predicate, proc: subprocess.Popen, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"training exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            kill_tree(proc)
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the process and everything it started (Ray, engines, reward workers)."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True) + [psutil.Process(proc.pid)]
    except psutil.NoSuchProcess:
        family = []
    for p in family:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=30)


def test_sigterm_writes_a_checkpoint_and_ctrl_c_stops_cleanly(tiny_model_dir, tmp_path) -> None:
    run = tmp_path / "term"
    proc = start_training(run, tiny_model_dir, "trainer.max_steps=50")
    wait_until(lambda: len(metric_lines(run)) >= 1, proc, 240, "the first step")
    proc.send_signal(signal.SIGTERM)
    err = finish(proc, run, 180, "SIGTERM")
    assert proc.returncode == 143, err[-3000:]
    steps = len(metric_lines(run))
    assert "SIGTERM received: stopped after step" in err and "Traceback" not in err
    assert (run / "checkpoints" / f"step_{steps}" / "trainer_state.pt").is_file()

    # Ctrl-C in a terminal reaches the whole foreground process group
    run = tmp_path / "int"
    proc = start_training(run, tiny_model_dir, "trainer.max_steps=50")
    wait_until(lambda: len(metric_lines(run)) >= 1, proc, 240, "the first step")
    family = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGINT)
    err = finish(proc, run, 90, "Ctrl-C")
    assert proc.returncode == 130, err[-3000:]
    assert "rlengine: interrupted during step" in err and "Traceback" not in err
    time.sleep(5)
    alive = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [p.cmdline()[:3] for p in alive]


def test_kill_9_then_resume_matches_an_uninterrupted_run(tiny_model_dir, ray_session, tmp_path) -> None:
    from safetensors.torch import load_file

    from rlengine.trainer import train

    plan = ("trainer.max_steps=4", "trainer.save_every=1", "trainer.keep_last=4")
    straight = tmp_path / "straight"
    train(load_config(None, [*tiny_run_overrides(tiny_model_dir, straight), *plan]))

    killed = tmp_path / "killed"
    proc = start_training(killed, tiny_model_dir, *plan)
    wait_until(lambda: (killed / "checkpoints" / "step_2").is_dir(), proc, 300, "step 2's checkpoint")
    kill_tree(proc)  # kill -9, whatever it was doing (usually step 3, or writing step_3.tmp)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "checkpoints" / "step_4").exists()

    resumed = train(load_config(None, [*tiny_run_overrides(tiny_model_dir, killed), *plan, "resume=true"]))
    assert resumed[0]["step"] >= 3 and resumed[-1]["step"] == 4
    expected = {m["step"]: m for m in metric_lines(straight)}
    for m in resumed:
        for key in ("reward/mean", "tokens/generated", "pass_rate/mean", "loss/policy", "grad_norm"):
            assert m[key] == pytest.approx(expected[m["step"]][key], rel=1e-5, abs=1e-7), (m["step"], key)
    a = load_file(str(straight / "checkpoints/step_4/model/model.safetensors"))
    b = load_file(str(killed / "checkpoints/step_4/model/model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    state_a = torch.load(straight / "checkpoints/step_4/trainer_state.pt", weights_only=False)
    state_b = torch.load(killed / "checkpoints/step_4/trainer_state.pt", weights_only=False)
    assert state_a["step"] == state_b["step"] == 4 and state_a["stages"] == state_b["stages"]
