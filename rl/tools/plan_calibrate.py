"""`rl plan --calibrate runs/NAME [CLUSTER.yaml]`: refit the cost model on a finished run.

A run logs, per step, the time of each phase (metrics.jsonl); each is a call, or calls, of the
plan's dataflow graph in the layouts the run used (its resolved config.yaml):
  time/generate_s  actor_gen: M engines x tp T, the step's longest completion as gen_len
  time/train_s     actor_train (+ ref_inf inside the learner; ppo: critic_inf, ref_inf, then the
                   actor and critic updates side by side: inferences + max(trains))
  time/sync_s      the reallocation learner layout -> engine layout (link constants: not fitted)
The device constants (compute_efficiency, memory_efficiency, overhead_us_per_layer) are refitted
on the generate and train times of every step but the first (warm-up), and the model's error per
call is printed before and after; the result is written to runs/NAME/calibration.json.
Hardware: the cluster spec of the run's plan (placement.plan), else the spec given.

Example: rl plan --calibrate runs/tiny
"""
from __future__ import annotations

import dataclasses
import json
from functools import partial
from pathlib import Path

from rl.config import Config, ConfigError, load_config
from rl.data.records import read_jsonl
from rl.tools.plan_file import load_plan
from rl.tools.plan_recipe import prompt_tokens, recipe_models, reference_kind
from rollout.realloc.calibrate import fit_constants, predict
from rollout.realloc.cluster import load_cluster_spec
from rollout.realloc.cost_model import Call, Hardware, Strategy
from rollout.realloc.planner import Candidate, realloc_seconds

FITTED = ("compute_efficiency", "memory_efficiency", "overhead_us_per_layer")


def run_layouts(cfg: Config, num_devices: int) -> dict[str, Candidate]:
    """The devices and (dp, tp, pp) each role ran in, numbered as the planner numbers them (roles
    that had bundles of their own but do not fit the cluster's devices side by side shared them,
    as every role shares the one "device" of a CPU cluster spec)."""
    n, m, t = cfg.resources.learner.num_actors, cfg.rollout.num_workers, cfg.rollout.tensor_parallel_size
    colocated = cfg.placement.mode == "colocated" or n + m * t > num_devices
    out = {"learner": Candidate(0, n, Strategy(n, 1, 1)),
           "engine": Candidate(0 if colocated else n, m * t, Strategy(m, t, 1))}
    if cfg.algorithm.name == "ppo":
        k = cfg.resources.critic.num_actors
        first = 0 if cfg.critic.placement == "colocated" else n + (0 if colocated else m * t)
        first = first if first + k <= num_devices else 0
        out["critic"] = Candidate(first, k, Strategy(k, 1, 1))
    return out


def _train_phase(hw: Hardware, inferences: list, trains: list) -> float:
    """Inference calls one after another, then the updates side by side."""
    return sum(predict(hw, *x) for x in inferences) + max(predict(hw, *x) for x in trains)


