"""`rl plan CLUSTER.yaml --recipe RECIPE --out plan.yaml`: an executable plan for one recipe.

The cluster spec gives the hardware; the recipe gives the workload and the models, replacing the
spec's `models:` and `workload:`:
  batch_seqs  = trainer.prompts_per_step * rollout.samples_per_prompt
  prompt_len  = mean chat-template tokens of the task's first 32 training prompts (estimated)
  gen_len     = rollout.max_new_tokens (the longest a completion may be: an upper bound)
  minibatches = ceil(batch_seqs / trainer.minibatch_samples) * algorithm.updates_per_batch
  models      = actor (model.name); + ref when algorithm.kl_coef > 0 (inside the learner) or, for
                ppo, critic.kl_penalty_coef > 0 (a reference actor); ppo: + critic (critic.model)
The search is restricted to what `rl train` executes (rollout/realloc/executable.py) and the plan
is written as YAML (rl/tools/plan_file.py reads it back for `rl train --plan`).

Example: rl plan recipes/clusters/cpu-2core.yaml --recipe recipes/tiny.yaml --out plan.yaml
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import yaml

from rl.config import Config, ConfigError, load_config
from rl.tools.plan_file import plan_overrides, validate_plan
from rollout.realloc.cluster import PRESETS, ClusterSpec, Workload, load_cluster_spec
from rollout.realloc.cost_model import LlamaShape
from rollout.realloc.executable import Executable, plan_executable
from rollout.realloc.planner import PlanModel

PROMPT_SAMPLE = 32
ROLE_OF = {"actor_gen": "engine", "actor_train": "learner", "critic_inf": "critic", "critic_train": "critic",
           "reward_inf": "reward"}


def model_shape(name: str, key: str = "model.name") -> LlamaShape:
    """A built-in preset, or the shape in a local HF folder's config.json."""
    if name in PRESETS:
        return PRESETS[name]
    config = Path(name) / "config.json"
    if not config.is_file():
        raise ConfigError(f"{key}: rl plan knows the shapes of {', '.join(PRESETS)} and of local HF folders "
                          f"with a config.json; {name!r} is neither")
    c = json.loads(config.read_text())
    try:
        return LlamaShape(c["num_hidden_layers"], c["hidden_size"], c["intermediate_size"], c["num_attention_heads"],
                          c.get("num_key_value_heads", c["num_attention_heads"]), c["vocab_size"],
                          bool(c.get("tie_word_embeddings", False)))
    except KeyError as e:
        raise ConfigError(f"{key}: {config} has no {e} (rl plan models Llama-like decoders)") from None


def reference_kind(cfg: Config) -> str | None:
    """Where the KL reference runs: 'learner' (algorithm.kl_coef), 'actor' (ppo's critic.kl_penalty_coef)."""
    if cfg.algorithm.kl_coef > 0:
        return "learner"
    if cfg.algorithm.name == "ppo" and cfg.critic.kl_penalty_coef > 0:
        return "actor"
    return None


def recipe_models(cfg: Config) -> dict:
    actor = model_shape(cfg.model.name)
    models = {"actor": actor}
    if reference_kind(cfg) is not None:
        models["ref"] = actor
    if cfg.algorithm.name == "ppo":
        models["critic"] = model_shape(cfg.critic.model, "critic.model") if cfg.critic.model else actor
    return models


def prompt_tokens(cfg: Config) -> tuple[int, str]:
    """(estimated prompt length, how it was estimated)."""
    try:
        from rl import build
        from rl.data.prompts import PromptEncoder
        from rl.workers.models import load_tokenizer
        task, tok = build.task_from(cfg), load_tokenizer(cfg.model.name)
        encode = PromptEncoder(tok, cfg.task.system_prompt)
        lengths = [len(encode(ex)) for ex in task.train[:PROMPT_SAMPLE]]
        return round(sum(lengths) / len(lengths)), f"mean chat-template tokens of {len(lengths)} training prompts"
    except Exception as e:  # noqa: BLE001 - an estimate: fall back rather than refuse to plan
        guess = 64
        return guess, f"{guess} tokens guessed (the task's prompts could not be tokenized: {type(e).__name__})"


def recipe_workload(cfg: Config, prompt_len: int) -> Workload:
    if cfg.algorithm.name not in ("grpo", "ppo"):
        raise ConfigError(f"algorithm.name: rl plan --recipe plans grpo and ppo recipes, not {cfg.algorithm.name!r}")
    t = cfg.trainer
    batch = t.prompts_per_step * cfg.rollout.samples_per_prompt
    minibatches = math.ceil(batch / t.minibatch_samples) * cfg.algorithm.updates_per_batch
    return Workload(cfg.algorithm.name, batch, prompt_len, cfg.rollout.max_new_tokens, minibatches)


def recipe_spec(cluster: ClusterSpec, cfg: Config, prompt_len: int) -> tuple[ClusterSpec, Executable]:
    """The cluster's hardware with the recipe's models and workload, and what rl train can run."""
    spec = dataclasses.replace(cluster, models=recipe_models(cfg), workload=recipe_workload(cfg, prompt_len))
    return spec, Executable(engine=cfg.rollout.engine, reference=reference_kind(cfg) or "learner")


class _Flow(dict):
    """A mapping written on one line (a call row)."""


