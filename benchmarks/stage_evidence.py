"""Evidence that the stages pay off: each stage's arms against the baselines a user would pick,
over several seeds, with 95 % intervals.

    python benchmarks/stage_evidence.py --task curriculum --seeds 3 --minutes 8
    python benchmarks/stage_evidence.py --task weighting  --seeds 3 --minutes 8
    python benchmarks/stage_evidence.py --task replay     --seeds 3 --minutes 10
    python benchmarks/stage_evidence.py --task off_policy --seeds 3 --minutes 8
    python benchmarks/stage_evidence.py --task curriculum --report   # what is finished, what is missing

Every arm of a task is one ``rlengine train`` run per seed of the same config (the built-in model),
stopped by the same wall-clock budget (``trainer.max_minutes``), evaluating the same held-out sets
before training and every ``--eval-every`` steps. Finished runs are kept under
``--out-dir/<task>/<arm>/seed<k>`` (default benchmarks/results/stage_evidence, slimmed to its metrics and
evaluation summaries so it can be committed) and read back with ``--reuse`` (a run is finished when its
training exited cleanly), so a benchmark can be completed over several sittings; ``--report``
trains nothing and names the runs still missing.

The tasks (fixed before any run; see the ``stage_evidence_*`` sections of BENCHMARKS.md):

- ``curriculum``: arithmetic with 1-4 digit add/sub/mul, a wide difficulty spread for the 135M model
  (the untrained model's pass-rate histogram over training prompts is measured first). Arms:
  ``uniform`` (plain GRPO), ``dapo`` (dynamic sampling, ``filter: nonzero_variance``), ``balanced``,
  ``pcl``, ``pcl_balanced``; baseline ``uniform``.
- ``weighting``: accuracy + conciseness + format (examples/multi_objective). Arms ``static``,
  ``gdpo``, ``hypervolume``, ``gradient``; baseline ``gdpo``. Measure: the hypervolume of each run's
  held-out objective vectors above the nadir of all runs.
- ``replay``: arithmetic RL (configs/arith_recap.yaml) with a second domain, GSM8K, whose held-out
  accuracy is evaluated in every arm (forgetting shows there). Arms ``none``, ``uniform``
  (self-replay), ``recap`` (GSM8K as an RL source and GSM8K reference solutions as a supervised
  source); baseline ``none``.
- ``off_policy``: one-step-off-policy rollouts with ``off_policy_correction: decoupled`` against
  ``behaviour_as_old`` (baseline).

Per arm: the mean over seeds with a 95 % t-interval, and the difference from the baseline paired by
seed, with its interval and a verdict (better / worse / not separated: the interval contains 0).
Time to target: the first training second (evaluations not counted) at which held-out accuracy
reaches the target, the *lowest* final held-out accuracy among the baseline's seeds (so every
baseline seed reaches it); an arm's ratio to the baseline is a geometric mean over seeds, a seed
that never reaches the target counting its whole budget (so the ratio is a lower bound: ``≥``).
Writes the ``stage_evidence_<task>`` section of BENCHMARKS.md and
docs/images/stage_evidence_<task>.png unless ``--no-write`` (``--smoke`` never writes).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, WORKER_ENV, render_table, update_benchmarks_md  # noqa: E402
from benchmarks.curriculum_efficiency import curve, run, write_heldout  # noqa: E402
from rlengine.stages.registry import STAGE_KINDS  # noqa: E402

# two-sided 95 % quantiles of Student's t, by degrees of freedom (df > 30: the normal 1.96)
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}  # fmt: skip
DONE = ".finished"  # written into a run directory when its training exited cleanly
RESULTS = ROOT / "benchmarks" / "results" / "stage_evidence"  # finished runs, slimmed and committed


def t_quantile(df: int) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom (the nearest smaller table
    entry above 10, which errs on the wide side)."""
    if df < 1:
        return math.nan
    if df > 30:
        return 1.96
    return T_975[max(k for k in T_975 if k <= df)]


def interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its 95 % t-interval; (mean, nan, nan) from one value."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = t_quantile(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def verdict(low: float, high: float, higher_is_better: bool = True) -> str:
    """``better`` / ``worse`` when the interval of a difference excludes 0, else ``not separated``."""
    if math.isnan(low) or math.isnan(high) or low <= 0 <= high:
        return "not separated"
    return "better" if (low > 0) == higher_is_better else "worse"


