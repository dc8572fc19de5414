"""Step anatomy: where a training step's time goes, and the run's peak memory above idle.

Runs ``rlengine train`` on a config in a subprocess (a fresh run directory), samples the machine's
used memory (``MemTotal - MemAvailable``) every 0.2 s, and reports medians over the steps after
the first (which warms up) of ``time/rollout``, ``time/reward``, ``time/stages``, ``time/train``,
``time/sync`` and the orchestration overhead (``time/step`` minus the parts), plus generation
tokens/s and the peak memory above the idle level measured just before the run.

    python benchmarks/step_anatomy.py --config configs/quickstart.yaml trainer.max_steps=6
    python benchmarks/step_anatomy.py --smoke        # CI: tiny model, 2 steps, no BENCHMARKS.md update
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import median, render_table, update_benchmarks_md  # noqa: E402

PARTS = ("time/rollout", "time/reward", "time/stages", "time/train", "time/sync")


def used_memory_gib() -> float:
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, value = line.split(":", 1)
        info[key] = int(value.split()[0])
    return (info["MemTotal"] - info["MemAvailable"]) / 2**20


class MemorySampler:
    """Peak of the machine's used memory while the block runs (a thread sampling /proc/meminfo)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval, self.peak, self._stop = interval, 0.0, threading.Event()

    def __enter__(self) -> MemorySampler:
        self.idle = used_memory_gib()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, used_memory_gib())
            time.sleep(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def anatomy(metrics: list[dict]) -> dict[str, float]:
    """Medians over the steps after the first of each part, the overhead and the throughput."""
    steps = metrics[1:] or metrics
    out = {key: median([m[key] for m in steps]) for key in (*PARTS, "time/step", "tokens/per_second")}
    out["overhead"] = median([m["time/step"] - sum(m[k] for k in PARTS) for m in steps])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. trainer.max_steps=6")
    parser.add_argument("--label", default=None, help="a name for this configuration in BENCHMARKS.md")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny model, 2 steps, no BENCHMARKS.md update (CI)"
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    run_dir = Path(tempfile.mkdtemp(prefix="rlengine-anatomy-")) / "run"
    overrides = [
        f"trainer.output_dir={run_dir}",
        "logging.progress=false",
        "evaluation.every_n_steps=0",
        "evaluation.before_training=false",
        *args.overrides,
    ]
    if args.smoke:
        from rlengine.models import make_tiny_model

        model = make_tiny_model(run_dir.parent / "tiny", num_heads=2, seed=0)
        overrides += [
            f"model.name={model}",
            "trainer.max_steps=2",
            "trainer.batch_size=2",
            "rollout.max_tokens=8",
            "rollout.engine_in_process=true",  # starts sooner; the smoke times nothing
        ]
        args.no_write = True
    cmd = [sys.executable, "-m", "rlengine.cli", "train", args.config, *overrides]
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    with MemorySampler() as memory:
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"training failed:\n{result.stderr[-3000:]}")
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    a = anatomy(metrics)
    step = a["time/step"]
    rows = [[key, f"{a[key]:.2f}", f"{100 * a[key] / step:.1f} %"] for key in (*PARTS, "overhead")]
    rows.append(["time/step", f"{step:.2f}", "100 %"])
    table = render_table(["part", "median s", "share of step"], rows)
    peak = memory.peak - memory.idle
    text = (
        f"{len(metrics)} steps of `{args.config}` {' '.join(args.overrides)} (medians over steps 2..{len(metrics)})\n\n"
        f"{table}\n\ngeneration {a['tokens/per_second']:.0f} tokens/s; peak memory {peak:.1f} GiB above idle "
        f"({memory.idle:.1f} GiB used before the run)\n"
    )
    print(text)
    if not args.no_write:
        label = args.label or "quickstart"
        update_benchmarks_md(f"anatomy-{label}", f"Step anatomy: {label}", text)


if __name__ == "__main__":
    main()