class _FlowList(list):
    pass


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Flow, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v, flow_style=True))
_Dumper.add_representer(_FlowList, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def _devices(c) -> list[int]:
    return _FlowList(c.devices())


def plan_roles(model: PlanModel, plan: list[int], engine: str) -> tuple[dict, str]:
    """-> (roles, placement) of an executable plan."""
    cand = {n.name: model.cands[i][plan[i]] for i, n in enumerate(model.nodes)}
    gen, learner = cand["actor_gen"], cand["actor_train"]
    roles = {"learner": {"num_actors": learner.size, "devices": _devices(learner)},
             "engine": {"engine": engine, "num_workers": gen.strategy.dp, "tensor_parallel_size": gen.strategy.tp,
                        "devices": _devices(gen)}}
    colocated = set(gen.devices()) & set(learner.devices())
    critic = cand.get("critic_train")
    if critic is not None:
        together = bool(set(critic.devices()) & set(learner.devices()))
        roles["critic"] = {"num_actors": critic.size, "placement": "colocated" if together else "own_actor",
                           "devices": _devices(critic)}
    if "ref_inf" in cand and model.rules.reference == "actor":
        ref = cand["ref_inf"]
        roles["reference"] = {"placement": "colocated" if ref.start == learner.start else "own_actor",
                              "devices": _devices(ref)}
    return roles, "colocated" if colocated else "separate"


def plan_document(model: PlanModel, plan: list[int], cluster_path: str, recipe_path: str, cfg: Config,
                  notes: list[str]) -> dict:
    ev = model.evaluate(plan)
    calls = []
    for i, n in enumerate(model.nodes):
        c = model.cands[i][plan[i]]
        role = ROLE_OF.get(n.name, "learner" if model.rules.reference == "learner" else "reference")
        calls.append(_Flow({"call": n.name, "role": role, "devices": _devices(c), "dp": c.strategy.dp, "tp": c.strategy.tp,
                      "pp": c.strategy.pp, "est_s": round(model.seconds[i][plan[i]], 4)}))
    roles, placement = plan_roles(model, plan, cfg.rollout.engine)
    return {"cluster": cluster_path, "cluster_name": model.spec.name, "recipe": recipe_path, "model": cfg.model.name,
            "algorithm": cfg.algorithm.name, "workload": _Flow(dataclasses.asdict(model.spec.workload)), "calls": calls,
            "roles": roles, "placement": placement, "estimated_makespan_s": round(ev.makespan_s, 4),
            "overrides": plan_overrides(roles, placement), "notes": notes}


def _print(doc: dict) -> None:
    print(f"{'call':<14}{'role':<10}{'devices':<14}{'dp/tp/pp':<10}{'est. s':>9}")
    for c in doc["calls"]:
        devs = f"{c['devices'][0]}-{c['devices'][-1]}" if len(c["devices"]) > 1 else str(c["devices"][0])
        print(f"{c['call']:<14}{c['role']:<10}{devs:<14}{c['dp']}/{c['tp']}/{c['pp']:<6}{c['est_s']:>9.3f}")
    print(f"placement: {doc['placement']}   estimated makespan: {doc['estimated_makespan_s']:.3f} s/step")
    print("overrides: " + " ".join(doc["overrides"]))


def run_recipe_plan(cluster_path: str, recipe_path: str, out: str, seed: int, iters: int,
                    time_budget_s: float) -> int:
    t0 = time.perf_counter()
    cfg = load_config(recipe_path)
    prompt_len, how = prompt_tokens(cfg)
    spec, rules = recipe_spec(load_cluster_spec(cluster_path), cfg, prompt_len)
    model = PlanModel(spec, rules=rules)
    for node, cands in zip(model.nodes, model.cands):
        if not cands:
            raise ConfigError(f"{node.name}: no layout rl train can run fits this cluster's devices")
    results = plan_executable(model, seed=seed, iters=iters, time_budget_s=time_budget_s)
    w, hw = spec.workload, spec.hardware
    print(f"== {spec.name} ({hw.nodes} x {hw.gpus_per_node} devices) for {recipe_path}: {w.algorithm}, "
          f"{w.batch_seqs} seqs ({cfg.trainer.prompts_per_step} prompts x {cfg.rollout.samples_per_prompt}), "
          f"prompt ~{w.prompt_len} tokens ({how}), gen_len {w.gen_len} (rollout.max_new_tokens), "
          f"{w.minibatches} minibatch(es)")
    mh = results["mh"]
    if mh.evaluation is None:
        print("no executable plan fits in memory")
        return 1
    notes = [f"workload from {recipe_path}; prompt_len: {how}; gen_len: rollout.max_new_tokens (upper bound)",
             f"hardware from {cluster_path}; search restricted to what rl train executes, seed {seed}, "
             f"{mh.iterations} MH iterations, {time.perf_counter() - t0:.1f} s"]
    doc = validate_plan(plan_document(model, mh.plan, cluster_path, recipe_path, cfg, notes))
    try:
        load_config(recipe_path, doc["overrides"])  # what rl train --plan will load
    except ConfigError as e:
        raise ConfigError(f"the plan's overrides do not validate on {recipe_path}: {e}") from None
    _print(doc)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    header = f"# rl plan {cluster_path} --recipe {recipe_path}; run it with: rl train {recipe_path} --plan {out}\n"
    Path(out).write_text(header + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=200))
    print(f"wrote {out}")
    return 0
