"""Waiting on Ray actors without ever hanging.

Every wait on a rollout engine, a learner rank or a hosted model goes through :func:`wait_all`:
it has a deadline (``trainer.actor_timeout_s``), and an actor that dies or does not answer in
time becomes an :class:`ActorFailure` that names the actor, what it was doing, its process id and
the last lines of its log. The trainer adds the step. An exception raised *inside* an actor method
is not a failure of the actor: it reaches the caller unchanged, with its traceback.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError

from rlengine.errors import ActorFailure

DEFAULT_TIMEOUT_S = 1800.0
"""Deadline of a wait where no ``trainer.actor_timeout_s`` is at hand (the config default)."""

LOG_LINES = 15
"""Lines of an actor's log quoted in an :class:`ActorFailure`."""


@dataclass(frozen=True)
class Process:
    """Who an actor is, as its ``ready()`` reports it on start-up (:func:`this_process`)."""

    pid: int
    logs: tuple[str, ...] = ()
    """The files its stderr and stdout go to (Ray's ``worker-*.err`` / ``.out``), stderr first."""


def this_process() -> Process:
    """This process's id and the files its stderr and stdout are written to: what every actor's
    ``ready()`` returns, so the driver can name it and quote its log without Ray internals."""
    logs: list[str] = []
    for fd in (2, 1):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # not Linux, or the descriptor is closed
            continue
        if os.path.isfile(target) and target not in logs:
            logs.append(target)
    return Process(os.getpid(), tuple(logs))


@dataclass
class Actor:
    """A Ray actor handle with the name errors use, and its process once it has started."""

    handle: Any
    name: str
    process: Process | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


def log_tail(process: Process | None, lines: int = LOG_LINES) -> str:
    """The last ``lines`` non-empty lines of each of ``process``'s log files (stderr first)."""
    if process is None:
        return "(no log: the process never reported ready)"
    tails = []
    for path in process.logs:
        try:
            text = Path(path).read_text(errors="replace").splitlines()
        except OSError:
            continue
        kept = [line for line in text if line.strip()][-lines:]
        if kept:
            tails.append(f"--- {path} (last {len(kept)} lines)\n" + "\n".join(kept))
    return "\n".join(tails) if tails else f"(no log lines for pid {process.pid})"


def describe(actor: Actor) -> str:
    pid = actor.pid
    return f"{actor.name} (pid {pid})" if pid is not None else actor.name


def wait_all(calls: list[tuple[Actor, ray.ObjectRef]], *, what: str, timeout_s: float) -> list[Any]:
    """Results of ``calls`` (one ``(actor, ref)`` each), in order, waiting at most ``timeout_s``.

    Raises:
        ActorFailure: an actor died (raised as soon as it is seen), or some call had not finished
            when the deadline passed (it names every actor still working).
    """
    deadline = time.monotonic() + timeout_s
    pending = {ref: index for index, (_, ref) in enumerate(calls)}
    results: list[Any] = [None] * len(calls)
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            late = [calls[index][0] for index in pending.values()]
            names = ", ".join(describe(actor) for actor in late)
            logs = "\n".join(log_tail(actor.process) for actor in late)
            raise ActorFailure(
                f"{names} did not finish {what} within {timeout_s:g} s (trainer.actor_timeout_s); "
                f"it may be hung or far slower than expected. Its last log lines:\n{logs}",
                actor=late[0].name,
                reason="timeout",
            )
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=min(remaining, 5.0))
        for ref in ready:
            index = pending.pop(ref)
            try:
                results[index] = ray.get(ref)
            except RayActorError as exc:
                actor = calls[index][0]
                raise ActorFailure(
                    f"{describe(actor)} died during {what}: {str(exc).splitlines()[0][:300]}\n"
                    f"Its last log lines:\n{log_tail(actor.process)}",
                    actor=actor.name,
                    reason="died",
                ) from exc
    return results


def wait_one(actor: Actor, ref: ray.ObjectRef, *, what: str, timeout_s: float) -> Any:
    """:func:`wait_all` for a single call."""
    return wait_all([(actor, ref)], what=what, timeout_s=timeout_s)[0]


def wait_started(actors: list[Actor], *, timeout_s: float) -> None:
    """Wait for every actor's ``ready()`` and keep the :class:`Process` it reports."""
    for actor, process in zip(actors, call_all(actors, "ready", what="start-up", timeout_s=timeout_s)):
        actor.process = process


def call_all(
    actors: list[Actor], method: str, arguments: list[tuple] | None = None, *, what: str, timeout_s: float
) -> list[Any]:
    """Call ``method`` on every actor (with ``arguments[i]`` for actor i; default none) and
    :func:`wait_all` for the results."""
    arguments = arguments if arguments is not None else [()] * len(actors)
    calls = [(actor, getattr(actor.handle, method).remote(*args)) for actor, args in zip(actors, arguments)]
    return wait_all(calls, what=what, timeout_s=timeout_s)
