"""Shared pieces of the benchmark scripts: machine description, medians, tables, BENCHMARKS.md."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"

# Environment of a measured worker process: no Ray auth prompt, quiet vLLM / transformers, no tokenizer threads.
WORKER_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "VLLM_LOGGING_LEVEL": "ERROR",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
    "PYTHONWARNINGS": "ignore",
}


def machine() -> str:
    """One line: CPU model and cores, memory, GPU if any, torch version."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gib = 0.0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu}, {cores} cores, {mem_gib:.0f} GiB{gpu}; torch {torch.__version__}"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def render_table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (also readable as plain text)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def update_benchmarks_md(key: str, title: str, body: str) -> None:
    """Replace (or append) the section of BENCHMARKS.md between ``<!-- key -->`` markers."""
    start, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    command = "python " + " ".join(
        [
            str(Path(sys.argv[0]).relative_to(ROOT)) if Path(sys.argv[0]).is_absolute() else sys.argv[0],
            *sys.argv[1:],
        ]
    )
    section = "\n".join(
        [
            start,
            f"## {title}",
            "",
            f"- command: `{command}`",
            f"- machine: {machine()}",
            f"- date: {datetime.date.today().isoformat()}, commit {git_commit()}",
            "",
            body.rstrip(),
            end,
        ]
    )
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: section, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + section + "\n"
    )
    BENCHMARKS_MD.write_text(text)


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# --------------------------------------------------------------------------- measured worker processes
# Every measurement runs in a fresh process (``script --worker --impl NAME ...``) so that one
# implementation's memory and threads cannot leak into the next; the worker prints one RESULT line.


def worker_command(
    script: str, impl: str, args: argparse.Namespace, keys: tuple[str, ...], **values: object
) -> list[str]:
    """``python script --worker --impl impl --key value ...`` with ``values`` and then ``args.<key>``."""
    cmd = [sys.executable, script, "--worker", "--impl", impl]
    for key, value in [*values.items(), *((k, getattr(args, k)) for k in keys)]:
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    return cmd


def print_result(result: object) -> None:
    """What a worker prints last: ``RESULT <json>``."""
    print("RESULT " + json.dumps(result), flush=True)


def run_worker(cmd: list[str], timeout: float | None = None) -> tuple[object | None, str]:
    """Run a worker; return its RESULT payload (None when it printed none) and its stderr."""
    out = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, **WORKER_ENV}, cwd=ROOT, timeout=timeout
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    return (json.loads(line[len("RESULT ") :]) if line else None), out.stderr


def add_training_run_arguments(
    parser: argparse.ArgumentParser, config: str, steps: int, out_dir: str
) -> None:
    """The options of a benchmark that trains several runs of one config side by side
    (``benchmarks/reward_weighting.py``, ``benchmarks/replay.py``)."""
    parser.add_argument("--config", default=str(ROOT / config))
    parser.add_argument("--steps", type=int, default=steps, help="training steps per run")
    parser.add_argument("--heldout", type=int, default=60, help="held-out problems")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=str(ROOT / out_dir))
    parser.add_argument("--override", action="append", default=[], help="extra key=value for every run")
    parser.add_argument("--reuse", action="store_true", help="read finished runs instead of training again")
    parser.add_argument("--no-write", action="store_true")
