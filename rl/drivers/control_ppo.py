"""Classic-control PPO driver (`algorithm.name: control_ppo`).

    env     = native vector env (SAME_STEP autoreset) or a Ray-sharded pool
    for update in range(num_updates):
        buf     = collect(env, agent)                 T x N steps, truncation bootstraps
        metrics = ppo_update(agent, buf, ...)         GAE + clipped surrogate from algorithms/
        log(metrics: returns, approx-KL, clip fraction, explained variance, SPS env/inference/train)
    eval: eval_episodes episodes, one per env, greedy actions unless eval_deterministic is False

Example: train_control(ControlConfig(), seed=1, run_dir=Path("runs/ppo_cartpole"))
"""
from __future__ import annotations

import copy
import dataclasses
import math
import pathlib
import resource
import time

import numpy as np
import torch

from envs.control import MODELS, ControlVectorEnv
from envs.control.pool import ShardedVectorEnv
from rl.config import ControlConfig
from rl.control.buffer import EpisodeTracker, RolloutBuffer, collect, to_numpy
from rl.control.policy import ActorCritic
from rl.control.ppo import ewma_update, ppo_update
from rl.run.logging import RunLogger, progress


def env_name(env_id: str) -> str:
    return env_id.split("/", 1)[1] if env_id.startswith("rl/") else env_id


def make_env(control: ControlConfig, num_envs: int, autoreset_mode: str = "same_step"):
    """Native env for known ids (in-process, or sharded over Ray when num_shards > 1)."""
    name = env_name(control.env_id)
    if control.num_shards > 1 or name not in MODELS:
        return ShardedVectorEnv(control.env_id, num_envs, max(1, control.num_shards),
                                autoreset_mode=autoreset_mode, backend=control.backend)
    return ControlVectorEnv(num_envs, backend=control.backend, autoreset_mode=autoreset_mode,
                            copy=False, model=name)


def build_agent(env, control: ControlConfig) -> ActorCritic:
    obs_dim = int(np.prod(env.single_observation_space.shape))
    space = env.single_action_space
    discrete = hasattr(space, "n")
    act_dim = int(space.n) if discrete else int(np.prod(space.shape))
    return ActorCritic(obs_dim, act_dim, discrete, list(control.hidden_sizes), control.activation)


@torch.no_grad()
def evaluate(agent: ActorCritic, control: ControlConfig, seed: int) -> dict[str, float]:
    """Mean/std return of `eval_episodes` episodes (the first episode of each of as many envs)."""
    n = control.eval_episodes
    env = make_env(dataclasses.replace(control, num_shards=1), n, "next_step")
    obs, _ = env.reset(seed=seed)
    returns, ret = np.full(n, np.nan), np.zeros(n)
    while np.isnan(returns).any():
        action = agent.act(torch.as_tensor(to_numpy(obs)), control.eval_deterministic)[0]
        if not agent.discrete:
            action = action.clamp(-2.0, 2.0)
        obs, r, term, trunc, _ = env.step(action.numpy())
        ret += to_numpy(r)
        first = (to_numpy(term) | to_numpy(trunc)) & np.isnan(returns)
        returns[first] = ret[first]
    env.close()
    return {"eval/mean_return": float(returns.mean()), "eval/std_return": float(returns.std()),
            "eval/episodes": float(n)}


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # Linux: KiB


def train_control(control: ControlConfig, seed: int, run_dir: pathlib.Path,
                  wandb_mode: str = "auto") -> dict[str, float]:
    if control.sweep_num_envs:
        from rl.control.scaling import run_scaling
        return run_scaling(control, seed, pathlib.Path(run_dir), wandb_mode)
    if control.torch_threads > 0:
        torch.set_num_threads(control.torch_threads)
    torch.manual_seed(seed)
    env = make_env(control, control.num_envs)
    agent = build_agent(env, control)
    prox = copy.deepcopy(agent).requires_grad_(False) if control.ewma_decay > 0 else None
    opt = torch.optim.Adam(agent.parameters(), lr=control.lr, eps=control.adam_eps)
    act_shape = () if agent.discrete else env.single_action_space.shape
    buf = RolloutBuffer(control.num_steps, control.num_envs, int(np.prod(
        env.single_observation_space.shape)), act_shape, agent.discrete)
    tracker = EpisodeTracker(control.num_envs)
    logger = RunLogger(pathlib.Path(run_dir), {"control": dataclasses.asdict(control),
                                               "seed": seed}, wandb_mode)
    bar = progress(control.num_updates, f"control_ppo {control.env_id}") \
        if control.progress_bar else None
    obs, _ = env.reset(seed=seed)
    env_steps, t_start, metrics = 0, time.perf_counter(), {}
    for update in range(control.num_updates):
        if control.anneal_lr:
            opt.param_groups[0]["lr"] = control.lr * (1 - update / control.num_updates)
        obs, times = collect(env, agent, buf, obs, tracker)
        t0 = time.perf_counter()
        metrics = ppo_update(agent, opt, buf, gamma=control.gamma, lam=control.lam,
                             epochs=control.epochs, minibatch_samples=control.minibatch_samples,
                             clip=control.clip, value_clip=control.value_clip,
                             ent_coef=control.ent_coef, vf_coef=control.vf_coef,
                             max_grad_norm=control.max_grad_norm, norm_adv=control.norm_adv,
                             prox_agent=prox)
        if prox is not None:
            ewma_update(prox, agent, control.ewma_decay)
        train_s = time.perf_counter() - t0
        env_steps += control.samples_per_update
        wall = time.perf_counter() - t_start
        metrics.update(_throughput(control.samples_per_update, times, train_s))
        metrics.update({"env_steps": float(env_steps), "episodes": float(tracker.episodes),
                        "return/mean_100": tracker.mean_return(), "time/wall_s": wall,
                        "sps/end_to_end": env_steps / wall, "mem/peak_rss_gb": peak_rss_gb(),
                        "lr": opt.param_groups[0]["lr"]})
        logger.log(update, metrics)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(ret=f"{metrics['return/mean_100']:.1f}",
                            sps=f"{metrics['sps/end_to_end']:.3g}")
        target = control.stop_at_mean_return
        if target is not None and len(tracker.recent_returns) >= 100 \
                and tracker.mean_return() >= target:
            break
    if bar is not None:
        bar.close()
    env.close()
    final = {k: float(v) for k, v in metrics.items()}
    final.update({"updates": float(update + 1), "train/wall_s": time.perf_counter() - t_start})
    if control.eval_episodes > 0:
        final.update(evaluate(agent, control, seed + 10_000))
    final["time/total_s"] = time.perf_counter() - t_start
    logger.log(update + 1, final)
    logger.close(["return/mean_100", "eval/mean_return", "ppo/approx_kl", "ppo/clip_fraction",
                  "ppo/explained_variance", "sps/end_to_end", "sps/env", "loss/value"])
    return final


def _throughput(samples: int, times: dict[str, float], train_s: float) -> dict[str, float]:
    env_s, infer_s = times["time/env_s"], times["time/inference_s"]
    safe = lambda s: samples / s if s > 0 else math.inf  # noqa: E731
    return {"time/env_s": env_s, "time/inference_s": infer_s, "time/train_s": train_s,
            "sps/env": safe(env_s), "sps/inference": safe(infer_s), "sps/train": safe(train_s)}
