"""Sweep specs: a base recipe plus a search space over dotted config keys, read and validated.

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

`load_sweep` checks every key, domain and setting, and resolves the base recipe with the overrides and
each space key's sample values through the config loader (`trial_config`), so an unknown key or a
wrong type fails before anything launches. `rl.tools.sweep` runs the trials on Ray Tune.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rl.config import Config, ConfigError, apply_override, validate
from rl.data.mapping import build, load_yaml_mapping

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
    raw = load_yaml_mapping(path, "sweep spec", "keys (base, space, metric, ...)")
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
    from rl.startup import check_startup
    cfg = trial_config(spec.base, spec.overrides, {})
    check_startup(cfg)
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


# -- what a trial's actors ask for -------------------------------------------------------------
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