def time_to(points: list[tuple[float, float]], target: float) -> float | None:
    """First training second at which the (seconds, accuracy) curve reaches ``target``."""
    return next((s for s, acc in points if acc >= target - 1e-9), None)


@dataclass
class Task:
    """One experiment: a base config, its arms (sections replaced in the config) and its measures."""

    config: str
    baseline: str
    arms: dict[str, dict]
    data: dict = field(default_factory=dict)  # replaces keys of the config's data section
    second_domain: bool = False  # evaluate GSM8K held-out rows too (forgetting)
    objectives: bool = False  # hypervolume of the evaluation objective vectors


BALANCED = {"name": "balanced", "low": 0.2, "high": 0.8, "max_rounds": 4}
TASKS: dict[str, Task] = {
    "curriculum": Task(
        config="configs/arith_pcl.yaml",
        baseline="uniform",
        data={"synthetic_min_digits": 1, "synthetic_max_digits": 4},
        arms={
            "uniform": {"curriculum": {"name": "uniform"}, "filter": {"name": "none"}},
            "dapo": {
                "curriculum": {"name": "uniform"},
                "filter": {"name": "nonzero_variance", "max_rounds": 4},
            },
            "balanced": {"curriculum": {"name": "uniform"}, "filter": BALANCED},
            "pcl": {"filter": {"name": "none"}},  # the config's own pcl section
            "pcl_balanced": {"filter": BALANCED},
        },
    ),
    "weighting": Task(
        config="examples/multi_objective/config.yaml",
        baseline="gdpo",
        objectives=True,
        arms={
            "static": {"reward_weighting": {"name": "static"}},
            "gdpo": {"reward_weighting": {"name": "gdpo"}},
            "hypervolume": {"reward_weighting": {"name": "hypervolume", "every_n_steps": 2, "responses": 2}},
            "gradient": {},  # the config's own gradient section
        },
    ),
    "replay": Task(
        config="configs/arith_recap.yaml",
        baseline="none",
        second_domain=True,
        arms={
            "none": {"replay": {"name": "none"}},
            "uniform": {"replay": {"name": "uniform", "ratio": 0.25, "max_staleness": 4}},
            "recap": {},  # the config's own recap section: GSM8K RL + GSM8K solutions (NLL)
        },
    ),
    "off_policy": Task(
        config="configs/arith_pcl.yaml",
        baseline="behaviour_as_old",
        data={"synthetic_min_digits": 1, "synthetic_max_digits": 3},
        arms={
            name: {
                "curriculum": {"name": "uniform"},
                "rollout": {"mode": "one_step_off_policy"},
                "algorithm": {"off_policy_correction": name},
            }
            for name in ("behaviour_as_old", "decoupled")
        },
    ),
}


def arm_config(task: Task, arm: str, smoke: bool = False) -> dict:
    """The base config with the task's data keys and the arm's sections merged in (a stage section
    with a ``name`` replaces the config's; others update its keys; sections not named stay).
    ``smoke``: a PCL value model on every layer of the tiny model."""
    raw = copy.deepcopy(yaml.safe_load((ROOT / task.config).read_text()))
    raw["data"] = {**raw.get("data", {}), **task.data}
    for section, values in task.arms[arm].items():
        if section in STAGE_KINDS and "name" in values:
            raw[section] = dict(
                values
            )  # a stage section is replaced whole: options of another stage are refused
        else:
            raw[section] = {**(raw.get(section) or {}), **values}
    raw.setdefault("evaluation", {})["limit"] = None
    if smoke and (raw.get("curriculum") or {}).get("name") == "pcl":
        raw["curriculum"]["value_model"]["layers"] = None
    return raw


