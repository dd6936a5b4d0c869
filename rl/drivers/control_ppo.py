"""Classic-control PPO driver (`algorithm.name: control_ppo`).

    env     = native vector env (SAME_STEP autoreset) or a Ray-sharded pool
    for update in range(num_updates):
        buf     = collect(env, agent)                 T x N steps, truncation bootstraps
        metrics = ppo_update(agent, buf, ...)         GAE + clipped surrogate from algorithms/
        log(metrics: returns, approx-KL, clip fraction, explained variance, SPS env/inference/train)
    eval: eval_episodes episodes, one per env, greedy actions unless eval_deterministic is False; at the
          end, and every eval_every_env_steps env steps when > 0 (time/eval_s: their time, part of wall)

With `control.sweep_num_envs` the same recipe is trained at each N (rl/control/scaling.py). Runs are
short and start from scratch: `--resume` is ignored (each update is still logged exactly once).
Example: rl train recipes/ppo_cartpole.yaml
"""
from __future__ import annotations

import copy
import dataclasses
import pathlib
import time
from functools import partial

import numpy as np
import torch

from rl.config import Config, ControlConfig, load_config
from rl.control.agent import build_agent, evaluate, make_env, peak_rss_gb, throughput
from rl.control.buffer import EpisodeTracker, RolloutBuffer, collect
from rl.control.ppo import ewma_update, ppo_update
from rl.control.scaling import run_scaling
from rl.run.run import Run

PLOT_KEYS = ["return/mean_100", "eval/mean_return", "ppo/approx_kl", "ppo/clip_fraction", "ppo/explained_variance",
             "sps/end_to_end", "sps/env", "loss/value"]


def train(cfg: Config, resume: bool = False, address: str | None = None, callbacks: list = ()) -> dict:
    if resume:
        print("rl: control_ppo runs are short and restart from scratch; --resume is ignored")
    if cfg.control.num_shards > 1:
        from rl.workers.ray_setup import init_ray
        init_ray(address)
    if cfg.control.sweep_num_envs:
        return run_scaling(cfg, partial(train_one, callbacks=callbacks))
    return train_one(cfg, callbacks)


def train_control(control: ControlConfig, seed: int, run_dir: pathlib.Path, wandb_mode: str = "auto") -> dict:
    """One run (or a scaling study) from a bare `control:` section, written to `run_dir`."""
    run_dir = pathlib.Path(run_dir)
    cfg = load_config(None, [f"run.output_dir={run_dir.parent}", f"run.name={run_dir.name}", f"run.seed={seed}",
                             f"run.wandb_mode={wandb_mode}", "algorithm.name=control_ppo"])
    return train(dataclasses.replace(cfg, control=control))


def train_one(cfg: Config, callbacks: list = ()) -> dict[str, float]:
    c, seed = cfg.control, cfg.run.seed
    if c.torch_threads > 0:
        torch.set_num_threads(c.torch_threads)
    torch.manual_seed(seed)
    env = make_env(c, c.num_envs)
    agent = build_agent(env, c)
    prox = copy.deepcopy(agent).requires_grad_(False) if c.ewma_decay > 0 else None
    opt = torch.optim.Adam(agent.parameters(), lr=c.lr, eps=c.adam_eps)
    update_fn = partial(ppo_update, gamma=c.gamma, lam=c.lam, epochs=c.epochs, minibatch_samples=c.minibatch_samples,
                        clip=c.clip, value_clip=c.value_clip, ent_coef=c.ent_coef, vf_coef=c.vf_coef,
                        max_grad_norm=c.max_grad_norm, norm_adv=c.norm_adv, prox_agent=prox)
    buf = RolloutBuffer(c.num_steps, c.num_envs, int(np.prod(env.single_observation_space.shape)),
                        () if agent.discrete else env.single_action_space.shape, agent.discrete)
    tracker = EpisodeTracker(c.num_envs)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, progress_bar=cfg.run.progress_bar and c.progress_bar))
    run = Run(cfg, total_steps=c.num_updates, title=f"control_ppo {c.env_id}", callbacks=callbacks,
              postfix={"ret": "return/mean_100", "sps": "sps/end_to_end"})
    obs, _ = env.reset(seed=seed)
    env_steps, t_start, metrics, update = 0, time.perf_counter(), {}, 0
    eval_s, next_eval = 0.0, c.eval_every_env_steps
    for update in run.steps():
        if c.anneal_lr:
            opt.param_groups[0]["lr"] = c.lr * (1 - update / c.num_updates)
        obs, times = collect(env, agent, buf, obs, tracker)
        t0 = time.perf_counter()
        metrics = update_fn(agent, opt, buf)
        if prox is not None:
            ewma_update(prox, agent, c.ewma_decay)
        env_steps += c.samples_per_update
        wall = time.perf_counter() - t_start
        metrics.update({**throughput(c.samples_per_update, times, time.perf_counter() - t0),
                        "env_steps": float(env_steps), "episodes": float(tracker.episodes),
                        "return/mean_100": tracker.mean_return(), "time/wall_s": wall,
                        "sps/end_to_end": env_steps / wall, "mem/peak_rss_gb": peak_rss_gb(),
                        "lr": opt.param_groups[0]["lr"]})
        if 0 < next_eval <= env_steps and c.eval_episodes > 0:  # a mid-run greedy eval, its time kept apart
            t_eval = time.perf_counter()
            metrics.update(evaluate(agent, c, seed + 10_000))
            eval_s += time.perf_counter() - t_eval
            next_eval = (env_steps // c.eval_every_env_steps + 1) * c.eval_every_env_steps
        metrics["time/eval_s"] = eval_s
        run.log(update, metrics)
        if c.stop_at_mean_return is not None and len(tracker.recent_returns) >= 100 \
                and tracker.mean_return() >= c.stop_at_mean_return:
            break
    env.close()
    final = {**{k: float(v) for k, v in metrics.items()}, "updates": float(update + 1),
             "train/wall_s": time.perf_counter() - t_start}
    if c.eval_episodes > 0:
        final.update(evaluate(agent, c, seed + 10_000))
    final["time/total_s"] = time.perf_counter() - t_start
    run.log(update + 1, final)
    run.summary.update(final)
    run.finish(PLOT_KEYS)
    return final
