"""`rl sweep SWEEP.yaml`: hyper-parameter sweeps of any recipe as Ray Tune trials.

A sweep spec is a base recipe plus a search space over dotted config keys:

    name: lr_clip                          # results under runs/<name>/ (default: the file's stem)
    base: recipes/tiny.yaml
    overrides: {trainer.steps: 3}          # applied to every trial
    space:
      trainer.lr: {loguniform: [1.0e-5, 1.0e-3]}   # or {uniform: [lo, hi]}
      algorithm.eps_high: {grid: [0.2, 0.28]}      # every value, in every sample
      rollout.temperature: {choice: [0.7, 1.0]}    # one value drawn per sample
    num_samples: 2                         # draws of the random keys (each with the full grid)
    metric: reward/mean                    # any key the driver logs per step
    mode: max                              # max | min
    scope: last                            # rank by the last value (or: best)
    scheduler: {name: asha, max_t: 3, grace_period: 1, reduction_factor: 2}   # or fifo (default)
    resources_per_trial: {CPU: 2}          # default: what the recipe's actors ask for
    max_concurrent_trials: 2               # default: as many as the resources allow
    max_failures: 1                        # retry a failed trial (from scratch) this many times; default 0
    address: null                          # a Ray cluster (or --address)

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
import difflib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rl.config import Config, ConfigError, apply_override, validate
from rl.data.mapping import build

DOMAINS = ("grid", "choice", "uniform", "loguniform")
SCHEDULERS = ("asha", "fifo")
SPEC_KEYS = ("name", "base", "overrides", "space", "num_samples", "metric", "mode", "scope", "scheduler",
             "resources_per_trial", "max_concurrent_trials", "max_failures", "address")


@dataclass
class SweepSpec:
    name: str
    base: str
    space: dict[str, dict[str, list]]  # dotted key -> {domain: values}
    metric: str
    mode: str = "max"
    scope: str = "last"
    num_samples: int = 1
    overrides: dict[str, Any] = field(default_factory=dict)
    scheduler: dict | None = None
    resources_per_trial: dict[str, float] | None = None
    max_concurrent_trials: int | None = None
    max_failures: int = 0
    address: str | None = None


# -- building configs ---------------------------------------------------------------------------
def set_dotted(data: dict, key: str, value: Any) -> None:
    """Sets a typed value at a dotted path of a recipe mapping (list items by index), as an override does."""
    apply_override(data, f"{key}=0")  # creates the path (and `rewards` defaults) the way the CLI does
    parts, node = key.split("."), data
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(parts[-1])] = value
    else:
        node[parts[-1]] = value


def trial_config(base: str | Path, overrides: dict[str, Any], params: dict[str, Any]) -> Config:
    """The base recipe + the sweep's overrides + one trial's sampled values, typed and validated."""
    path = Path(base)
    if not path.exists():
        raise ConfigError(f"base: recipe {str(path)!r} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"base: {path} is not valid YAML ({str(e).splitlines()[0]})") from None
    for key, value in {**overrides, **params}.items():
        try:
            set_dotted(data, key, value)
        except (KeyError, IndexError, ValueError, TypeError, AttributeError):
            raise ConfigError(f"{key}: not a key of the recipe (no such path)") from None
    cfg = build(Config, data)
    validate(cfg)
    return cfg


# -- the spec -------------------------------------------------------------------------------------
def load_sweep(path: str | Path, address: str | None = None) -> SweepSpec:
    """Reads and validates a sweep spec; every problem is a ConfigError naming the key."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"sweep spec {str(path)!r} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a sweep spec is a mapping (base, space, metric, ...)")
    for key in raw:
        if key not in SPEC_KEYS:
            close = difflib.get_close_matches(str(key), SPEC_KEYS, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown sweep key '{key}'{hint} (valid: {', '.join(SPEC_KEYS)})")
    for key in ("base", "space", "metric"):
        if key not in raw:
            raise ConfigError(f"{key}: missing (a sweep needs base, space and metric)")
    spec = SweepSpec(name=str(raw.get("name") or path.stem), base=_str(raw, "base"),
                     space=_space(raw["space"]), metric=_str(raw, "metric"), mode=_enum(raw, "mode", ("max", "min"), "max"),
                     scope=_enum(raw, "scope", ("last", "best"), "last"), num_samples=_pos_int(raw, "num_samples", 1),
                     overrides=_overrides(raw.get("overrides")), scheduler=_scheduler(raw.get("scheduler")),
                     resources_per_trial=_resources(raw.get("resources_per_trial")),
                     max_concurrent_trials=_pos_int(raw, "max_concurrent_trials", None),
                     max_failures=_count(raw, "max_failures"),
                     address=address or raw.get("address"))
    check_keys(spec)
    return spec


def _str(raw: dict, key: str) -> str:
    if not isinstance(raw[key], str) or not raw[key]:
        raise ConfigError(f"{key}: expected a non-empty string, got {raw[key]!r}")
    return raw[key]


def _enum(raw: dict, key: str, valid: tuple, default: str) -> str:
    v = raw.get(key, default)
    if v not in valid:
        raise ConfigError(f"{key}: expected one of {', '.join(valid)}, got {v!r}")
    return v


def _pos_int(raw: dict, key: str, default):
    v = raw.get(key, default)
    if v is None and default is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ConfigError(f"{key}: expected an integer >= 1, got {v!r}")
    return v


def _count(raw: dict, key: str) -> int:
    v = raw.get(key, 0)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ConfigError(f"{key}: expected an integer >= 0, got {v!r}")
    return v


def _overrides(raw) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        raise ConfigError("overrides: expected a mapping {dotted.key: value}")
    return dict(raw)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _space(raw) -> dict:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("space: empty; give at least one dotted key, e.g. trainer.lr: {grid: [1e-5, 3e-5]}")
    out = {}
    for key, dom in raw.items():
        where = f"space.{key}"
        if not isinstance(dom, dict) or len(dom) != 1 or next(iter(dom)) not in DOMAINS:
            raise ConfigError(f"{where}: expected one of {{grid: [...]}}, {{choice: [...]}}, {{uniform: [lo, hi]}}, "
                              f"{{loguniform: [lo, hi]}}, got {dom!r}")
        kind, values = next(iter(dom.items()))
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.{kind}: expected a non-empty list, got {values!r}")
        if kind in ("uniform", "loguniform"):
            values = [float(v) if isinstance(v, str) and _floatish(v) else v for v in values]  # YAML reads 1e-5 as str
            if len(values) != 2 or not all(_number(v) for v in values) or not values[0] < values[1]:
                raise ConfigError(f"{where}.{kind}: expected [lo, hi] numbers with lo < hi, got {values!r}")
            if kind == "loguniform" and values[0] <= 0:
                raise ConfigError(f"{where}.loguniform: bounds must be > 0, got {values!r}")
        out[str(key)] = {kind: values}
    return out


def _floatish(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _scheduler(raw) -> dict | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict) or raw.get("name") not in SCHEDULERS:
        got = raw.get("name") if isinstance(raw, dict) else raw
        raise ConfigError(f"scheduler.name: expected one of {', '.join(SCHEDULERS)}, got {got!r}")
    allowed = {"asha": ("name", "max_t", "grace_period", "reduction_factor"), "fifo": ("name",)}[raw["name"]]
    for k, v in raw.items():
        if k not in allowed:
            raise ConfigError(f"scheduler.{k}: not a setting of {raw['name']} (valid: {', '.join(allowed)})")
        if k != "name" and (not _number(v) or v <= 0 or (k != "reduction_factor" and v != int(v))):
            raise ConfigError(f"scheduler.{k}: expected a positive {'number' if k == 'reduction_factor' else 'integer'}, "
                              f"got {v!r}")
    if raw["name"] == "asha":
        raw = {"max_t": 100, "grace_period": 1, "reduction_factor": 2, **raw}
        if raw["grace_period"] > raw["max_t"]:
            raise ConfigError(f"scheduler.grace_period: {raw['grace_period']} exceeds max_t {raw['max_t']}")
        if raw["reduction_factor"] <= 1:
            raise ConfigError(f"scheduler.reduction_factor: must be > 1, got {raw['reduction_factor']}")
    return raw


def _resources(raw) -> dict | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("resources_per_trial: expected a mapping such as {CPU: 2, GPU: 1}")
    out = {}
    for k, v in raw.items():
        name = {"cpu": "CPU", "gpu": "GPU"}.get(str(k).lower(), str(k))
        if not _number(v) or v < 0:
            raise ConfigError(f"resources_per_trial.{k}: expected a number >= 0, got {v!r}")
        out[name] = float(v)
    return out


def sample_values(dom: dict) -> list:
    """Values a domain can take, for checking them against the config: all of a grid/choice; the bounds
    and the middle of a range, as floats (a range over an integer key is a type error)."""
    (kind, values), = dom.items()
    if kind in ("uniform", "loguniform"):
        lo, hi = float(values[0]), float(values[1])
        return [lo, (lo + hi) / 2, hi]
    return list(values)


def check_keys(spec: SweepSpec) -> Config:
    """Resolves the base + overrides, then each space key with each of its sample values, through the
    config loader: an unknown key or a wrong type fails here, before anything launches."""
    cfg = trial_config(spec.base, spec.overrides, {})
    for key, dom in spec.space.items():
        if key in spec.overrides:
            raise ConfigError(f"space.{key}: also fixed in overrides; keep it in one place")
        for value in sample_values(dom):
            try:
                trial_config(spec.base, spec.overrides, {key: value})
            except ConfigError as e:
                raise ConfigError(f"space.{key}: {e}") from None
    if spec.resources_per_trial is not None:
        need = sum(b.get("CPU", 0.0) for b in trial_bundles(cfg))
        if spec.resources_per_trial.get("CPU", 0.0) < need:
            raise ConfigError(f"resources_per_trial.CPU: {spec.resources_per_trial.get('CPU', 0.0):g} is less than "
                              f"the {need:g} CPUs this recipe's actors ask for")
    return cfg


# -- resources ------------------------------------------------------------------------------------
def _cpus(remote, default: float = 1.0) -> float:
    opts = getattr(remote, "_default_options", None) or {}
    return float(opts.get("num_cpus", default))


def trial_bundles(cfg: Config) -> list[dict]:
    """One placement-group bundle per actor or task the recipe's driver runs at once (the driver
    itself runs in the trial with no reservation)."""
    name = cfg.algorithm.name
    if name == "dpo":
        from rl.drivers.dpo import actor_bundles
        return actor_bundles(cfg)
    if name == "control_ppo":
        c = cfg.control
        return [{"CPU": 1.0}] + ([{"CPU": 1.0}] * c.num_shards if c.num_shards > 1 else [])
    from rl.drivers.rewards import _score_task
    from rl.workers.learner import LearnerActor
    from rl.workers.rollout_worker import RolloutWorker
    bundles = [{"CPU": _cpus(RolloutWorker)} for _ in range(cfg.rollout.num_workers)]
    bundles += [{"CPU": _cpus(LearnerActor)}, {"CPU": _cpus(_score_task) * len(cfg.rewards)}]
    if name == "ppo":  # the critic (own actor unless colocated) and the frozen reference
        bundles += [{"CPU": 0.5}, {"CPU": 0.25}]
    return bundles


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
    os.environ["WANDB_RUN_GROUP"] = setup["name"]  # wandb.init reads it: the trials share a group
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
                                 "(spec format: see rl/tools/sweep.py or the README).")
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
