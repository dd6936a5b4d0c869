"""`rl`: the command line. One table maps each subcommand to the function that runs it.

  rl train RECIPE [key=value ...] [--resume] [--address ADDR] [--print-config] [--plan PLAN.yaml]
  rl eval RECIPE [key=value ...] [--checkpoint DIR]      held-out greedy accuracy (and pass@k); a coding
                                                         recipe: its agent over its tasks (coding.eval_model)
  rl eval swebench ...                                   coding agents (see `rl eval swebench --help`)
  rl bench NAME [...]                                    benchmarks: grpo-step, knapsack, envs, ...
  rl value train|eval ...                                V0 state-zero value model from run histories
  rl route ...                                           route prompts across models by V0 and cost
  rl plan CLUSTER.yaml                                   search an execution plan (ReaLHF-style)
  rl sweep SWEEP.yaml                                    hyper-parameter sweep on Ray Tune
  rl prefs ROLLOUTS.jsonl --out pairs.jsonl              DPO pairs (best vs worst) from a GRPO rollout log
  rl export CHECKPOINT OUT_DIR                           an HF folder from a checkpoint

A broken recipe exits with code 2 and one line naming the key; no traceback.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from rl.config import ConfigError, dump, load_config

EXIT_CONFIG = 2

SUBCOMMANDS = {  # name: ("module:function(argv) -> exit code", help)
    "train": ("rl.cli:train_main", "train from a YAML recipe (`rl train --help`)"),
    "eval": ("rl.cli:eval_main", "held-out accuracy of a recipe's model or a checkpoint (a coding recipe: "
             "its agent over its tasks); `rl eval swebench ...` for coding agents"),
    "bench": ("rl.cli:bench_main", "benchmarks, each next to its anchor in the same run (`rl bench --help`)"),
    "value": ("rl.v0.cli:main_value", "V0 value model: `rl value train|eval --help`"),
    "route": ("rl.tools.route:main_route", "route prompts across models by predicted success and cost"),
    "plan": ("rl.tools.realloc_plan:main_plan", "parameter-reallocation planner for a cluster spec (ReaLHF)"),
    "sweep": ("rl.tools.sweep:main_sweep", "launch a hyper-parameter sweep on Ray Tune"),
    "prefs": ("rl.data.prefs:main", "DPO preference pairs from a GRPO run's rollouts.jsonl"),
    "export": ("rl.tools.export:main", "an HF folder (safetensors + tokenizer) from a run's checkpoint"),
}


def _run(target: str, argv: list[str]) -> int:
    module, fn = target.split(":")
    return int(getattr(importlib.import_module(module), fn)(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS:
        p = argparse.ArgumentParser(prog="rl", description="RL post-training toolkit: GRPO/PPO/DPO on Ray, "
                                    "allocation, classic-control PPO at scale, coding-agent evaluation.")
        sub = p.add_subparsers(dest="command", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")
        for name, (_, help_) in SUBCOMMANDS.items():
            sub.add_parser(name, help=help_, add_help=False)
        p.parse_args(argv)  # prints usage and exits 2 (or 0 for --help)
        return EXIT_CONFIG
    try:
        return _run(SUBCOMMANDS[argv[0]][0], argv[1:])
    except ConfigError as e:
        print(f"rl: {e.label}: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        print("rl: interrupted; `rl train RECIPE --resume` continues from the last checkpoint", file=sys.stderr)
        return 130


def _recipe_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. trainer.steps=20")
    p.add_argument("--address", default=None, help="join a Ray cluster (default: start a local Ray)")
    return p


def train_main(argv: list[str]) -> int:
    p = _recipe_parser("rl train")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--plan", default=None, help="an executable plan from `rl plan CLUSTER --recipe RECIPE`: "
                   "recipe < plan < command-line overrides")
    args = p.parse_intermixed_args(argv)  # options may come before or after the key=value overrides
    if args.plan:
        from rl.tools.plan_file import load_with_plan
        cfg = load_with_plan(args.recipe, args.plan, args.overrides)
    else:
        cfg = load_config(args.recipe, args.overrides)
    from rl.startup import check_startup
    check_startup(cfg)  # names, rewards, model and dataset sources: before anything starts
    if args.print_config:
        print(dump(cfg), end="")
        return 0
    from rl.drivers import DRIVERS
    from rl.run.restarts import run_with_restarts
    run_with_restarts(DRIVERS.get(cfg.algorithm.name), cfg, resume=args.resume, address=args.address)
    return 0


def eval_main(argv: list[str]) -> int:
    if argv[:1] == ["swebench"]:
        return _run("rl.tools.swebench:main", argv[1:])
    p = _recipe_parser("rl eval")
    p.add_argument("--checkpoint", default=None, help="a run's checkpoint dir (default: the base model)")
    args = p.parse_intermixed_args(argv)
    cfg = load_config(args.recipe, args.overrides)
    if cfg.algorithm.name == "coding_grpo":   # the recipe's coding agent over its tasks
        from rl.tools.coding_eval import eval_coding
        return eval_coding(cfg, args.checkpoint)
    from rl.tools.eval_checkpoint import eval_checkpoint
    eval_checkpoint(cfg, args.checkpoint, args.address)
    return 0


def _bench_names() -> list[str]:
    from pathlib import Path
    bench_dir = Path(__file__).with_name("bench")  # listed, not imported: nothing imports the benchmarks
    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules([str(bench_dir)])
                  if not m.name.startswith(("_", "common")))  # shared helpers, not benches


def bench_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rl bench", description="benchmarks; each writes bench/results/<name>.json")
    p.add_argument("name", choices=_bench_names())
    p.add_argument("args", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    return _run("rl.bench." + args.name.replace("-", "_") + ":main", args.args)


if __name__ == "__main__":
    sys.exit(main())
