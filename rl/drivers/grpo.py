"""The GRPO driver (and LLM PPO's, with the critic estimator): a single controller over Ray actors.

    for step:
        data     = collect(experience, step)       prompts -> allocator.plan -> engines -> rewards
        adv      = estimator.advantages(batch)     group baseline by name, or a critic + GAE
        metrics  = learner.train_step(batch, adv)  the policy loss by name (algorithms/losses.py)
        sync     = weights learner -> engines      versioned, full or bf16 delta
                                                   (max_staleness_steps k > 0: the next batches are drawn
                                                   meanwhile, rl/drivers/pipeline.py)
        log / eval / checkpoint                    the Run

Example: rl train recipes/quickstart.yaml
"""
from __future__ import annotations

import time

from rl import build
from rl.config import Config
from rl.drivers.pipeline import RolloutPipeline
from rl.run.chaos import Chaos
from rl.run.run import Run
from rl.workers.models import load_tokenizer
from rl.workers.ray_setup import init_ray
from rl.workers.weight_sync import after_train, before_generate, before_train

PLOT_KEYS = ["reward/mean", "accuracy", "loss", "entropy", "approx_kl", "clip_frac", "grad_norm",
             "response_length/mean", "tokens_per_s", "time/step_s", "effective_gradient_ratio", "eval/greedy_accuracy"]


def train(cfg: Config, resume: bool = False, address: str | None = None, callbacks: list = (),
          estimator: str = "group", make_estimator=None) -> dict[str, float]:
    """estimator: "group" | "critic" (rl/build.py estimator_from) | a kind `make_estimator(cfg, kind, pad_id,
    placement)` builds (rl/drivers/opd.py: the teacher)."""
    build.check_names(cfg)
    run = Run(cfg, resume, total_steps=cfg.trainer.steps, title="train", callbacks=callbacks,
              postfix={"reward": "reward/mean", "acc": "accuracy", "tok_s": "tokens_per_s"})
    init_ray(address)
    tok = load_tokenizer(cfg.model.name)
    task = build.task_from(cfg, tok)
    place = run.own(build.placement_from(cfg, estimator))
    engines, learner = build.start_workers(cfg, tok.pad_token_id, place)  # 1 learner actor, or N sharded ranks
    run.own(learner)
    estimator = run.own((make_estimator or build.estimator_from)(cfg, estimator, tok.pad_token_id, place))
    reward_models = run.own(build.reward_models_from(cfg))  # an actor per `rewards[i].model`, none otherwise
    experience, collect = build.experience_from(cfg, engines, tok, task, reward_models), build.collector_from(cfg)
    pipeline = run.own(RolloutPipeline(experience, collect, cfg.trainer.max_staleness_steps, cfg.trainer.rollout_thread))
    evaluate = build.evaluator_from(cfg, engines[0], tok, task, reward_models)
    actors = [*learner.actors, *estimator.actors]
    run.record_placement({**{f"learner{i or ''}": a for i, a in enumerate(learner.actors)},
                          **{f"engine{i}": e for i, e in enumerate(engines)}})
    if run.restore(actors):
        pipeline.load_state_dict(run.state)  # the sampler, the allocator and any rollouts in flight
    phases = build.phases_from(cfg)  # colocated: engines sleep while learners train, learners offload meanwhile
    learner.sync(engines, run.start, cfg.sync)
    before_generate(learner, phases)
    if cfg.eval.before_after and not run.resumed:
        run.report("before", evaluate())
    pipeline.start(run.start, cfg.trainer.steps)  # k > 0: the first k + 1 batches start drawing
    chaos = Chaos(cfg.run.chaos, run.dir, cfg.run.seed)  # off unless run.chaos lists faults
    for step in run.steps():
        t0 = time.time()
        faults = chaos.before_step(step, engines, learner.actors, run.ckpt.all()) if chaos else {}
        data, staleness = pipeline.next(step)  # k = 0: drawn now; else drawn earlier, stale groups dropped
        t1 = time.time()
        advantages, adv_metrics = estimator.advantages(data.batch)
        before_train(engines, learner, phases)
        pending = estimator.update(data.batch)  # e.g. the critic trains while the policy does
        metrics = {**data.metrics, **learner.train_step(data.batch, advantages), **adv_metrics,
                   **estimator.collect(pending), "time/train_s": time.time() - t1}
        after_train(engines, phases)
        pipeline.before_sync()  # no draw straddles a weight update
        metrics.update(learner.sync(engines, step + 1, cfg.sync))
        metrics["offload/mb"] = before_generate(learner, phases)
        pipeline.after_sync(step)  # k > 0: batch step + 1 + k starts drawing with these weights
        metrics.update({"time/step_s": time.time() - t0, "epoch": experience.sampler.epoch, **faults, **staleness})
        if run.eval_due(step):
            metrics.update(evaluate())
        run.log(step, metrics, rollouts=data.rollout_records())
        run.checkpoint(step, actors, pipeline.state_dict)
    if cfg.eval.before_after:
        run.report("after", evaluate())
    return run.finish(PLOT_KEYS)
