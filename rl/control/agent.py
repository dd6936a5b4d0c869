"""The pieces of a classic-control PPO run: its env (native vector env or a Ray-sharded pool), its
actor-critic, the closing greedy evaluation and the throughput metrics.

Example: env = make_env(ControlConfig(), 64); agent = build_agent(env, ControlConfig())
"""
from __future__ import annotations

import dataclasses
import math
import resource

import numpy as np
import torch

from envs.control import MODELS, ControlVectorEnv
from envs.control.pool import ShardedVectorEnv
from rl.config import ControlConfig
from rl.control.buffer import to_numpy
from rl.control.policy import ActorCritic


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


def throughput(samples: int, times: dict[str, float], train_s: float) -> dict[str, float]:
    env_s, infer_s = times["time/env_s"], times["time/inference_s"]
    safe = lambda s: samples / s if s > 0 else math.inf  # noqa: E731
    return {"time/env_s": env_s, "time/inference_s": infer_s, "time/train_s": train_s,
            "sps/env": safe(env_s), "sps/inference": safe(infer_s), "sps/train": safe(train_s)}
