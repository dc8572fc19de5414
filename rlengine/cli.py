"""``rlengine train | eval | config`` command line.

rlengine train CONFIG.yaml [section.key=value ...] [--ray-address auto]
rlengine train runs/my_run                     # resume a run directory
rlengine config show CONFIG.yaml [overrides]   # print the resolved config
rlengine config check CONFIG.yaml [overrides]  # validate only
rlengine eval --model PATH --benchmarks gsm8k,math500 --samples 4 ...
rlengine eval --compare A.json B.json
rlengine report runs/my_run                    # reward curves and evaluations of a run, as text
rlengine plot runs/a runs/b --output cmp.png   # the same runs compared in one picture
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from reward.loader import RewardConfigError
from rlengine.config import dump_yaml, load_config
from rlengine.errors import ActorFailure, ConfigError, DataError, RunUnhealthy
from rlengine.interrupts import RunStopped
from rlengine.models import ModelError
from rlengine.plugins import PluginError


def _configure_env() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def _load(path: str, overrides: list[str]):
    target = Path(path)
    if target.is_dir():
        # a run directory: its resolved config, resumed from its newest checkpoint
        if not (target / "config.yaml").is_file():
            raise ConfigError(f"'{path}' is a directory without config.yaml (not a run directory)")
        cfg = load_config(target / "config.yaml", ["resume=true", f"trainer.output_dir={target}", *overrides])
        return cfg
    return load_config(path, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _load(args.config, args.overrides)
    if args.ray_address:
        cfg.trainer.ray_address = args.ray_address
    from rlengine.trainer import train

    history = train(cfg)
    if history:
        last = history[-1]
        print(
            f"finished step {last['step']}: reward/mean={last['reward/mean']:.4f} "
            f"pass_rate/mean={last['pass_rate/mean']:.4f}; run directory: {cfg.run_dir}"
        )
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    cfg = _load(args.config, args.overrides)
    from rlengine.resume import checkpoint_to_resume

    checkpoint_to_resume(cfg, create=False)  # the run directory too: nothing to resume, refused changes
    if args.action == "show":
        print(dump_yaml(cfg), end="")
    else:
        from rlengine.validation import resources

        print(f"{args.config}: OK\n{resources(cfg)}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from reward.loader import RewardConfigError, load_reward_function
    from rlengine.eval import format_table
    from rlengine.eval.runner import EvalSettings, compare_runs, evaluate_model
    from rlengine.validation import check_benchmark_names, writable_directory

    settings = EvalSettings(
        benchmarks=[b.strip() for b in args.benchmarks.split(",") if b.strip()],
        samples=args.samples,
        max_tokens=args.max_tokens,
        limit=args.limit,
        temperature=args.temperature,
        top_p=args.top_p,
        template=args.template,
        chat_template=not args.no_chat_template,
        answer_pattern=args.answer_pattern,
        max_model_len=args.max_model_len,
        dtype=args.dtype,
        seed=args.seed,
        num_engines=args.num_engines,
        ray_address=args.ray_address,
        objectives=[o.strip() for o in args.objectives.split(",") if o.strip()] if args.objectives else None,
    )
    check_benchmark_names(settings.benchmarks, "--benchmarks", args.benchmarks)
    for function in settings.objectives or []:  # before vLLM starts
        try:
            load_reward_function(function)
        except (RewardConfigError, ValueError, TypeError) as e:
            raise ConfigError(f"--objectives: {function!r}: {e}") from None
    if args.compare:
        print(compare_runs(args.compare[0], args.compare[1], settings))
        return 0
    if not args.model:
        raise ConfigError("rlengine eval: give --model MODEL (or --compare A B)")
    if args.output:
        writable_directory(Path(args.output), "--output")
    summary, _, output = evaluate_model(args.model, settings, args.output)
    print(format_table(summary))
    print(f"results written to {output}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from rlengine.report import report

    print(report(args.run_dir, window=args.window))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from rlengine.plot import plot_runs

    for run_dir in args.runs:
        if not (Path(run_dir) / "metrics.jsonl").is_file():
            raise DataError(f"rlengine plot: {run_dir} has no metrics.jsonl (is it a run directory?)")
    print(f"wrote {plot_runs(args.runs, args.output)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlengine", description="RL post-training engine for LLM reasoning")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train from a YAML config (or resume a run directory)")
    train.add_argument("config", help="YAML file, or a run directory to resume")
    train.add_argument("overrides", nargs="*", help="section.key=value overrides")
    train.add_argument("--ray-address", default=None, help="join this Ray cluster ('auto' for the local one)")
    train.set_defaults(func=cmd_train)

    config = sub.add_parser("config", help="show or check a config")
    config.add_argument("action", choices=["show", "check"])
    config.add_argument("config")
    config.add_argument("overrides", nargs="*")
    config.set_defaults(func=cmd_config)

    ev = sub.add_parser("eval", help="evaluate a model on math benchmarks, or compare two results")
    ev.add_argument("--model", help="built-in name, local HF directory, checkpoint dir or hub id")
    ev.add_argument("--benchmarks", default="gsm8k,math500", help="comma-separated benchmark names or files")
    ev.add_argument("--samples", type=int, default=1, help="samples per problem (n)")
    ev.add_argument("--max-tokens", type=int, default=1024)
    ev.add_argument("--limit", type=int, default=None, help="first N problems per benchmark")
    ev.add_argument("--temperature", type=float, default=None, help="default 0 for n=1, else 0.6")
    ev.add_argument("--top-p", type=float, default=None, help="default 1.0 for n=1, else 0.95")
    ev.add_argument("--template", default=None, help="prompt template with {problem}")
    ev.add_argument(
        "--no-chat-template", action="store_true", help="do not wrap prompts in the chat template"
    )
    ev.add_argument(
        "--answer-pattern", default=None, help="regex tried after \\boxed{} and before the last number"
    )
    ev.add_argument(
        "--output",
        default=None,
        help="output directory (default: <run>/eval/step_N for a run's checkpoint, else runs/eval/<name>)",
    )
    ev.add_argument("--max-model-len", type=int, default=None)
    ev.add_argument("--dtype", default="float32")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--num-engines", type=int, default=1)
    ev.add_argument(
        "--compare", nargs=2, metavar=("A", "B"), help="compare two summary/step JSON files or two models"
    )
    ev.add_argument("--ray-address", default=None)
    ev.add_argument(
        "--objectives",
        default=None,
        help="comma-separated reward functions also scored on every completion (e.g. math_verify,format,conciseness)",
    )
    ev.set_defaults(func=cmd_eval)

    rep = sub.add_parser("report", help="a run's reward curves and evaluations, as text")
    rep.add_argument("run_dir")
    rep.add_argument("--window", type=int, default=5, help="running mean over this many steps")
    rep.set_defaults(func=cmd_report)

    plot = sub.add_parser("plot", help="reward, objectives, weights and evaluations of runs, as a picture")
    plot.add_argument("runs", nargs="+", help="run directories")
    plot.add_argument("--output", required=True, help="picture to write (.png, .svg or .pdf)")
    plot.set_defaults(func=cmd_plot)
    return parser


def main(argv: list[str] | None = None) -> int:
    _configure_env()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except (FileExistsError, DataError, ModelError, PluginError, RewardConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunStopped as e:  # SIGTERM: a checkpoint was written
        print(f"rlengine: {e}", file=sys.stderr)
        return 128 + signal.SIGTERM
    except ActorFailure as e:
        print(f"rlengine: stopping the run: {e}", file=sys.stderr)
        return 1
    except RunUnhealthy as e:  # the metrics of the step that stopped it are in metrics.jsonl
        print(f"rlengine: stopping the run. {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C; the trainer already said what is kept
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
