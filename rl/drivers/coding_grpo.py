"""Multi-turn GRPO on the coding env (`algorithm.name: coding_grpo`).

Each prompt is a coding task; the allocator (`allocation.*`, as in GRPO) decides how many agent
episodes each task gets, run by the policy's own rollout engine (rl/drivers/episodes.py). Reward =
resolved; GRPO-family advantages per task; the turn budget is the TurnPolicy evaluation uses.

    tasks -> plan -> episodes (sandboxed bash) -> grade -> RolloutBatch with loss_mask
          -> advantages -> learner -> weight sync -> log/checkpoint
"""
from __future__ import annotations

import time

from rl import build
from rl.config import Config
from rl.drivers.episodes import RemoteEngine, episode_metrics, trajectories_to_batch
from rl.drivers.experience import step_seed
from rl.run.run import Run
from rl.workers.models import load_tokenizer
from rl.workers.ray_setup import init_ray

PLOT_KEYS = ["reward/mean", "turns/mean", "loss", "entropy", "env_token_share", "time/step_s"]


def train_coding(cfg: Config, resume: bool = False, address: str | None = None, callbacks: list = ()) -> dict:
    build.check_names(cfg)
    tasks = build.coding_tasks(cfg)
    run = Run(cfg, resume, total_steps=cfg.trainer.steps, title="coding", callbacks=callbacks,
              postfix={"solved": "accuracy", "turns": "turns/mean"})
    init_ray(address)
    tok = load_tokenizer(cfg.model.name)
    engines, learner = build.start_workers(cfg, tok.pad_token_id, run.own(build.placement_from(cfg)))
    run.own(learner)
    estimator = build.estimator_from(cfg, "group", tok.pad_token_id)
    allocator = build.allocator_from(cfg)
    state, run_episodes = build.allocator_state(allocator), build.episodes_from(cfg, tok)
    if run.restore(learner.actors):
        state.load_state_dict(run.state["allocator"])
    learner.sync(engines, run.start, cfg.sync)
    P = cfg.trainer.prompts_per_step
    for step in run.steps():
        t0 = time.time()
        chosen = [tasks[(step * P + i) % len(tasks)] for i in range(P)]
        keys = [t.instance_id for t in chosen]
        plan = allocator.plan(keys, state, step)
        trajs, groups = run_episodes(chosen, plan.samples_per_prompt, RemoteEngine(engines[0], step_seed(cfg.run.seed, step)))
        batch = trajectories_to_batch(trajs, groups, tok.pad_token_id)
        state.update(keys, [[t.reward for t, g in zip(trajs, groups) if g == i] for i in range(P)],
                     cfg.allocation.success_threshold)
        metrics = episode_metrics(trajs, batch, time.time() - t0)
        advantages, adv_metrics = estimator.advantages(batch)
        metrics.update({**learner.train_step(batch, advantages), **adv_metrics})
        metrics.update({**learner.sync(engines, step + 1, cfg.sync), "time/step_s": time.time() - t0})
        run.log(step, metrics, rollouts=[{"key": t.instance_id, "reward": t.reward, "turns": t.num_turns,
                                          "exit_status": t.exit_status, "patch": t.patch} for t in trajs])
        run.summary["last"] = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        run.checkpoint(step, learner.actors, lambda: {"allocator": state.state_dict()})
    return run.finish(PLOT_KEYS)
