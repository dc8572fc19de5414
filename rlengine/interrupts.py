"""Stopping a run from outside: SIGTERM from a scheduler, Ctrl-C from a person.

* **SIGTERM** (Slurm, Kubernetes, ``kill``): :class:`StopOnSignal` only records it. The step in
  progress finishes, a checkpoint is written, and :class:`RunStopped` ends the run (the CLI exits
  with 143, the usual code for SIGTERM). A scheduler's grace period must therefore cover one step:
  with Slurm, ask for the signal early, e.g. ``#SBATCH --signal=B:TERM@300``.
* **Ctrl-C** (SIGINT) stops at once with ``KeyboardInterrupt``: nothing is written after the newest
  checkpoint, the actors are stopped (a second Ctrl-C is ignored meanwhile) and the CLI exits
  with 130.

A leaf module: it imports nothing from rlengine.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


class RunStopped(RuntimeError):
    """The run stopped on a signal after writing a checkpoint (see the module docstring)."""


class StopOnSignal:
    """While active (``with``), SIGTERM sets :attr:`received` instead of killing the process.

    Outside the main thread no handler can be installed, and SIGTERM keeps its default effect.
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = (signal.SIGTERM,)) -> None:
        self.signals = signals
        self.received: str | None = None
        """Name of the first signal received (``"SIGTERM"``), or None."""
        self._previous: dict[signal.Signals, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]
        self._previous = {}


def interrupted_message(step: int, run_dir: object) -> str:
    """What Ctrl-C prints: what is lost and how to continue."""
    return (
        f"\nrlengine: interrupted during step {step}; stopping the actors. Steps after the newest "
        f"checkpoint in {run_dir}/checkpoints are lost; continue with: rlengine train {run_dir}"
    )


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """Ignore Ctrl-C meanwhile (while actors are being stopped after the first one)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
