"""`rl`: the command line.

  rl train RECIPE [key=value ...] [--resume] [--address ADDR] [--print-config]
  rl eval RECIPE [key=value ...] [--checkpoint DIR]      held-out greedy accuracy (and pass@k)
  rl eval swebench ...                                   coding agents (see `rl eval swebench --help`)
  rl bench NAME [...]                                    benchmarks: grpo-step, knapsack, envs, ...
  rl value train|eval ...                                V0 state-zero value model from run histories
  rl route ...                                           route prompts across models by V0 and cost
  rl plan CLUSTER.yaml                                   search an execution plan (ReaLHF-style)
  rl sweep SWEEP.yaml                                    hyper-parameter sweep on Ray Tune
  rl prefs ROLLOUTS.jsonl --out pairs.jsonl              DPO pairs (best vs worst) from a GRPO rollout log

A broken recipe exits with code 2 and one line naming the key; no traceback.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from rl.config import ConfigError, dump, load_config

EXIT_CONFIG = 2


def _bench_names() -> list[str]:
    import rl.bench
    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(rl.bench.__path__))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rl", description="RL post-training toolkit: GRPO on Ray, "
                                "allocation, classic-control PPO at scale, coding-agent evaluation.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train from a YAML recipe")
    t.add_argument("recipe")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. trainer.steps=20")
    t.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    t.add_argument("--address", default=None, help="join a Ray cluster (default: start a local Ray)")
    t.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    e = sub.add_parser("eval", help="evaluate a recipe's model (or a checkpoint) on the held-out split; "
                       "`rl eval swebench ...` for coding agents")
    e.add_argument("recipe")
    e.add_argument("overrides", nargs="*")
    e.add_argument("--checkpoint", default=None, help="a run's checkpoint dir (default: the base model)")
    e.add_argument("--address", default=None)
    sub.add_parser("value", help="V0 value model: `rl value train|eval --help`")
    sub.add_parser("route", help="route prompts across models by predicted success and cost (`rl route --help`)")
    sub.add_parser("plan", help="parameter-reallocation planner for a cluster spec (`rl plan --help`)")
    sub.add_parser("sweep", help="launch a hyper-parameter sweep on Ray Tune (`rl sweep --help`)")
    sub.add_parser("prefs", help="DPO preference pairs from a GRPO run's rollouts.jsonl (`rl prefs --help`)")
    b = sub.add_parser("bench", help=f"benchmarks: {', '.join(_bench_names())}")
    b.add_argument("name", choices=_bench_names())
    b.add_argument("args", nargs=argparse.REMAINDER)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["eval", "swebench"]:
        return importlib.import_module("rl.tools.swebench").main(argv[2:])
    if argv[:1] == ["value"]:
        return importlib.import_module("rl.v0.value").main_value(argv[1:])
    if argv[:1] == ["route"]:
        return importlib.import_module("rl.tools.route").main_route(argv[1:])
    if argv[:1] == ["plan"]:
        return importlib.import_module("rl.tools.realloc_plan").main_plan(argv[1:])
    if argv[:1] == ["sweep"]:
        return importlib.import_module("rl.tools.sweep").main_sweep(argv[1:])
    if argv[:1] == ["prefs"]:
        return importlib.import_module("rl.data.prefs").main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        if args.command == "bench":
            mod = importlib.import_module("rl.bench." + args.name.replace("-", "_"))
            return int(mod.main(args.args) or 0)
        cfg = load_config(args.recipe, args.overrides)
        if args.command == "train":
            if args.print_config:
                print(dump(cfg), end="")
                return 0
            return _train(cfg, args)
        from rl.tools.eval_checkpoint import eval_checkpoint
        eval_checkpoint(cfg, args.checkpoint, args.address)
        return 0
    except ConfigError as e:
        print(f"rl: config error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        print("rl: interrupted; `rl train RECIPE --resume` continues from the last checkpoint", file=sys.stderr)
        return 130


def _train(cfg, args) -> int:
    from rl.drivers import DRIVERS, run_with_restarts
    try:
        driver = DRIVERS.get(cfg.algorithm.name)
    except KeyError as e:
        raise ConfigError(f"algorithm.name: {e}") from None
    run_with_restarts(driver, cfg, resume=args.resume, address=args.address)
    return 0


if __name__ == "__main__":
    sys.exit(main())
