"""The SFT driver: supervised fine-tuning on chat conversations, loss on assistant tokens only.

    conversations (JSONL / Parquet / datasets; `messages` or prompt + completion)
    -> chat-templated ids + assistant-token loss mask (rl/data/sft.py; packed when `sft.packing`)
    -> for each step: learner.sft_step(rows) -> log / checkpoint
    -> held-out assistant-token loss (and greedy task accuracy, `eval.before_after`) before and after
    -> runs/<name>/hf: the final policy as an HF folder, usable as a later recipe's `model.name`

The learner is one Ray actor (rl/workers/sft_learner.py: the shared Learner's policy, AdamW,
checkpoints and HF export); an engine actor is started only for the greedy evaluation.

Example: rl train recipes/sft_tiny.yaml   then   model.name: runs/sft_tiny/hf   in a GRPO recipe
"""
from __future__ import annotations

import math
import time

import ray

from rl import build
from rl.config import Config
from rl.data.prefs import step_pairs, total_steps
from rl.run.run import Run
from rl.workers.models import load_tokenizer
from rl.workers.ray_setup import init_ray

PLOT_KEYS = ["sft/loss", "sft/tokens", "grad_norm", "eval/sft_loss", "eval/greedy_accuracy", "time/step_s"]


def _wants_greedy_eval(cfg: Config) -> bool:
    return cfg.eval.before_after or cfg.eval.every_steps > 0


class Measure:
    """Held-out assistant-token loss on the learner; greedy task accuracy on an engine given its weights."""

    def __init__(self, cfg: Config, tok, learner, held, place):
        self.learner, self.held, self.bucket_mb = learner, held, cfg.sync.bucket_mb
        self.engine = build.engine_from(cfg, **place.options("engine")) if _wants_greedy_eval(cfg) else None
        self.evaluate = build.evaluator_from(cfg, self.engine, tok, build.task_from(cfg)) if self.engine else None

    def __call__(self, version: int, greedy: bool = True) -> dict[str, float]:
        out = self.learner.eval_loss(self.held)
        if greedy and self.evaluate is not None:
            ray.get(self.engine.update_weights.remote(self.learner.export_weights(int(self.bucket_mb * 2**20)), version))
            out.update(self.evaluate())
        return out


def train_sft(cfg: Config, resume: bool = False, address: str | None = None, callbacks: list = ()) -> dict:
    """Runs SFT from the recipe; returns {"before": metrics, "after": metrics, "hf_dir": path, "sft/...": counts}."""
    s, tok = cfg.sft, load_tokenizer(cfg.model.name)
    train, held, info = build.sft_data(cfg, tok)
    steps = total_steps(len(train), s.sequences_per_step, s.epochs, s.max_steps)
    run = Run(cfg, resume, total_steps=steps, title="sft", callbacks=callbacks, postfix={"loss": "sft/loss"})
    init_ray(address)
    place = run.own(build.placement_from(cfg, engines=1 if _wants_greedy_eval(cfg) else 0))
    learner = run.own(build.sft_learner_from(cfg, tok.pad_token_id, place))
    if not run.restore(learner.actors):
        run.summary.update(info)
    measure = Measure(cfg, tok, learner, held, place)
    print(f"sft: {info['sft/train_conversations']} training conversations in {info['sft/train_rows']} rows, "
          f"{info['sft/held_out_conversations']} held out, {steps} steps", flush=True)
    if not run.resumed:
        run.report("before", measure(0, greedy=cfg.eval.before_after))
    for step in run.steps():
        t0 = time.time()
        idx = step_pairs(len(train), s.sequences_per_step, cfg.run.seed, step)
        metrics = learner.sft_step(train.select(idx))
        metrics.update({"epoch": step // math.ceil(len(train) / s.sequences_per_step), "sequences": len(idx),
                        "time/step_s": time.time() - t0})
        if run.eval_due(step):
            metrics.update(measure(step + 1))
        run.log(step, metrics)
        run.checkpoint(step, learner.actors, dict)
    run.report("after", measure(steps, greedy=cfg.eval.before_after))
    run.summary["hf_dir"] = learner.save_hf(str(run.dir / "hf"), cfg.model.name)
    return run.finish(PLOT_KEYS)