def write_second_domain(path: Path, count: int) -> None:
    """``count`` GSM8K test problems (never trained on: the sources read gsm8k_train)."""
    source = ROOT / "rlengine" / "data" / "benchmarks" / "gsm8k_test.jsonl"
    rows = [json.loads(line) for line in source.read_text().splitlines()[:count]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def finished(run_dir: Path) -> bool:
    return (run_dir / DONE).is_file() and (run_dir / "metrics.jsonl").is_file()


def train(
    task: Task, arm: str, seed: int, out: Path, args: argparse.Namespace, benchmarks: list[Path]
) -> None:
    """One run, from scratch (an unfinished directory is removed first)."""
    run_dir = out / arm / f"seed{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    options = argparse.Namespace(**{**vars(args), "seed": seed, "reuse": False})
    run(f"{arm}/seed{seed}", arm_config(task, arm, args.smoke), out, options, benchmarks)
    slim(run_dir)
    (run_dir / DONE).write_text("")


def slim(run_dir: Path) -> None:
    """Keep what the report reads (``metrics.jsonl``, ``config.yaml``, the evaluations' summaries),
    so finished runs are a few kilobytes and can be committed under benchmarks/results/."""
    keep = {"metrics.jsonl", "config.yaml", "eval"}
    for path in run_dir.iterdir():
        if path.name not in keep:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for path in (run_dir / "eval").iterdir():
        if path.is_dir() or not path.name.startswith("step_"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            continue
        data = json.loads(path.read_text())
        path.write_text(json.dumps({"meta": data.get("meta", {}), "benchmarks": data.get("benchmarks", {})}))


def summarise_run(run_dir: Path, second_domain: bool) -> dict:
    """What the tables need from one finished run."""
    from rlengine.plot import eval_points

    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    points = [(p[1], p[3]) for p in curve(run_dir) if p[3] is not None]
    evals = eval_points(run_dir)
    gsm8k = [p["pass@1"] for p in evals if p["benchmark"] == "gsm8k_heldout"]

    def mean_of(key: str) -> float | None:
        values = [m[key] for m in metrics if m.get(key) is not None]
        return statistics.fmean(values) if values else None

    return {
        "steps": metrics[-1]["step"],
        "seconds": sum(m["time/step"] for m in metrics),
        "curve": points,
        "final": points[-1][1] if points else math.nan,
        "start": points[0][1] if points else math.nan,
        "generated": sum(m.get("rollouts/generated", 0) for m in metrics),
        "effective_ratio": mean_of("effective_ratio"),
        "stale_deviation": mean_of("actor/stale_ratio_deviation"),
        "second_domain": (gsm8k[0], gsm8k[-1]) if second_domain and gsm8k else None,
        "objectives": [p["objectives"] for p in evals if p["benchmark"] == "heldout" and p["objectives"]],
    }


def cell(values: list[float], digits: int = 3) -> str:
    """``mean [low, high]`` over seeds."""
    if not values:
        return "—"
    mean, low, high = interval(values)
    if math.isnan(low):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def difference(values: dict[int, float], base: dict[int, float], digits: int = 3) -> str:
    """The arm minus the baseline, paired by seed: ``+d [low, high], verdict``."""
    seeds = sorted(set(values) & set(base))
    if len(seeds) < 2:
        return "—"
    mean, low, high = interval([values[s] - base[s] for s in seeds])
    return f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}], {verdict(low, high)}"


def report(task_name: str, task: Task, runs: dict[str, dict[int, dict]], histogram: str) -> str:
    """The task's Markdown: the main table, the measures of its mechanism and the curves."""
    base = runs[task.baseline]
    target = min(r["final"] for r in base.values())
    headers = [
        "arm", "seeds", "steps (mean)", "held-out acc at the end", "vs baseline (paired)",
        f"s to target ({target:.3f})", "time ratio vs baseline",
    ]  # fmt: skip
    rows = []
    for arm, seeds in runs.items():
        finals = {s: r["final"] for s, r in seeds.items()}
        times = {s: time_to(r["curve"], target) for s, r in seeds.items()}
        reached = [t for t in times.values() if t is not None]
        ratios = [
            math.log(max(seeds[s]["seconds"] if times[s] is None else times[s], 1.0) / max(base_time, 1.0))
            for s in seeds
            if s in base and (base_time := time_to(base[s]["curve"], target)) is not None
        ]
        unreached = len(times) - len(reached)
        ratio = "—"
        if ratios and arm != task.baseline:
            mean, low, high = interval(ratios)
            bound = "≥ " if unreached else ""
            ratio = f"{bound}{math.exp(mean):.2f}" + (
                "" if math.isnan(low) else f" [{math.exp(low):.2f}, {math.exp(high):.2f}]"
            )
        rows.append(
            [
                arm,
                str(len(seeds)),
                f"{statistics.fmean(r['steps'] for r in seeds.values()):.1f}",
                cell(list(finals.values())),
                "—" if arm == task.baseline else difference(finals, {s: r["final"] for s, r in base.items()}),
                (cell(reached, 0) if reached else "")
                + (f" ({unreached} of {len(times)} not reached)" if unreached else ""),
                ratio,
            ]
        )
    text = render_table(headers, rows)
    mechanism = mechanism_table(task, runs)
    if mechanism:
        text += "\n\n" + mechanism
    if histogram:
        text += "\n\n" + histogram
    text += "\n\nHeld-out accuracy against training seconds (per seed):\n\n" + "\n".join(
        f"- `{arm}` seed {s}: " + ", ".join(f"{sec:.0f} s: {acc:.3f}" for sec, acc in r["curve"])
        for arm, seeds in runs.items()
        for s, r in sorted(seeds.items())
    )
    return text


