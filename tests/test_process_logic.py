"""Pure parts of process handling, without Ray: the SIGTERM flag, Ctrl-C shielding, actor log tails
and the failure message's step prefix. The real-stack behaviour is in tests/test_interrupts.py."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from rlengine import actors
from rlengine.errors import ActorFailure
from rlengine.interrupts import StopOnSignal, interrupted_message, sigint_ignored


def test_sigterm_only_sets_a_flag_while_active_and_the_old_handler_returns() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with StopOnSignal() as stop:
        assert stop.received is None
        os.kill(os.getpid(), signal.SIGTERM)  # would end pytest without the handler
        assert stop.received == "SIGTERM"
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.received == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_ctrl_c_is_ignored_only_inside_the_block() -> None:
    with sigint_ignored():
        os.kill(os.getpid(), signal.SIGINT)  # would raise KeyboardInterrupt otherwise
        time.sleep(0.2)
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # the interrupt arrives here at the latest
    assert "continue with: rlengine train runs/x" in interrupted_message(4, "runs/x")


def test_log_tail_quotes_the_last_lines_of_that_process_only(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "worker-aa-01000000-123.err").write_text("\n".join(f"err {i}" for i in range(40)) + "\n")
    (tmp_path / "worker-aa-01000000-123.out").write_text("out 1\n\nout 2\n")
    (tmp_path / "worker-bb-01000000-1234.err").write_text("another process\n")
    monkeypatch.setattr(actors, "ray_log_dir", lambda: tmp_path)
    tail = actors.log_tail(123, lines=3)
    assert "err 37\nerr 38\nerr 39" in tail and "err 36" not in tail
    assert "out 1\nout 2" in tail and "another process" not in tail
    assert tail.index("err 39") < tail.index("out 1")  # stderr first
    assert "no log lines for pid 99" in actors.log_tail(99)
    assert "process id is unknown" in actors.log_tail(None)


def test_failure_gets_the_step_and_keeps_its_kind() -> None:
    failure = ActorFailure(
        "rollout engine 1 (pid 7) died during generation", actor="rollout engine 1", reason="died"
    )
    stepped = failure.at_step(12)
    assert str(stepped) == "step 12: rollout engine 1 (pid 7) died during generation"
    assert (stepped.actor, stepped.reason) == ("rollout engine 1", "died")
