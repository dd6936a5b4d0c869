"""The GRPO driver: a single controller over Ray actors. Reads like DESIGN.md's loop.

    prompts -> allocator.plan -> engines.generate -> rewards -> advantages -> learner.train_step
            -> weight sync -> history/log/checkpoint/eval
"""
from __future__ import annotations

import time
from pathlib import Path

import ray

from algorithms.dapo import informative_group_mask
from allocation.knapsack import KnapsackState, allocation_metrics
from rl import build
from rl.config import Config, to_dict
from rl.drivers.estimators import group_estimator
from rl.drivers.evaluation import evaluate
from rl.data.prompts import PromptEncoder
from rl.drivers.experience import StepData, merge, rollout_step
from rl.drivers.rewards import check_rewards
from rl.run.checkpoint import Checkpointer
from rl.run.logging import RunLogger, progress
from rl.workers.models import load_tokenizer
from rl.workers.ray_setup import init_ray
from rl.workers.weight_sync import after_train, before_train, sync_weights


def step_seed(seed: int, step: int, round_: int = 0) -> int:
    return (seed * 1_000_003 + step * 101 + round_) % (2**62)


def run_eval(cfg: Config, engines, encode, task, seed: int) -> dict[str, float]:
    examples = task.eval[: cfg.eval.num_prompts]
    gen = lambda reqs, s: ray.get(engines[0].generate.remote(reqs, s))  # noqa: E731
    return evaluate(gen, encode, examples, cfg.rewards[0], cfg.eval.max_new_tokens, cfg.eval.pass_k, seed,
                    cfg.allocation.success_threshold)


def plan_step(cfg, allocator, history, context: list, examples, step: int):
    """The allocator's plan; with a V0 predictor, unseen prompts get budgets from predicted success."""
    keys = [e.key for e in examples]
    if cfg.allocation.v0_predictor and context:
        from rl.v0.value import predict_success
        p = predict_success(cfg.allocation.v0_predictor, [e.prompt for e in examples], context)
        return allocator.plan(keys, history, step, predicted_p=p)
    return allocator.plan(keys, history, step)


def remember(context: list, data: StepData, size: int) -> None:
    """Keeps the last `size` (prompt, mean reward in [0, 1]) pairs: V0's picture of the policy."""
    for ex, rewards in zip(data.examples, data.rewards_per_prompt):
        context.append((ex.prompt, min(1.0, max(0.0, sum(rewards) / len(rewards)))))
    del context[:-size]


def collect(cfg, engines, encode, sampler, allocator, history, step, context: list) -> StepData:
    """One draw, or DAPO dynamic sampling: redraw until enough groups have unequal rewards."""
    parts, informative = [], 0
    for round_ in range(cfg.algorithm.max_generation_rounds if cfg.algorithm.dynamic_sampling else 1):
        examples = sampler.next(cfg.trainer.prompts_per_step)
        plan = plan_step(cfg, allocator, history, context, examples, step)
        data = rollout_step(cfg, engines, encode, examples, plan, step_seed(cfg.run.seed, step, round_))
        data.metrics.update(allocation_metrics(data.rewards_per_prompt, plan.samples_per_prompt,
                                               cfg.allocation.success_threshold))
        history.update([e.key for e in data.examples], data.rewards_per_prompt, cfg.allocation.success_threshold)
        remember(context, data, cfg.allocation.v0_context_size)
        if cfg.algorithm.dynamic_sampling:
            keep = informative_group_mask(data.batch.rewards, data.batch.group_ids)
            groups = sorted(set(data.batch.group_ids[keep].tolist()))
            data = StepData(data.batch.select_groups(groups), [data.examples[g] for g in groups],
                            [data.rewards_per_prompt[g] for g in groups], data.metrics,
                            [data.texts_per_prompt[g] for g in groups])
            informative += len(groups)
        parts.append(data)
        if informative >= cfg.trainer.prompts_per_step:
            break
    parts = [p for p in parts if p.batch.num_samples] or parts[:1]
    out = merge(parts, encode.tok.pad_token_id)
    out.metrics["generation_rounds"] = len(parts)
    return out


