"""The DPO driver: offline preference optimisation (SPECS.md §3, Rafailov et al. 2023).

    pairs (JSONL, or best vs worst samples of a GRPO run's rollouts.jsonl) -> chat-templated ids
    -> reference log-probs (the frozen initial policy, computed once) -> for each step:
       learner.dpo_step(pairs)  (dpo_loss from algorithms/) -> log / checkpoint
    -> held-out pairs (reward accuracy, loss, margin) and greedy task accuracy before and after

The learner is a Ray actor (like the GRPO learner); a rollout engine actor is started only for the
greedy-accuracy evaluation (`eval.before_after` / `eval.every_steps`). The reference is the policy's
own initial weights: its summed completion log-probs are computed once before the first update, kept
in the checkpoint, and never recomputed, so no second model is held in memory.

Example: rl train recipes/dpo_tiny.yaml
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import ray

from rl.config import Config, ConfigError, to_dict
from rl.data.prefs import (EncodedPairs, encode_pairs, load_pairs, pairs_from_rollouts,
                           split_pairs)
from rl.run.checkpoint import Checkpointer
from rl.run.logging import RunLogger, progress
from rl.workers.dpo_learner import LEARNER_CPUS, DPOLearnerActor

ENGINE_CPUS = 0.5
PLOT_KEYS = ["loss", "reward_accuracy", "margin", "reward/chosen", "reward/rejected", "logp/chosen",
             "logp/rejected", "grad_norm", "eval_pairs/reward_accuracy", "eval_pairs/loss", "time/step_s"]


def check_dpo_config(cfg: Config) -> None:
    """Cross-field checks of the `dpo:` section, before anything is loaded."""
    d = cfg.dpo
    if (d.pairs_path is None) == (d.from_rollouts is None):
        raise ConfigError("dpo.pairs_path / dpo.from_rollouts: give exactly one source of preference pairs")
    for key, v in {"dpo.beta": d.beta, "dpo.epochs": d.epochs, "dpo.pairs_per_step": d.pairs_per_step,
                   "dpo.microbatch_pairs": d.microbatch_pairs, "dpo.max_length_tokens": d.max_length_tokens}.items():
        if v <= 0:
            raise ConfigError(f"{key}: must be > 0, got {v}")
    if d.max_steps is not None and d.max_steps <= 0:
        raise ConfigError(f"dpo.max_steps: must be > 0 or null, got {d.max_steps}")
    if not 0.0 <= d.eval_fraction < 1.0:
        raise ConfigError(f"dpo.eval_fraction: must be in [0, 1), got {d.eval_fraction}")


def actor_bundles(cfg: Config) -> list[dict]:
    """Resources of the actors a DPO run starts (for sweeps): the learner, and an engine for greedy eval."""
    bundles = [{"CPU": LEARNER_CPUS}]
    if _wants_greedy_eval(cfg):
        bundles.append({"CPU": ENGINE_CPUS})
    return bundles


def _wants_greedy_eval(cfg: Config) -> bool:
    return cfg.eval.before_after or cfg.eval.every_steps > 0


def load_preference_data(cfg: Config, tok):
    """(train, held-out) EncodedPairs and a description of where they came from."""
    d = cfg.dpo
    pairs = load_pairs(d.pairs_path) if d.pairs_path else pairs_from_rollouts(d.from_rollouts)
    train, held = split_pairs(pairs, d.eval_fraction, cfg.run.seed)
    enc = lambda ps: encode_pairs(tok, ps, cfg.task.system_prompt, d.max_length_tokens, d.append_eos)  # noqa: E731
    train_enc, held_enc = enc(train), enc(held)
    if len(train_enc) == 0:
        raise ConfigError(f"dpo.max_length_tokens: every training prompt is longer than {d.max_length_tokens} tokens")
    info = {"pairs/train": len(train_enc), "pairs/held_out": len(held_enc),
            "pairs/dropped_too_long": train_enc.dropped + held_enc.dropped}
    return train_enc, held_enc, info


def step_pairs(num_pairs: int, pairs_per_step: int, seed: int, step: int) -> list[int]:
    """Indices of the pairs of optimizer step `step`: a seeded permutation per epoch, cut in order.

    Example: step_pairs(10, 4, 0, 2) -> the last 2 indices of epoch 0's permutation."""
    per_epoch = math.ceil(num_pairs / pairs_per_step)
    epoch, k = divmod(step, per_epoch)
    order = list(range(num_pairs))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order[k * pairs_per_step:(k + 1) * pairs_per_step]


def total_steps(cfg: Config, num_pairs: int) -> int:
    steps = cfg.dpo.epochs * math.ceil(num_pairs / cfg.dpo.pairs_per_step)
    return min(steps, cfg.dpo.max_steps) if cfg.dpo.max_steps else steps