def step_models(cfg: Config, models: dict, layouts: dict, prompt_len: int, row: dict) -> dict:
    """Per measured key: (label, hw -> modelled seconds) for one logged step."""
    gen_len = int(row.get("response_length/max", cfg.rollout.max_new_tokens))
    batch = cfg.trainer.prompts_per_step * cfg.rollout.samples_per_prompt
    minibatches = -(-batch // cfg.trainer.minibatch_samples) * cfg.algorithm.updates_per_batch
    gen, learner = layouts["engine"].strategy, layouts["learner"].strategy
    inf = Call("inference", batch, prompt_len, gen_len)
    train = Call("train", batch, prompt_len, gen_len, minibatches)
    inferences, trains, label = [], [(models["actor"], train, learner)], ["actor_train"]
    if "critic" in models:
        critic = layouts["critic"].strategy
        inferences.append((models["critic"], inf, critic))
        trains.append((models["critic"], train, critic))
        label = ["critic_inf", "actor_train|critic_train"]
    if "ref" in models:
        ref = learner if reference_kind(cfg) == "learner" else Strategy(1, 1, 1)
        inferences.append((models["ref"], inf, ref))
        label.insert(0, "ref_inf")
    return {"time/generate_s": ("actor_gen", partial(predict, shape=models["actor"],
                                                     call=Call("generate", batch, prompt_len, gen_len), strategy=gen)),
            "time/train_s": ("+".join(label), partial(_train_phase, inferences=inferences, trains=trains)),
            "time/sync_s": ("sync (realloc)", partial(realloc_seconds, models["actor"], layouts["learner"],
                                                      layouts["engine"]))}


def _inputs(run_dir: Path, cluster: str | None) -> tuple[Config, Hardware, int, list[dict], str]:
    for name in ("config.yaml", "metrics.jsonl"):
        if not (run_dir / name).is_file():
            raise ConfigError(f"--calibrate: {run_dir / name} not found (a finished run's directory, e.g. runs/tiny)")
    cfg = load_config(run_dir / "config.yaml")
    plan = load_plan(cfg.placement.plan) if cfg.placement.plan and Path(cfg.placement.plan).is_file() else None
    cluster = cluster or (plan["cluster"] if plan else None)
    if cluster is None:
        raise ConfigError(f"--calibrate: {run_dir} ran without a plan (placement.plan); give the cluster spec: "
                          f"rl plan CLUSTER.yaml --calibrate {run_dir}")
    hw = load_cluster_spec(cluster).hardware
    prompt_len = plan["workload"]["prompt_len"] if plan and "workload" in plan else prompt_tokens(cfg)[0]
    rows = [r for _, r in read_jsonl(run_dir / "metrics.jsonl", ConfigError, "--calibrate: ")
            if "time/generate_s" in r and "time/train_s" in r]
    if not rows:
        raise ConfigError(f"--calibrate: {run_dir}/metrics.jsonl has no steps with time/generate_s and time/train_s")
    return cfg, hw, prompt_len, rows[1:] if len(rows) > 1 else rows, cluster


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def calibrate(cfg: Config, hw: Hardware, prompt_len: int, rows: list[dict]) -> tuple[Hardware, list[dict]]:
    """-> (refitted hardware, per call: measured, model before / after, signed errors)."""
    layouts, models = run_layouts(cfg, hw.num_gpus), recipe_models(cfg)
    per_step = [step_models(cfg, models, layouts, prompt_len, r) for r in rows]
    fit_keys = ("time/generate_s", "time/train_s")
    fns = [m[k][1] for m in per_step for k in fit_keys]
    measured = [r[k] for r in rows for k in fit_keys]
    fitted, _ = fit_constants(hw, fns, measured)
    table = []
    for key in (*fit_keys, "time/sync_s"):
        if not all(key in r for r in rows):
            continue
        meas = _mean([r[key] for r in rows])
        before, after = (_mean([m[key][1](h) for m in per_step]) for h in (hw, fitted))
        err = (lambda model: None if model <= 0 else (model - meas) / meas)  # noqa: E731
        table.append({"call": per_step[0][key][0], "metric": key, "measured_s": meas, "model_before_s": before,
                      "error_before": err(before), "model_after_s": after, "error_after": err(after),
                      "fitted": key in fit_keys})
    return fitted, table


def _pct(x) -> str:
    return "     n/a" if x is None else f"{100 * x:+7.1f}%"


def run_calibrate(run_dir: str, cluster: str | None) -> int:
    d = Path(run_dir)
    cfg, hw, prompt_len, rows, cluster = _inputs(d, cluster)
    fitted, table = calibrate(cfg, hw, prompt_len, rows)
    print(f"== calibrate {cluster} on {d} ({len(rows)} steps after warm-up; prompt ~{prompt_len} tokens)")
    print(f"{'call':<26}{'measured s':>11}{'model s':>10}{'error':>9}{'refit s':>10}{'error':>9}")
    for r in table:
        note = "" if r["fitted"] else "   (not fitted: link constants)"
        print(f"{r['call']:<26}{r['measured_s']:>11.3f}{r['model_before_s']:>10.3f}{_pct(r['error_before'])}"
              f"{r['model_after_s']:>10.3f}{_pct(r['error_after'])}{note}")
    print("refit hardware: " + ", ".join(f"{k} {getattr(hw, k):.4g} -> {getattr(fitted, k):.4g}" for k in FITTED))
    out = {"cluster": cluster, "steps": len(rows), "prompt_len": prompt_len, "calls": table,
           "hardware_before": dataclasses.asdict(hw), "hardware_after": dataclasses.asdict(fitted)}
    (d / "calibration.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {d / 'calibration.json'} (paste hardware_after's constants into the cluster spec to plan with them)")
    return 0
