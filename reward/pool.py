"""A small process pool that scores completions with reward functions, with error and timeout containment.

Why not threads or ``concurrent.futures``: math-verify times out with ``signal.alarm`` (main thread
only), and a hung call can only be stopped by killing its process, which executors cannot do.

Design:

* ``num_workers`` processes from a ``forkserver`` context (``spawn`` elsewhere; never ``fork``: the
  parent may hold Ray/vLLM/torch threads). Each worker loads the reward functions itself from the specs.
  Workers stay alive between :meth:`RewardPool.score` calls.
* Items are sent in chunks (one message per chunk each way), because IPC per item would cost as much
  as a math-verify check (~0.5 ms). Before each call the worker writes (position, function, start time)
  into a small shared-memory array, so the parent knows which call is running and since when, without
  any per-call message.
* A call running longer than ``timeout_s`` gets 0.0 and is counted as a timeout; its worker is
  killed (SIGKILL) and replaced. Trade-off: results of the chunk that finished before the hang die with
  the worker, so those calls, and those not yet started, are re-run on another worker. Only the hung call
  is zeroed; reward functions should therefore be deterministic/side-effect free (they are re-run at
  most once per hang in the chunk, and a chunk is at most ``chunk_size`` items).
* A call that raises, or returns a non-number or a non-finite number, gets 0.0 and is counted as an
  error; the first few messages are kept. A worker that dies inside a call (segfault, ``os._exit``)
  costs that call (error) and is replaced.
* Imports run under ``import_timeout_s`` (a ``SIGALRM`` deadline, see :mod:`reward.loader`): in the
  parent a file still importing after it is a :class:`~reward.loader.RewardConfigError`. In a worker
  each objective's function is loaded on its own; one whose import blocks past the limit (or fails)
  is *unavailable*: the worker still starts, and every call of that objective gets 0.0 and counts as
  an error whose message says why. The worker reports it with ``ready``, and later workers (a
  replacement after a hang) skip that import instead of waiting for it again. The other objectives
  keep working.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import os
import signal
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any

from reward.loader import RewardSpec, load_reward_functions
from reward.worker import CallOutcome, Worker, call_reward

__all__ = ["RewardItem", "RewardPool", "RewardPoolError", "RewardResult"]

MAX_ERROR_MESSAGES = 10


class RewardPoolError(RuntimeError):
    """The pool itself cannot work (workers fail to start or keep dying outside reward calls)."""


class _CallTimeout(BaseException):
    """Raised by the in-process alarm; BaseException so reward code's ``except Exception`` misses it."""


@dataclass
class RewardItem:
    """One response to score."""

    prompt: str
    completion: str
    answer: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class RewardResult:
    """Scores of one :meth:`RewardPool.score` call, in input order.

    Attributes:
        scores: objective name -> one float per item (0.0 for failed calls).
        info: objective name -> per item the ``info`` of a returned ``RewardOutput`` (else None).
        status: objective name -> per item ``"ok"``, ``"error"`` or ``"timeout"``.
        errors: calls that raised, returned a non-number/non-finite value, or crashed their worker.
        timeouts: calls that ran longer than the pool's ``timeout_s``.
        error_messages: the first few error/timeout messages.
    """

    scores: dict[str, list[float]]
    info: dict[str, list[Any]] = field(default_factory=dict)
    status: dict[str, list[str]] = field(default_factory=dict)
    errors: int = 0
    timeouts: int = 0
    error_messages: list[str] = field(default_factory=list)


