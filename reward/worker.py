"""The worker side of :class:`reward.pool.RewardPool`: a process that loads the reward functions
itself and scores chunks of items, reporting which call is running through shared memory (see the
pool's module docstring for the design: chunks, timeouts, unavailable objectives)."""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from reward.builtin import RewardOutput
from reward.loader import RewardConfigError, RewardImportTimeout, RewardSpec, load_reward_function

CallOutcome = tuple[str, float, Any, str | None]
"""status (``ok`` / ``error`` / ``timeout``), score, info, error message."""


def coerce_score(out: Any) -> CallOutcome:
    info = None
    if isinstance(out, RewardOutput):
        out, info = out.score, out.info
    if isinstance(out, (str, bytes)) or not (isinstance(out, numbers.Real) or hasattr(out, "__float__")):
        return ("error", 0.0, None, f"returned {type(out).__name__} {out!r:.80}, expected a float")
    try:
        value = float(out)
    except (TypeError, ValueError) as exc:
        return ("error", 0.0, None, f"returned {out!r:.80} that is not a number: {exc}")
    if not math.isfinite(value):
        return ("error", 0.0, None, f"returned non-finite value {value}")
    return ("ok", value, info, None)


def call_reward(
    fn: Callable[..., Any], spec: RewardSpec, item: tuple[str, str, str, dict[str, Any]]
) -> CallOutcome:
    try:
        out = fn(*item, **spec.kwargs)
    except (Exception, SystemExit) as exc:
        return ("error", 0.0, None, f"{type(exc).__name__}: {str(exc)[:500]}")
    return coerce_score(out)


def load_in_worker(
    specs: list[RewardSpec], base_dir: str | None, import_timeout_s: float, skip: dict[int, str]
) -> tuple[list[Callable[..., Any] | None], dict[int, str]]:
    """Load each spec's function on its own, under the import deadline (a worker runs in its main
    thread, so the alarm works). Returns the functions (None where unavailable) and
    {function index: why it is unavailable}; ``skip`` are specs known to be unavailable already."""
    functions: list[Callable[..., Any] | None] = []
    unavailable = dict(skip)
    for fi, spec in enumerate(specs):
        if fi in unavailable:
            functions.append(None)
            continue
        try:
            functions.append(load_reward_function(spec.function, base_dir, import_timeout_s=import_timeout_s))
        except RewardImportTimeout as exc:
            functions.append(None)
            unavailable[fi] = (
                f"{exc.target} did not finish importing within {exc.limit_s:g} s "
                "(reward.import_timeout_s) in the reward worker; this objective scores 0"
            )
        except RewardConfigError as exc:  # loaded in the parent, fails here: treated the same
            functions.append(None)
            unavailable[fi] = f"could not be loaded in the reward worker ({exc}); this objective scores 0"
    return functions, unavailable


def worker_main(
    specs: list[RewardSpec],
    base_dir: str | None,
    import_timeout_s: float,
    skip: dict[int, str],
    conn: Any,
    progress: Any,
) -> None:
    """Worker loop. ``progress`` = [sequence, position in chunk, function index, start time]."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    try:
        functions, unavailable = load_in_worker(specs, base_dir, import_timeout_s, skip)
        with contextlib.suppress(ImportError):
            import math_verify  # noqa: F401  (pay the import before the first timed call)
    except BaseException as exc:
        conn.send(("load_error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid(), unavailable))
    seq = 0
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        chunk_id, calls = msg
        results = []
        for pos, (item_idx, item, fn_indices) in enumerate(calls):
            for fi in fn_indices:
                seq += 1
                progress[3] = time.monotonic()
                progress[1], progress[2] = pos, fi
                progress[0] = seq
                fn = functions[fi]
                if fn is None:
                    status, score, info, err = "error", 0.0, None, unavailable[fi]
                else:
                    status, score, info, err = call_reward(fn, specs[fi], item)
                results.append((item_idx, fi, status, score, info, err))
        progress[1] = -1
        progress[0] = seq + 0.5
        try:
            conn.send((chunk_id, results))
        except Exception:  # unpicklable info: drop the infos rather than the scores
            conn.send((chunk_id, [(r[0], r[1], r[2], r[3], None, r[5]) for r in results]))


class Worker:
    """One reward worker process: its pipe, its progress array (which call runs since when) and the
    chunk it holds."""

    def __init__(
        self,
        ctx: Any,
        specs: list[RewardSpec],
        base_dir: str | None,
        import_timeout_s: float,
        skip: dict[int, str],
    ) -> None:
        self.conn, child_conn = ctx.Pipe(duplex=True)
        self.progress = ctx.RawArray("d", [0.0, -1.0, -1.0, 0.0])
        self.proc = ctx.Process(
            target=worker_main,
            args=(specs, base_dir, import_timeout_s, dict(skip), child_conn, self.progress),
            daemon=True,
        )
        self.proc.start()
        child_conn.close()
        self.started = time.monotonic()
        self.ready = False
        self.chunk: tuple[int, list[tuple[int, tuple[int, ...]]]] | None = None

    def running_call(self) -> tuple[int, int, float] | None:
        """(position in chunk, function index, start time) of the call in progress, if any."""
        seq = self.progress[0]
        pos, fi, start = int(self.progress[1]), int(self.progress[2]), self.progress[3]
        if seq != self.progress[0] or pos < 0 or seq != int(seq) or seq == 0:
            return None
        return pos, fi, start

    def stop(self, kill: bool) -> None:
        if not kill:
            with contextlib.suppress(Exception):
                self.conn.send(None)
            self.proc.join(timeout=2.0)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5.0)
        with contextlib.suppress(Exception):
            self.conn.close()