def mechanism_table(task: Task, runs: dict[str, dict[int, dict]]) -> str:
    """The measures of the stage's own mechanism, per arm, with intervals over seeds."""
    base = runs[task.baseline]
    if task.objectives:
        from rlengine.algorithms.multi_objective import hypervolume

        names = list(
            next(r for seeds in runs.values() for r in seeds.values() if r["objectives"])["objectives"][0]
        )
        vectors = {
            (arm, s): [[o[k] for k in names] for o in r["objectives"]]
            for arm, seeds in runs.items()
            for s, r in seeds.items()
        }
        nadir = [min(v[i] for points in vectors.values() for v in points) for i in range(len(names))]
        volume = {key: hypervolume(points, nadir) for key, points in vectors.items()}
        rows = [
            [
                arm,
                cell([volume[(arm, s)] for s in seeds], 4),
                "—"
                if arm == task.baseline
                else difference(
                    {s: volume[(arm, s)] for s in seeds}, {s: volume[(task.baseline, s)] for s in base}, 4
                ),
                *(cell([r["objectives"][-1][k] for r in seeds.values()]) for k in names),
            ]
            for arm, seeds in runs.items()
        ]
        return (
            f"Hypervolume of the held-out objective vectors ({', '.join(names)}) above the nadir {[round(x, 3) for x in nadir]} of every evaluation of every run:\n\n"
            + render_table(
                ["arm", "hypervolume", "vs baseline (paired)", *(f"{k} at the end" for k in names)], rows
            )
        )
    if task.second_domain:
        rows = []
        for arm, seeds in runs.items():
            drop = {
                s: r["second_domain"][1] - r["second_domain"][0]
                for s, r in seeds.items()
                if r["second_domain"]
            }
            base_drop = {
                s: r["second_domain"][1] - r["second_domain"][0]
                for s, r in base.items()
                if r["second_domain"]
            }
            rows.append(
                [
                    arm,
                    cell([r["second_domain"][0] for r in seeds.values() if r["second_domain"]]),
                    cell([r["second_domain"][1] for r in seeds.values() if r["second_domain"]]),
                    cell(list(drop.values())),
                    "—" if arm == task.baseline else difference(drop, base_drop),
                ]
            )
        return (
            "Second domain (GSM8K held-out accuracy, greedy): forgetting shows as a negative change.\n\n"
            + render_table(
                ["arm", "GSM8K at the start", "GSM8K at the end", "change", "change vs baseline (paired)"],
                rows,
            )
        )
    rows = [
        [
            arm,
            cell([r["generated"] for r in seeds.values()], 0),
            cell([r["effective_ratio"] for r in seeds.values() if r["effective_ratio"] is not None]),
            cell([r["stale_deviation"] for r in seeds.values() if r["stale_deviation"] is not None], 4),
        ]
        for arm, seeds in runs.items()
    ]
    return render_table(
        ["arm", "responses rolled out", "effective ratio (mean)", "mean |ratio − 1| of stale tokens"], rows
    )