class RewardPool:
    """Scores :class:`RewardItem` lists with every :class:`RewardSpec`, in worker processes.

    Args:
        specs: the reward objectives (names must be unique).
        num_workers: worker processes; 0 runs in-process (debugging; timeouts via SIGALRM in the
            main thread only, no timeout elsewhere).
        timeout_s: wall-clock limit for one reward call.
        base_dir: directory against which relative ``file.py`` paths resolve (the YAML's directory).
        chunk_size: items per message to a worker (default: about 4 chunks per worker, at most 64).
        mp_context: ``"forkserver"`` (default where available) or ``"spawn"``.
        import_timeout_s: time limit for importing one reward file or module
            (``reward.import_timeout_s``), here and in every worker.
        start_timeout_s: how long a worker may take to start and load the functions (default:
            60 s plus ``import_timeout_s`` per objective; a smaller value is raised to
            ``import_timeout_s`` per objective plus 10 s, so blocked imports cannot exhaust it).

    The functions are also loaded here once, so a bad config fails at construction with a clear
    :class:`~reward.loader.RewardConfigError` (:class:`~reward.loader.RewardImportTimeout` for an
    import still running after ``import_timeout_s``; only enforced when constructed in the main
    thread). Objectives that a worker could not load are listed in :attr:`unavailable`. Not
    thread-safe: one ``score`` at a time.
    """

    def __init__(
        self,
        specs: list[RewardSpec],
        *,
        num_workers: int = 2,
        timeout_s: float = 10.0,
        base_dir: str | os.PathLike[str] | None = None,
        chunk_size: int | None = None,
        mp_context: str | None = None,
        import_timeout_s: float = 60.0,
        start_timeout_s: float | None = None,
    ) -> None:
        if not specs:
            raise ValueError("RewardPool needs at least one RewardSpec")
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"RewardPool: objective names must be unique, got {names}")
        if num_workers < 0 or timeout_s <= 0 or import_timeout_s <= 0:
            raise ValueError(
                "RewardPool: need num_workers >= 0, timeout_s > 0 and import_timeout_s > 0, got "
                f"{num_workers}, {timeout_s}, {import_timeout_s}"
            )
        self.specs = list(specs)
        self.num_workers = num_workers
        self.timeout_s = float(timeout_s)
        self.base_dir = None if base_dir is None else os.fspath(base_dir)
        self.chunk_size = chunk_size
        self.import_timeout_s = float(import_timeout_s)
        all_imports = len(self.specs) * self.import_timeout_s
        self.start_timeout_s = (
            60.0 + all_imports if start_timeout_s is None else max(float(start_timeout_s), all_imports + 10.0)
        )
        self._unavailable: dict[int, str] = {}
        self._functions = load_reward_functions(
            self.specs, self.base_dir, import_timeout_s=self.import_timeout_s
        )
        self._lock = threading.Lock()
        self._workers: list[Worker] = []
        self._closed = False
        self._chunk_counter = 0
        if num_workers > 0:
            method = mp_context or ("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
            self._ctx = mp.get_context(method)
            if method == "forkserver":  # no effect if a forkserver already runs
                self._ctx.set_forkserver_preload(["__main__", "reward.pool", "math_verify"])
            self._workers = [self._new_worker() for _ in range(num_workers)]

    # ------------------------------------------------------------------ lifecycle
    def _new_worker(self) -> Worker:
        return Worker(self._ctx, self.specs, self.base_dir, self.import_timeout_s, self._unavailable)

    @property
    def unavailable(self) -> dict[str, str]:
        """Objective name -> why a worker could not load its function (every call scores 0)."""
        return {self.specs[fi].name: message for fi, message in self._unavailable.items()}

    def _note_unavailable(self, reported: dict[int, str]) -> None:
        for fi, message in reported.items():
            if fi not in self._unavailable:
                self._unavailable[fi] = message
                warnings.warn(
                    f"reward objective {self.specs[fi].name!r}: {message}", RuntimeWarning, stacklevel=2
                )

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for worker in self._workers:
            worker.stop(kill=False)
        self._workers = []

    def __enter__(self) -> RewardPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # ------------------------------------------------------------------ scoring
    def score(self, items: list[RewardItem]) -> RewardResult:
        """Score every item with every objective; see :class:`RewardResult`."""
        if self._closed:
            raise RewardPoolError("RewardPool is closed")
        n = len(items)
        result = RewardResult(
            scores={s.name: [0.0] * n for s in self.specs},
            info={s.name: [None] * n for s in self.specs},
            status={s.name: ["ok"] * n for s in self.specs},
        )
        if n == 0:
            return result
        with self._lock:
            if self.num_workers == 0:
                self._score_inline(items, result)
            else:
                self._score_workers(items, result)
        return result

    def _record(self, result: RewardResult, item_idx: int, fi: int, outcome: CallOutcome) -> None:
        status, score, info, err = outcome
        name = self.specs[fi].name
        result.scores[name][item_idx] = score
        result.info[name][item_idx] = info
        result.status[name][item_idx] = status
        if status == "ok":
            return
        if status == "timeout":
            result.timeouts += 1
        else:
            result.errors += 1
        if len(result.error_messages) < MAX_ERROR_MESSAGES:
            result.error_messages.append(f"reward {name!r} on item {item_idx}: {err}")

    def _score_inline(self, items: list[RewardItem], result: RewardResult) -> None:
        for i, it in enumerate(items):
            payload = (it.prompt, it.completion, it.answer, it.metadata)
            for fi, (fn, spec) in enumerate(zip(self._functions, self.specs)):
                try:
                    with self._inline_deadline():
                        outcome = call_reward(fn, spec, payload)
                except _CallTimeout:
                    outcome = ("timeout", 0.0, None, f"call exceeded {self.timeout_s:g}s")
                self._record(result, i, fi, outcome)

    @contextlib.contextmanager
    def _inline_deadline(self) -> Iterator[None]:
        usable = threading.current_thread() is threading.main_thread()
        if not usable or signal.getitimer(signal.ITIMER_REAL)[0] > 0:
            yield  # no alarm here (non-main thread, or someone else's alarm is armed)
            return

        def _on_alarm(signum: int, frame: Any) -> None:
            raise _CallTimeout()

        previous = signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, self.timeout_s)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    def _make_chunks(self, items: list[RewardItem]) -> deque[list[tuple[int, tuple[int, ...]]]]:
        size = self.chunk_size or max(1, min(64, math.ceil(len(items) / (4 * self.num_workers))))
        all_fns = tuple(range(len(self.specs)))
        calls = [(i, all_fns) for i in range(len(items))]
        return deque(calls[i : i + size] for i in range(0, len(calls), size))

    def _score_workers(self, items: list[RewardItem], result: RewardResult) -> None:
        pending = self._make_chunks(items)
        payloads = [(it.prompt, it.completion, it.answer, it.metadata) for it in items]
        failures_without_progress = 0
        for slot, worker in enumerate(self._workers):
            if worker.chunk is not None:  # left over from an interrupted call: its reply is stale
                self._replace(slot, kill=True)
        while True:
            for slot, worker in enumerate(self._workers):
                if worker.ready and worker.chunk is None and pending:
                    chunk = pending.popleft()
                    self._chunk_counter += 1
                    try:
                        worker.conn.send((self._chunk_counter, [(i, payloads[i], f) for i, f in chunk]))
                    except (BrokenPipeError, OSError):
                        pending.appendleft(chunk)
                        self._replace(slot, kill=True)
                        continue
                    except Exception as exc:  # pickling failed before anything was written
                        raise RewardPoolError(f"cannot send reward items to a worker: {exc}") from exc
                    worker.chunk = (self._chunk_counter, chunk)
            busy = [w for w in self._workers if w.chunk is not None or not w.ready]
            if not pending and all(w.chunk is None for w in self._workers):
                return
            now = time.monotonic()
            wake = 0.5
            for w in busy:
                running = w.running_call() if w.chunk is not None else None
                if running is not None:
                    wake = min(wake, max(0.0, running[2] + self.timeout_s - now))
            wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=wake + 0.005)
            for slot, worker in enumerate(list(self._workers)):
                status = self._poll_worker(slot, worker, result, pending)
                if status == "failed":
                    failures_without_progress += 1
                    if failures_without_progress > 3 * max(1, self.num_workers):
                        raise RewardPoolError("reward workers keep dying outside reward calls; giving up")
                elif status == "progress":
                    failures_without_progress = 0

    def _poll_worker(self, slot: int, worker: Worker, result: RewardResult, pending: deque[Any]) -> str:
        """Handle messages, deaths and deadlines of one worker. Returns 'progress', 'failed' or ''."""
        try:
            while worker.conn.poll():
                msg = worker.conn.recv()
                if msg[0] == "ready":
                    worker.ready = True
                    self._note_unavailable(msg[2])
                elif msg[0] == "load_error":
                    raise RewardPoolError(f"reward worker failed to load the reward functions: {msg[1]}")
                elif worker.chunk is not None and msg[0] == worker.chunk[0]:
                    for item_idx, fi, *outcome in msg[1]:
                        self._record(result, item_idx, fi, tuple(outcome))  # type: ignore[arg-type]
                    worker.chunk = None
                    return "progress"
        except (EOFError, OSError):
            pass  # the process died; handled below
        now = time.monotonic()
        if not worker.ready:
            if not worker.proc.is_alive() or now - worker.started > self.start_timeout_s:
                code = worker.proc.exitcode
                self._replace(slot, kill=True)
                if code is None:
                    raise RewardPoolError(f"reward worker did not start within {self.start_timeout_s:g}s")
                return "failed"
            return ""
        if worker.chunk is None:
            if not worker.proc.is_alive():
                self._replace(slot, kill=True)
            return ""
        running = worker.running_call()
        alive = worker.proc.is_alive()
        if alive and (running is None or now - running[2] <= self.timeout_s):
            return ""
        chunk = worker.chunk[1]
        exitcode = worker.proc.exitcode
        self._replace(slot, kill=True)
        if running is None:  # died between calls: run the whole chunk again elsewhere
            pending.appendleft(chunk)
            return "failed"
        pos, fi, _ = running
        item_idx, fns = chunk[pos]
        if alive:
            outcome: CallOutcome = (
                "timeout",
                0.0,
                None,
                f"call exceeded {self.timeout_s:g}s; worker killed",
            )
        else:
            outcome = ("error", 0.0, None, f"worker process died during the call (exit code {exitcode})")
        self._record(result, item_idx, fi, outcome)
        rest = list(chunk[:pos]) + [(item_idx, tuple(f for f in fns if f != fi))] + list(chunk[pos + 1 :])
        rest = [(i, f) for i, f in rest if f]
        if rest:
            pending.appendleft(rest)
        return "progress"

    def _replace(self, slot: int, kill: bool) -> None:
        self._workers[slot].stop(kill=kill)
        self._workers[slot] = self._new_worker()