class _Evaluator:
    """Greedy task accuracy through rl/drivers/evaluation.py, on an engine that gets the learner's weights."""

    def __init__(self, cfg: Config, tok):
        from rl import build
        from rl.data.prompts import PromptEncoder
        from rl.workers.rollout_worker import RolloutWorker
        self.cfg, self.task = cfg, build.task_from(cfg)
        self.encode = PromptEncoder(tok, cfg.task.system_prompt)
        self.engine = RolloutWorker.options(num_cpus=ENGINE_CPUS).remote(
            cfg.rollout.engine, cfg.model.name, cfg.model.dtype, cfg.run.seed, cfg.rollout.share_prefill)

    def __call__(self, learner, version: int) -> dict[str, float]:
        from rl.drivers.evaluation import evaluate
        buckets = learner.export_weights.remote(int(self.cfg.sync.bucket_mb * 2**20))
        ray.get(self.engine.update_weights.remote(buckets, version))
        gen = lambda reqs, s: ray.get(self.engine.generate.remote(reqs, s))  # noqa: E731
        c = self.cfg
        return evaluate(gen, self.encode, self.task.eval[: c.eval.num_prompts], c.rewards[0], c.eval.max_new_tokens,
                        c.eval.pass_k, c.run.seed, c.allocation.success_threshold)


def _measure(learner, held: EncodedPairs, ref_held, evaluator, version: int) -> dict[str, float]:
    out = ray.get(learner.eval_pairs.remote(held, *ref_held)) if len(held) else {}
    if evaluator is not None:
        out.update(evaluator(learner, version))
    return out


def train_dpo(cfg: Config, resume: bool = False, address: str | None = None) -> dict:
    """Runs DPO from the recipe; returns {"before": metrics, "after": metrics, "pairs/...": counts}."""
    from rl.workers.models import load_tokenizer
    from rl.workers.ray_setup import init_ray, local_threads
    check_dpo_config(cfg)
    run_dir = Path(cfg.run.output_dir) / cfg.run.name
    tok = load_tokenizer(cfg.model.name)
    train, held, info = load_preference_data(cfg, tok)
    steps = total_steps(cfg, len(train))
    init_ray(address)
    t, d = cfg.trainer, cfg.dpo
    learner = DPOLearnerActor.remote(cfg.model.name, cfg.model.dtype, cfg.run.seed, lr=t.lr,
                                     weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm,
                                     warmup_steps=t.warmup_steps, beta=d.beta, microbatch_pairs=d.microbatch_pairs,
                                     num_threads=local_threads(), pad_id=tok.pad_token_id)
    evaluator = _Evaluator(cfg, tok) if _wants_greedy_eval(cfg) else None
    ckpt = Checkpointer(run_dir / "checkpoints", cfg.run.keep_checkpoints)
    if resume:
        state = ckpt.restore(learner)
        start, summary, ref, ref_held = state["next_step"], state["summary"], state["ref"], state["ref_held"]
    else:
        start, summary = 0, dict(info)
        ref = ray.get(learner.reference_logps.remote(train))
        ref_held = ray.get(learner.reference_logps.remote(held)) if len(held) else ([], [])
    logger = RunLogger(run_dir, to_dict(cfg), cfg.run.wandb_mode, resume=resume)
    if resume:
        logger.truncate_after(start - 1)
    print(f"dpo: {info['pairs/train']} training pairs, {info['pairs/held_out']} held out, {steps} steps", flush=True)
    if not resume and (cfg.eval.before_after or len(held)):
        summary["before"] = _measure(learner, held, ref_held, evaluator if cfg.eval.before_after else None, 0)
        print("eval before:", _fmt(summary["before"]), flush=True)
    bar = progress(steps, f"dpo {cfg.run.name}", initial=start) if cfg.run.progress_bar else None
    for step in range(start, steps):
        t0 = time.time()
        idx = step_pairs(len(train), d.pairs_per_step, cfg.run.seed, step)
        metrics = ray.get(learner.dpo_step.remote(train.select(idx), [ref[0][i] for i in idx],
                                                  [ref[1][i] for i in idx]))
        metrics.update({"epoch": step // math.ceil(len(train) / d.pairs_per_step), "pairs": len(idx),
                        "time/step_s": time.time() - t0})
        if cfg.eval.every_steps and (step + 1) % cfg.eval.every_steps == 0 and step + 1 < steps:
            metrics.update(_measure(learner, held, ref_held, evaluator, step + 1))
        logger.log(step, metrics)
        if bar is not None:
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['reward_accuracy']:.2f}")
            bar.update(1)
        if (cfg.run.checkpoint_every_steps and (step + 1) % cfg.run.checkpoint_every_steps == 0) or step + 1 == steps:
            ckpt.save(step, learner, {"next_step": step + 1, "summary": summary, "ref": ref, "ref_held": ref_held})
    if bar is not None:
        bar.close()
    if cfg.eval.before_after or len(held):
        summary["after"] = _measure(learner, held, ref_held, evaluator if cfg.eval.before_after else None, steps)
        print("eval after: ", _fmt(summary["after"]), flush=True)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    logger.close(PLOT_KEYS)
    return summary


def _fmt(d: dict) -> str:
    return "  ".join(f"{k.removeprefix('eval/')}={v:.3f}" for k, v in d.items())
