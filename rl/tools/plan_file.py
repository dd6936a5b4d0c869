"""The executable plan file: what `rl plan CLUSTER --recipe R --out plan.yaml` writes and
`rl train R --plan plan.yaml` runs.

A plan says which roles share which devices and each call's layout; what `rl train` executes is
its `roles:` and `placement:`, turned into config overrides (`plan_overrides`). Precedence: the
recipe, then the plan's overrides, then the CLI's `key=value` overrides (the CLI wins over the
plan, the plan over the recipe); `placement.plan` records the plan's path in the resolved config.
A bad plan (unknown key, wrong type, overrides that disagree with its roles, another model,
recipe, algorithm or engine than the run's) is a ConfigError naming the key: one line, exit 2.

Example:
    plan:  roles: {learner: {num_actors: 2, devices: [0, 1]},
                   engine: {engine: hf, num_workers: 2, tensor_parallel_size: 1, devices: [0, 1]}}
           placement: colocated
    ->     ["resources.learner.num_actors=2", "rollout.num_workers=2", "rollout.tensor_parallel_size=1",
            "placement.mode=colocated", "sync.mode=full", "sync.transport=reshard"]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


from rl.config import Config, ConfigError, load_config
from rl.data.mapping import load_yaml_mapping

REQUIRED = ("cluster", "recipe", "model", "algorithm", "calls", "roles", "placement", "overrides")
OPTIONAL = ("cluster_name", "workload", "estimated_makespan_s", "notes")
CALL_KEYS = ("call", "role", "devices", "dp", "tp", "pp", "est_s")
ROLE_KEYS = {"learner": ("num_actors", "devices"),
             "engine": ("engine", "num_workers", "tensor_parallel_size", "devices"),
             "critic": ("num_actors", "placement", "devices"),
             "reference": ("placement", "devices")}


def plan_overrides(roles: dict, placement: str) -> list[str]:
    """The config overrides that make `rl train` run the plan's roles and placement.

    More than one learner rank moves weights between two different layouts (N FSDP2 shards ->
    M engine replicas): full syncs, resharded straight into hf engines (sync.transport: reshard),
    streamed over the object store into vLLM ones. With one learner the recipe's sync is kept.
    """
    learner, engine = roles["learner"], roles["engine"]
    out = [f"resources.learner.num_actors={learner['num_actors']}", f"rollout.num_workers={engine['num_workers']}",
           f"rollout.tensor_parallel_size={engine['tensor_parallel_size']}", f"placement.mode={placement}"]
    if "critic" in roles:
        out += [f"resources.critic.num_actors={roles['critic']['num_actors']}",
                f"critic.placement={roles['critic']['placement']}"]
    if learner["num_actors"] > 1:
        out += ["sync.mode=full", "sync.transport=" + ("reshard" if engine["engine"] == "hf" else "object_store")]
    return out


def _keys(raw, allowed: tuple, required: tuple, where: str) -> None:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    import difflib
    for key in raw:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), list(allowed), n=1)
            raise ConfigError(f"{where}.{key}: unknown key" + (f" (did you mean {where}.{close[0]}?)" if close else ""))
    for key in required:
        if key not in raw:
            raise ConfigError(f"{where}.{key}: missing required field")


def _count(value, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{where}: expected an int >= 1, got {value!r}")
    return value


def validate_plan(raw) -> dict:
    """Checks keys, types and that `overrides` is what `roles` and `placement` imply. -> raw"""
    _keys(raw, REQUIRED + OPTIONAL, REQUIRED, "plan")
    if raw["placement"] not in ("separate", "colocated"):
        raise ConfigError(f"plan.placement: expected separate or colocated, got {raw['placement']!r}")
    roles = raw["roles"]
    _keys(roles, tuple(ROLE_KEYS), ("learner", "engine"), "plan.roles")
    for role, fields in ROLE_KEYS.items():
        if role in roles:
            _keys(roles[role], fields, fields, f"plan.roles.{role}")
            for key in ("num_actors", "num_workers", "tensor_parallel_size"):
                if key in fields:
                    _count(roles[role][key], f"plan.roles.{role}.{key}")
    if roles["engine"]["engine"] not in ("hf", "vllm"):
        raise ConfigError(f"plan.roles.engine.engine: expected hf or vllm, got {roles['engine']['engine']!r}")
    if not isinstance(raw["calls"], list) or not raw["calls"]:
        raise ConfigError("plan.calls: expected a non-empty list of calls")
    for i, call in enumerate(raw["calls"]):
        _keys(call, CALL_KEYS, CALL_KEYS, f"plan.calls.{i}")
    want = plan_overrides(roles, raw["placement"])
    if raw["overrides"] != want:
        raise ConfigError(f"plan.overrides: {raw['overrides']} disagrees with plan.roles / plan.placement, "
                          f"which imply {want}")
    return raw


def load_plan(path: str | Path) -> dict:
    if not Path(path).is_file():
        raise ConfigError(f"--plan: {path}: no such plan file (write one with `rl plan CLUSTER.yaml --recipe R --out {path}`)")
    return validate_plan(load_yaml_mapping(path, "plan", "calls, roles, placement and overrides"))


def check_matches(plan: dict, recipe: str, cfg: Config) -> None:
    """The plan was made for this recipe, model, algorithm and engine."""
    pairs = [("recipe", Path(plan["recipe"]).name, Path(recipe).name),
             ("model", plan["model"], cfg.model.name), ("algorithm", plan["algorithm"], cfg.algorithm.name),
             ("roles.engine.engine", plan["roles"]["engine"]["engine"], cfg.rollout.engine)]
    for key, planned, actual in pairs:
        if planned != actual:
            raise ConfigError(f"plan.{key}: the plan was made for {planned!r}, this run has {actual!r} "
                              f"(re-plan with `rl plan {plan['cluster']} --recipe {recipe} --out PLAN.yaml`)")


def load_with_plan(recipe: str, plan_path: str, overrides: list[str]) -> Config:
    """recipe <- plan overrides (+ placement.plan) <- CLI overrides; prints one line on stderr."""
    plan = load_plan(plan_path)
    planned = [*plan["overrides"], f"placement.plan={json.dumps(str(plan_path))}"]  # quoted: always a str
    cfg = load_config(recipe, [*planned, *overrides])
    check_matches(plan, recipe, cfg)
    cli_keys = {o.split("=", 1)[0].strip() for o in overrides}
    won = [o.split("=", 1)[0] for o in plan["overrides"] if o.split("=", 1)[0] in cli_keys]
    est = plan.get("estimated_makespan_s")
    print(f"rl train: plan {plan_path} ({plan.get('cluster_name', plan['cluster'])}"
          + (f", est. {est:.2f} s/step" if isinstance(est, (int, float)) else "") + f") set {' '.join(plan['overrides'])}"
          + (f"; the command line overrides {', '.join(won)}" if won else ""), file=sys.stderr)
    return cfg