def train(cfg: Config, resume: bool = False, address: str | None = None,
          estimator_factory=group_estimator) -> dict[str, float]:
    build.check_names(cfg)
    check_rewards(cfg.rewards)
    run_dir = Path(cfg.run.output_dir) / cfg.run.name
    init_ray(address)
    task, tok = build.task_from(cfg), load_tokenizer(cfg.model.name)
    encode = PromptEncoder(tok, cfg.task.system_prompt)
    sampler, allocator, history = task.sampler(cfg.run.seed), build.allocator_from(cfg), KnapsackState()
    engines, learner = build.start_workers(cfg, tok.pad_token_id)
    estimator = estimator_factory(cfg, tok.pad_token_id, learner)
    ckpt, start, summary, context = Checkpointer(run_dir / "checkpoints", cfg.run.keep_checkpoints), 0, {}, []
    if resume:
        state = ckpt.restore(learner, estimator.actors)
        start, summary, context = state["next_step"], state["summary"], [tuple(c) for c in state["context"]]
        sampler.load_state_dict(state["sampler"])
        history.load_state_dict(state["history"])
    logger = RunLogger(run_dir, to_dict(cfg), cfg.run.wandb_mode, resume=resume)
    if resume:
        logger.truncate_after(start - 1)
    sync_weights(learner, engines, start, cfg.sync)
    if cfg.eval.before_after and not resume:
        summary["before"] = run_eval(cfg, engines, encode, task, cfg.run.seed)
        print("eval before:", _fmt(summary["before"]), flush=True)
    bar = progress(cfg.trainer.steps, f"train {cfg.run.name}", initial=start) if cfg.run.progress_bar else None
    for step in range(start, cfg.trainer.steps):
        t0 = time.time()
        data = collect(cfg, engines, encode, sampler, allocator, history, step, context)
        t1 = time.time()
        advantages, adv_metrics = estimator.advantages(data.batch)
        before_train(engines, cfg.rollout)
        pending = estimator.update(data.batch)  # e.g. the critic trains while the policy does
        metrics = {**ray.get(learner.train_step.remote(data.batch, advantages)), **adv_metrics,
                   **estimator.collect(pending)}
        t_train = time.time() - t1
        after_train(engines, cfg.rollout)
        sync = sync_weights(learner, engines, step + 1, cfg.sync)
        metrics = {**data.metrics, **metrics, **sync, "time/train_s": t_train,
                   "time/step_s": time.time() - t0, "epoch": sampler.epoch}
        if cfg.eval.every_steps and (step + 1) % cfg.eval.every_steps == 0 and step + 1 < cfg.trainer.steps:
            metrics.update(run_eval(cfg, engines, encode, task, cfg.run.seed))
        logger.log(step, metrics)
        logger.log_rollouts(step, [{"key": e.key, "prompt": e.prompt, "rewards": r, "completions": c}
                                   for e, r, c in zip(data.examples, data.rewards_per_prompt,
                                                      data.texts_per_prompt or [[]] * len(data.examples))])
        if bar is not None:
            bar.set_postfix(reward=f"{metrics['reward/mean']:.3f}", acc=f"{metrics['accuracy']:.2f}",
                            tok_s=f"{metrics['tokens_per_s']:.0f}")
            bar.update(1)
        last = step + 1 == cfg.trainer.steps
        if (cfg.run.checkpoint_every_steps and (step + 1) % cfg.run.checkpoint_every_steps == 0) or last:
            ckpt.save(step, [learner, *estimator.actors], {"next_step": step + 1, "sampler": sampler.state_dict(),
                                      "history": history.state_dict(), "summary": summary,
                                      "context": context})
    if bar is not None:
        bar.close()
    if cfg.eval.before_after:
        summary["after"] = run_eval(cfg, engines, encode, task, cfg.run.seed)
        print("eval after: ", _fmt(summary["after"]), flush=True)
    logger.close(["reward/mean", "accuracy", "loss", "entropy", "approx_kl", "clip_frac", "grad_norm",
                  "response_length/mean", "tokens_per_s", "time/step_s", "effective_gradient_ratio",
                  "eval/greedy_accuracy"])
    return summary


def _fmt(d: dict) -> str:
    return "  ".join(f"{k.removeprefix('eval/')}={v:.3f}" for k, v in d.items())