def pass_rate_histogram(task: Task, out: Path, args: argparse.Namespace) -> str:
    """The untrained model's pass rates over 64 training prompts (8 samples each, temperature 1):
    how many prompts a uniform sampler wastes (pass rate 0 or 1, zero advantage)."""
    from rlengine.data import make_arithmetic

    raw = arm_config(task, task.baseline)
    data = raw["data"]
    path = out / "untrained" / "results_train_sample.jsonl"
    if args.report and not path.is_file():
        return "Untrained model's pass rates: not measured yet."
    if not (args.reuse and path.is_file()):
        rows = make_arithmetic(
            data.get("synthetic_num", 2000),
            seed=0,
            ops=tuple(data.get("synthetic_ops", ("add", "sub", "mul"))),
            min_digits=data["synthetic_min_digits"],
            max_digits=data["synthetic_max_digits"],
        )[: args.histogram_prompts]
        sample = out / "train_sample.jsonl"
        sample.write_text(
            "".join(json.dumps({k: r[k] for k in ("id", "problem", "answer")}) + "\n" for r in rows)
        )
        model = next(
            (o.split("=", 1)[1] for o in args.override if o.startswith("model.name=")), raw["model"]["name"]
        )
        subprocess.run(
            [sys.executable, "-m", "rlengine.cli", "eval", "--model", model, "--benchmarks", str(sample),
             "--samples", "8", "--temperature", "1.0", "--top-p", "1.0", "--max-tokens", str(raw["rollout"]["max_tokens"]),
             "--template", data["template"], "--output", str(out / "untrained"), "--max-model-len", str(raw["rollout"]["max_model_len"])],
            check=True, env={**os.environ, **WORKER_ENV}, cwd=ROOT,
        )  # fmt: skip
    records = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text(  # only the verdicts are kept (a few kilobytes)
        "".join(
            json.dumps({"id": r["id"], "completions": [{"correct": c["correct"]} for c in r["completions"]]})
            + "\n"
            for r in records
        )
    )
    rates = [sum(bool(c["correct"]) for c in r["completions"]) / len(r["completions"]) for r in records]
    bins = {"0": sum(r == 0 for r in rates), "(0, 0.5)": sum(0 < r < 0.5 for r in rates),
            "[0.5, 1)": sum(0.5 <= r < 1 for r in rates), "1": sum(r == 1 for r in rates)}  # fmt: skip
    return (
        f"Untrained model, {len(rates)} training prompts × 8 samples (temperature 1): prompts by pass rate: "
        + ", ".join(f"{k}: {v}" for k, v in bins.items())
        + f" ({(bins['0'] + bins['1']) / max(len(rates), 1):.0%} give a zero-advantage group)."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 per arm")
    parser.add_argument(
        "--arms", default=None, help="comma-separated subset of the task's arms (with its baseline)"
    )
    parser.add_argument("--minutes", type=float, default=8.0, help="wall-clock training budget per run")
    parser.add_argument("--eval-every", type=int, default=4)
    parser.add_argument("--heldout", type=int, default=150, help="held-out problems of the task")
    parser.add_argument("--second-domain", type=int, default=100, help="GSM8K held-out problems (replay)")
    parser.add_argument("--histogram-prompts", type=int, default=64)
    parser.add_argument(
        "--out-dir", default=None, help="default benchmarks/results/stage_evidence (--smoke: a temporary one)"
    )
    parser.add_argument("--override", action="append", default=[], help="extra key=value for every run")
    parser.add_argument(
        "--reuse", action="store_true", help="read finished runs back instead of training them again"
    )
    parser.add_argument(
        "--report", action="store_true", help="train nothing: report the finished runs, name the missing"
    )
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny model, 1 step a run, no BENCHMARKS.md (CI)"
    )
    args = parser.parse_args()
    args.reuse = args.reuse or args.report
    task = TASKS[args.task]
    arms = list(task.arms) if args.arms is None else args.arms.split(",")
    unknown = [a for a in arms if a not in task.arms]
    if unknown or task.baseline not in arms:
        raise SystemExit(
            f"--arms: {args.task}'s arms are {', '.join(task.arms)}, its baseline {task.baseline} included"
        )
    if args.smoke:
        from rlengine.models import make_tiny_model

        tiny = make_tiny_model(Path(tempfile.mkdtemp()) / "tiny", num_heads=2, seed=0)
        args.override += [f"model.name={tiny}", "rollout.max_tokens=8", "rollout.n=2", "trainer.batch_size=2",
                          "evaluation.max_tokens=8", "rollout.engine_in_process=true"]  # fmt: skip
        args.heldout, args.second_domain, args.histogram_prompts = 4, 4, 4
        args.no_write, args.out_dir = True, args.out_dir or tempfile.mkdtemp()
    args.minutes, args.max_steps = (10_000.0, 1) if args.smoke else (args.minutes, 10_000)

    out = Path(args.out_dir or RESULTS).resolve() / args.task
    out.mkdir(parents=True, exist_ok=True)
    base = arm_config(task, task.baseline)
    benchmarks = [out / "heldout.jsonl"]
    write_heldout(benchmarks[0], base["data"], args.heldout)
    if task.second_domain:
        benchmarks.append(out / "gsm8k_heldout.jsonl")
        write_second_domain(benchmarks[1], args.second_domain)
    histogram = pass_rate_histogram(task, out, args) if args.task == "curriculum" else ""
    missing = []
    for seed in range(args.seeds):  # seed by seed, so an interrupted benchmark has whole pairs
        for arm in arms:
            run_dir = out / arm / f"seed{seed}"
            if not (args.reuse and finished(run_dir)):
                if args.report:
                    missing.append(f"{arm}/seed{seed}")
                else:
                    train(task, arm, seed, out, args, benchmarks)
    runs = {
        arm: {
            s: summarise_run(out / arm / f"seed{s}", task.second_domain)
            for s in range(args.seeds)
            if finished(out / arm / f"seed{s}")
        }
        for arm in arms
    }
    runs = {arm: seeds for arm, seeds in runs.items() if seeds}
    if missing:
        print(f"missing runs ({len(missing)}): {', '.join(missing)}", file=sys.stderr)
    if task.baseline not in runs:
        print(f"no finished run of the baseline {task.baseline}: nothing to compare", file=sys.stderr)
        return 1 if args.report else 2
    text = report(args.task, task, runs, histogram)
    print(text)
    if not args.no_write and not missing:
        plot(runs, ROOT / "docs" / "images" / f"stage_evidence_{args.task}.png", args.task)
        # the settings the runs were trained with (a --report run may come sittings later)
        trained = yaml.safe_load((out / task.baseline / "seed0" / "config.yaml").read_text())
        heldout = len((out / "heldout.jsonl").read_text().splitlines())
        note = (
            f"\n\nConfig {task.config} ({', '.join(f'data.{k}={v}' for k, v in task.data.items()) or 'as shipped'}), "
            f"{args.seeds} seeds per arm, {trained['trainer']['max_minutes']:g} minutes of wall-clock budget per run "
            "(evaluations included in the budget, excluded from the seconds shown), held-out: "
            f"{heldout} problems from the training generator with another seed, greedy, before training and every "
            f"{trained['evaluation']['every_n_steps']} steps. Intervals: 95 % Student t over seeds; differences "
            f"paired by seed. Finished runs: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}. "
            f"Plot: docs/images/stage_evidence_{args.task}.png."
        )
        not_run = [a for a in task.arms if a not in arms]
        if not_run:
            note += f" Arms not run yet: {', '.join(not_run)}."
        reading = out / "READING.md"  # the written reading of these results, kept with the runs
        if reading.is_file():
            note += "\n\n" + reading.read_text().strip()
        update_benchmarks_md(f"stage_evidence_{args.task}", f"Stage evidence: {args.task}", text + note)
    return 0


def plot(runs: dict[str, dict[int, dict]], output: Path, title: str) -> None:
    """Held-out accuracy against training seconds: one line per arm (the mean over seeds at each
    evaluation), with the band between its seeds' lowest and highest."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(7, 4.5))
    for arm, seeds in runs.items():
        length = min(len(r["curve"]) for r in seeds.values())
        x = [statistics.fmean(r["curve"][i][0] for r in seeds.values()) for i in range(length)]
        ys = [[r["curve"][i][1] for r in seeds.values()] for i in range(length)]
        (line,) = ax.plot(
            x, [statistics.fmean(y) for y in ys], marker="o", label=f"{arm} ({len(seeds)} seeds)"
        )
        ax.fill_between(x, [min(y) for y in ys], [max(y) for y in ys], color=line.get_color(), alpha=0.15)
    ax.set_title(f"stage evidence: {title}")
    ax.set_xlabel("training seconds")
    ax.set_ylabel("held-out accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
