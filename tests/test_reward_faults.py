"""Faulty rewards on the real stack, and the range checks of the time limits (issue 13).

One real training step (tiny random model, vLLM, DeepSpeed, Ray, the reward process pool) with a
working objective next to four faulty ones: it completes, and its metrics count every fault exactly.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from rlengine.config import ConfigError, load_config

FAULTY = """
import math
import os
import time
from pathlib import Path

HANG_SLOTS = Path(__file__).with_name("hang_slots")
HANGS = 2


def raises(prompt, completion, answer, metadata):
    raise RuntimeError("this reward always raises")


def nan(prompt, completion, answer, metadata):
    return math.nan


def hangs(prompt, completion, answer, metadata):
    # The first HANGS calls each claim a slot file and sleep past reward.timeout_s (so they are
    # killed and never re-run); every other call returns 1.0. Exact count, whatever the completions.
    for k in range(HANGS):
        try:
            os.close(os.open(HANG_SLOTS / f"slot{k}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        time.sleep(3600)
    return 1.0
"""

BLOCKS_IN_WORKERS = """
import multiprocessing
import time

if multiprocessing.parent_process() is not None:  # only inside the reward pool's workers
    time.sleep(10**6)


def blocked(prompt, completion, answer, metadata):
    return 1.0
"""

HANGS = 2
"""Calls of ``hangs`` that hang (the ``HANGS`` of the plug-in above)."""


@pytest.mark.slow
def test_training_step_with_faulty_rewards_completes_with_exact_counts(
    tiny_model_dir: str, ray_session, tmp_path: Path
) -> None:
    """even_length works; ``raises`` raises and ``nan`` returns NaN on every call, ``hangs`` sleeps
    past ``reward.timeout_s`` on its first two calls, and ``blocked``'s file never finishes
    importing in a worker. The step completes; the faults are counted exactly."""
    from rlengine.trainer import Trainer
    from tests.conftest import tiny_run_overrides

    faulty, blocked = tmp_path / "faulty_rewards.py", tmp_path / "blocks_in_workers.py"
    faulty.write_text(FAULTY)
    blocked.write_text(BLOCKS_IN_WORKERS)
    (tmp_path / "hang_slots").mkdir()
    cfg = load_config(
        None,
        [
            *tiny_run_overrides(
                tiny_model_dir,
                tmp_path / "run",
                f"{faulty}:raises",
                f"{faulty}:hangs",
                f"{faulty}:nan",
                f"{blocked}:blocked",
            ),
            "reward.timeout_s=1",
            "reward.import_timeout_s=2",
            "reward.max_failure_fraction=1.0",
            "trainer.max_steps=1",
        ],
    )
    trainer = Trainer.from_config(cfg)
    completions: list[str] = []
    finish = trainer.rollouts.finish

    def recording_finish(submitted):  # the real rollouts; keeps what they generated
        groups = finish(submitted)
        completions.extend(e.text for g in groups for e in g.episodes)
        return groups

    trainer.rollouts.finish = recording_finish
    try:
        with pytest.warns(RuntimeWarning, match="blocks_in_workers.py did not finish importing"):
            history = trainer.fit()
    finally:
        trainer.close()

    assert len(history) == 1 and history[0]["step"] == 1
    metrics = history[0]
    calls = 4 * 4  # trainer.batch_size x rollout.n, one call per response and objective
    assert len(completions) == metrics["rollouts/generated"] == calls
    assert metrics["reward/errors"] == 3 * calls  # raises, nan and blocked fail on every call
    assert metrics["reward/timeouts"] == HANGS
    assert metrics["reward/failure_fraction"] == pytest.approx((3 * calls + HANGS) / (5 * calls))
    even = sum(len(c) % 2 == 0 for c in completions) / calls
    assert metrics["reward/even_length/mean"] == pytest.approx(even)
    assert metrics["reward/hangs/mean"] == pytest.approx((calls - HANGS) / calls)
    for name in ("raises", "nan", "blocked"):
        assert metrics[f"reward/{name}/mean"] == 0.0, name
    assert math.isfinite(metrics["reward/mean"])
    assert sorted(p.name for p in (tmp_path / "hang_slots").iterdir()) == ["slot0", "slot1"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("reward.import_timeout_s=0", "reward.import_timeout_s: expected float > 0, got 0.0"),
        ("reward.import_timeout_s=-5", "reward.import_timeout_s: expected float > 0, got -5.0"),
        ("trainer.actor_timeout_s=0", "trainer.actor_timeout_s: expected float > 0, got 0.0"),
        ("trainer.actor_timeout_s=-1.5", "trainer.actor_timeout_s: expected float > 0, got -1.5"),
    ],
)
def test_time_limits_must_be_positive(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    assert str(error.value) == message
