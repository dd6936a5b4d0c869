"""The DPO driver: offline preference optimisation (SPECS.md §3, Rafailov et al. 2023).

    pairs (JSONL, or best vs worst samples of a GRPO run's rollouts.jsonl) -> chat-templated ids
    -> reference log-probs (the frozen initial policy, computed once) -> for each step:
       learner.dpo_step(pairs)  (dpo_loss from algorithms/) -> log / checkpoint
    -> held-out pairs (reward accuracy, loss, margin) and greedy task accuracy before and after

The learner is a Ray actor (rl/workers/dpo_learner.py), or `resources.learner.num_actors` sharded
ranks (FSDP2 / DDP) used the same way; a rollout engine actor is started only for
the greedy-accuracy evaluation (`eval.before_after` / `eval.every_steps`). The reference log-probs
are kept in the checkpoint and never recomputed, so no second model is held in memory.

Example: rl train recipes/dpo_tiny.yaml
"""
from __future__ import annotations

import math
import time

import ray

from rl import build
from rl.config import Config
from rl.data.prefs import EncodedPairs, step_pairs, total_steps
from rl.run.run import Run
from rl.workers.dpo_learner import LEARNER_CPUS
from rl.workers.models import load_tokenizer
from rl.workers.ray_setup import init_ray

ENGINE_CPUS = 0.5
PLOT_KEYS = ["loss", "reward_accuracy", "margin", "reward/chosen", "reward/rejected", "logp/chosen",
             "logp/rejected", "grad_norm", "eval_pairs/reward_accuracy", "eval_pairs/loss", "time/step_s"]


def actor_bundles(cfg: Config) -> list[dict]:
    """Resources of the actors a DPO run starts (for sweeps): the learner, and an engine for greedy eval."""
    return [{"CPU": LEARNER_CPUS}] + ([{"CPU": ENGINE_CPUS}] if _wants_greedy_eval(cfg) else [])


def _wants_greedy_eval(cfg: Config) -> bool:
    return cfg.eval.before_after or cfg.eval.every_steps > 0


class Measure:
    """Held-out pairs on the learner; greedy task accuracy on an engine that first gets its weights."""

    def __init__(self, cfg: Config, tok, learner, held: EncodedPairs, ref_held, place):
        self.learner, self.held, self.ref_held, self.bucket_mb = learner, held, ref_held, cfg.sync.bucket_mb
        self.engine = build.engine_from(cfg, **place.options("engine")) if _wants_greedy_eval(cfg) else None
        self.evaluate = build.evaluator_from(cfg, self.engine, tok, build.task_from(cfg)) if self.engine else None

    def __call__(self, version: int, greedy: bool = True) -> dict[str, float]:
        out = self.learner.eval_pairs(self.held, *self.ref_held) if len(self.held) else {}
        if greedy and self.evaluate is not None:
            buckets = self.learner.export_weights(int(self.bucket_mb * 2**20))
            ray.get(self.engine.update_weights.remote(buckets, version))
            out.update(self.evaluate())
        return out


def train_dpo(cfg: Config, resume: bool = False, address: str | None = None, callbacks: list = ()) -> dict:
    """Runs DPO from the recipe; returns {"before": metrics, "after": metrics, "pairs/...": counts}."""
    d, tok = cfg.dpo, load_tokenizer(cfg.model.name)
    train, held, info = build.preference_data(cfg, tok)
    steps = total_steps(len(train), d.pairs_per_step, d.epochs, d.max_steps)
    run = Run(cfg, resume, total_steps=steps, title="dpo", callbacks=callbacks,
              postfix={"loss": "loss", "acc": "reward_accuracy"})
    init_ray(address)
    place = run.own(build.placement_from(cfg, engines=1 if _wants_greedy_eval(cfg) else 0))
    learner = run.own(build.dpo_learner_from(cfg, tok.pad_token_id, place))  # 1 actor or N sharded ranks
    if run.restore(learner.actors):
        ref, ref_held = run.state["ref"], run.state["ref_held"]
    else:
        run.summary.update(info)
        ref = learner.reference_logps(train)
        ref_held = learner.reference_logps(held) if len(held) else ([], [])
    measure = Measure(cfg, tok, learner, held, ref_held, place)
    print(f"dpo: {info['pairs/train']} training pairs, {info['pairs/held_out']} held out, {steps} steps", flush=True)
    if not run.resumed and (cfg.eval.before_after or len(held)):
        run.report("before", measure(0, greedy=cfg.eval.before_after))
    for step in run.steps():
        t0 = time.time()
        idx = step_pairs(len(train), d.pairs_per_step, cfg.run.seed, step)
        metrics = learner.dpo_step(train.select(idx), [ref[0][i] for i in idx], [ref[1][i] for i in idx])
        metrics.update({"epoch": step // math.ceil(len(train) / d.pairs_per_step), "pairs": len(idx),
                        "time/step_s": time.time() - t0})
        if run.eval_due(step):
            metrics.update(measure(step + 1))
        run.log(step, metrics)
        run.checkpoint(step, learner.actors, lambda: {"ref": ref, "ref_held": ref_held})
    if cfg.eval.before_after or len(held):
        run.report("after", measure(steps, greedy=cfg.eval.before_after))
    return run.finish(PLOT_KEYS)
