"""`rl sweep SWEEP.yaml`: hyper-parameter sweeps of any recipe as Ray Tune trials.

The spec (a base recipe, a search space over dotted config keys, the metric, a scheduler, resources)
is read and checked by `rl.tools.sweep_spec`, whose docstring gives its format.

Each trial runs the toolkit's own driver (`rl.drivers.DRIVERS`) in its run dir runs/<name>/<trial>/
and reports every logged step to Tune through a step callback of the driver's Run. The actors a driver
starts are captured by the trial's placement group (one bundle per actor, an empty head bundle for
the driver itself). Results: runs/<name>/results.csv and results.json, a table printed best first,
and runs/<name>/sweep.png (the metric per trial over steps). wandb groups the trials by the sweep
name (WANDB_RUN_GROUP).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from rl.config import Config, ConfigError
from rl.tools.sweep_spec import SweepSpec, check_keys, load_sweep, trial_bundles, trial_config


# -- resources ------------------------------------------------------------------------------------
def placement(spec: SweepSpec, cfg: Config):
    from ray import tune
    bundles = [{"CPU": spec.resources_per_trial.get("CPU", 0.0), **spec.resources_per_trial}] \
        if spec.resources_per_trial else trial_bundles(cfg)
    return tune.PlacementGroupFactory([{}] + bundles)


# -- the trial -------------------------------------------------------------------------------------
def run_trial(params: dict, setup: dict) -> None:
    """The Tune trainable: one recipe run with the sampled params, its steps reported to Tune."""
    from ray import tune

    from rl.drivers import DRIVERS
    os.chdir(setup["cwd"])  # Tune starts trials in their own dir; recipes hold repo-relative paths
    name = tune.get_context().get_trial_name()
    cfg = trial_config(setup["base"], setup["overrides"], params)
    cfg.run.output_dir, cfg.run.name, cfg.run.progress_bar = setup["sweep_dir"], name, False
    cfg.run.wandb_group = cfg.run.wandb_group or setup["name"]  # the trials share a wandb group
    last: dict[str, Any] = {}
    pending: list[dict] = []

    def report(step: int, row: dict) -> None:
        # carry every metric forward, so one logged only on some steps (eval) is always present; report
        # a step when the next one is logged, and the last after the driver returns, so a scheduler's
        # stop at max_t cannot cut the final checkpoint and evaluation short
        if pending:
            tune.report(pending.pop())
        last.update({k: v for k, v in row.items() if k != "time" and isinstance(v, (int, float))})
        pending.append({**last, "step": step})

    summary = DRIVERS.get(cfg.algorithm.name)(cfg, callbacks=[report])
    summary = summary if isinstance(summary, dict) else {}
    run_dir = Path(cfg.run.output_dir) / cfg.run.name
    (run_dir / "summary.json").write_text(json.dumps(summary, default=str))
    if pending:
        after = summary.get("after") if isinstance(summary.get("after"), dict) else {}
        tune.report({**pending.pop(), **{f"after/{k}": v for k, v in after.items() if isinstance(v, (int, float))}})


def _trial_name(trial) -> str:
    return f"trial_{int(trial.trial_id.rsplit('_', 1)[-1]):02d}"


def tune_space(space: dict) -> dict:
    from ray import tune
    make = {"grid": tune.grid_search, "choice": tune.choice, "uniform": lambda v: tune.uniform(*v),
            "loguniform": lambda v: tune.loguniform(*v)}
    return {key: make[kind](values) for key, dom in space.items() for kind, values in dom.items()}


def launch(spec: SweepSpec, sweep_dir: Path, cfg: Config):
    """Runs the trials on Ray Tune; returns the ResultGrid."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    s = spec.scheduler or {"name": "fifo"}
    scheduler = FIFOScheduler() if s["name"] == "fifo" else ASHAScheduler(
        time_attr="training_iteration", max_t=int(s["max_t"]), grace_period=int(s["grace_period"]),
        reduction_factor=s["reduction_factor"])
    setup = {"cwd": os.getcwd(), "base": str(Path(spec.base).resolve()), "overrides": spec.overrides,
             "sweep_dir": str(sweep_dir), "name": spec.name}
    trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup), placement(spec, cfg))
    tuner = tune.Tuner(trainable, param_space=tune_space(spec.space),
                       tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.mode, scheduler=scheduler,
                                                   num_samples=spec.num_samples,
                                                   max_concurrent_trials=spec.max_concurrent_trials,
                                                   trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
                       run_config=tune.RunConfig(name=time.strftime("tune-%Y%m%d-%H%M%S"),
                                                 storage_path=str(sweep_dir), verbose=1,
                                                 failure_config=tune.FailureConfig(max_failures=spec.max_failures)))
    return tuner.fit()


def run_sweep(spec: SweepSpec) -> list[dict]:
    """Validates, launches, and writes results.csv / results.json / sweep.png; returns rows best first."""
    from rl.tools.sweep_results import collect_rows, print_table, write_results
    from rl.workers.ray_setup import init_ray
    cfg = check_keys(spec)
    sweep_dir = (Path(cfg.run.output_dir) / spec.name).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    init_ray(spec.address)
    _check_capacity(spec, cfg)
    started, grid = time.time(), None
    try:
        grid = launch(spec, sweep_dir, cfg)
    except Exception as e:  # noqa: BLE001 - Tune gave up (e.g. the node's OOM killer); report what ran
        print(f"rl: Ray Tune stopped early: {type(e).__name__}: {str(e).strip().splitlines()[0][:200]}",
              file=sys.stderr)
    rows = collect_rows(spec, sweep_dir, started, grid)
    write_results(rows, spec, sweep_dir)
    print_table(rows, spec)
    return rows


def _check_capacity(spec: SweepSpec, cfg: Config) -> None:
    import ray
    bundles = [spec.resources_per_trial] if spec.resources_per_trial else trial_bundles(cfg)
    need = sum(b.get("CPU", 0.0) for b in bundles)
    have = ray.cluster_resources().get("CPU", 0.0)
    if need > have:
        raise ConfigError(f"resources_per_trial: a trial needs {need:g} CPUs, the Ray cluster has {have:g}")


def main_sweep(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="rl sweep", description="Hyper-parameter sweep of a recipe on Ray Tune "
                                 "(spec format: see rl/tools/sweep_spec.py or the README).")
    ap.add_argument("spec", help="sweep YAML: base, space, metric, mode, num_samples, scheduler, ...")
    ap.add_argument("--address", default=None, help="join a Ray cluster (default: start a local Ray)")
    ap.add_argument("--check", action="store_true", help="validate the spec, print the trials' space and exit")
    args = ap.parse_args(argv)
    try:
        spec = load_sweep(args.spec, args.address)
        if args.check:
            print(yaml.safe_dump(dataclasses.asdict(spec), sort_keys=False), end="")
            print("spec OK")
            return 0
        rows = run_sweep(spec)
    except ConfigError as e:
        print(f"rl: sweep error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rl: sweep interrupted", file=sys.stderr)
        return 130
    return 0 if any(r["status"] != "ERROR" for r in rows) else 1
