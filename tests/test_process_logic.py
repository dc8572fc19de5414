"""Pure parts of process handling, without Ray: the SIGTERM flag, Ctrl-C shielding, actor log tails
and the failure message's step prefix. The real-stack behaviour is in tests/test_interrupts.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from rlengine import actors
from rlengine.errors import ActorFailure
from rlengine.interrupts import StopOnSignal, interrupted_message, sigint_ignored

ROOT = Path(__file__).resolve().parent.parent


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
    # Python's own Ctrl-C handler, as in a terminal (a background job starts with SIGINT ignored)
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        ctrl_c_is_ignored_only_inside_the_block()
    finally:
        signal.signal(signal.SIGINT, outer)


def ctrl_c_is_ignored_only_inside_the_block() -> None:
    with sigint_ignored():
        os.kill(os.getpid(), signal.SIGINT)  # would raise KeyboardInterrupt otherwise
        time.sleep(0.2)
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # the interrupt arrives here at the latest
    assert "continue with: rlengine train runs/x" in interrupted_message(4, "runs/x")


def test_log_tail_quotes_the_last_lines_of_that_process_only(tmp_path: Path) -> None:
    err, out = tmp_path / "worker-aa-01000000-123.err", tmp_path / "worker-aa-01000000-123.out"
    err.write_text("\n".join(f"err {i}" for i in range(40)) + "\n")
    out.write_text("out 1\n\nout 2\n")
    (tmp_path / "worker-bb-01000000-1234.err").write_text("another process\n")
    tail = actors.log_tail(actors.Process(123, (str(err), str(out))), lines=3)
    assert "err 37\nerr 38\nerr 39" in tail and "err 36" not in tail
    assert "out 1\nout 2" in tail and "another process" not in tail
    assert tail.index("err 39") < tail.index("out 1")  # stderr first
    assert "no log lines for pid 99" in actors.log_tail(actors.Process(99, (str(tmp_path / "gone.err"),)))
    assert "never reported ready" in actors.log_tail(None)


def test_a_process_reports_the_files_its_output_goes_to(tmp_path: Path) -> None:
    """What an actor's ready() returns: its pid, and its stderr then stdout file (Ray points both at
    the worker's log files); a terminal or a pipe is no log file."""
    script = (
        "import json, sys; from rlengine.actors import this_process; p = this_process(); "
        "print('ERR', file=sys.stderr); sys.stderr.flush(); json.dump([p.pid, list(p.logs)], sys.__stdout__)"
    )
    err, out = tmp_path / "w.err", tmp_path / "w.out"
    with open(err, "w") as e, open(out, "w") as o:
        proc = subprocess.run([sys.executable, "-c", script], stdout=o, stderr=e, cwd=ROOT, check=True)
    pid, logs = json.loads(out.read_text())
    assert pid != os.getpid() and logs == [str(err), str(out)]
    assert actors.log_tail(actors.Process(pid, tuple(logs))).startswith(f"--- {err} (last 1 lines)\nERR")
    piped = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    assert json.loads(piped.stdout)[1] == [] and proc.returncode == 0


def test_failure_gets_the_step_and_keeps_its_kind() -> None:
    failure = ActorFailure(
        "rollout engine 1 (pid 7) died during generation", actor="rollout engine 1", reason="died"
    )
    stepped = failure.at_step(12)
    assert str(stepped) == "step 12: rollout engine 1 (pid 7) died during generation"
    assert (stepped.actor, stepped.reason) == ("rollout engine 1", "died")


def test_ray_private_switch_is_set_only_on_a_ray_known_to_have_it() -> None:
    """init_ray's one private Ray attribute is version-guarded: outside the tested range, or where
    the attribute is gone, it stops with a message naming the version, instead of letting Ray's
    servers listen on every interface."""
    import ray
    import ray._private.ray_constants as ray_constants

    from rlengine.runtime import single_machine_mode

    switch = SimpleNamespace(ENABLE_RAY_CLUSTER=True)
    single_machine_mode("2.60.0", switch)
    assert switch.ENABLE_RAY_CLUSTER is False
    for version, constants in (("2.61.0", SimpleNamespace(ENABLE_RAY_CLUSTER=True)), ("2.39.1", switch), ("2.50.0", object())):
        with pytest.raises(RuntimeError, match=f"Ray {version}: .*known to work on Ray 2.40–2.60 only"):
            single_machine_mode(version, constants)
    single_machine_mode(ray.__version__, ray_constants)  # the installed Ray is one of them
    assert ray_constants.ENABLE_RAY_CLUSTER is False
