"""Rollout collection for control PPO: T steps of N envs into preallocated torch buffers, with
the bootstrap values GAE needs (`algorithms.gae`):

    next_values[t] = V(s_{t+1})               (values[t+1]; V(obs after the rollout) at t = T-1)
    next_values[t] = V(true final obs)        where the episode was truncated (time limit),
                                               read from info["final_obs"] (SAME_STEP autoreset)

Shapes: obs [T, N, obs_dim]; actions [T, N] (or [T, N, act_dim]); logprobs, values, rewards,
next_values [T, N] float32; terminated, ended [T, N] bool.
Example: buf = RolloutBuffer(32, 64, 4, (), True); stats = collect(env, agent, buf, obs, tracker)
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch


def to_numpy(x) -> np.ndarray:
    """Env outputs as numpy (the torch backend returns tensors, possibly on a device)."""
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


class RolloutBuffer:
    def __init__(self, num_steps: int, num_envs: int, obs_dim: int, act_shape: tuple,
                 discrete: bool):
        t, n = num_steps, num_envs
        self.obs = torch.zeros(t, n, obs_dim)
        self.actions = torch.zeros((t, n, *act_shape), dtype=torch.int64 if discrete else
                                   torch.float32)
        self.logprobs = torch.zeros(t, n)
        self.values = torch.zeros(t, n)
        self.rewards = torch.zeros(t, n)
        self.next_values = torch.zeros(t, n)
        self.terminated = torch.zeros(t, n, dtype=torch.bool)
        self.ended = torch.zeros(t, n, dtype=torch.bool)


@dataclass
class EpisodeTracker:
    """Running return/length per env; finished episodes go to a window of the last `window`."""
    num_envs: int
    window: int = 100
    returns: np.ndarray = field(init=False)
    lengths: np.ndarray = field(init=False)
    recent_returns: deque = field(init=False)
    recent_lengths: deque = field(init=False)
    episodes: int = 0

    def __post_init__(self):
        self.returns = np.zeros(self.num_envs, np.float64)
        self.lengths = np.zeros(self.num_envs, np.int64)
        self.recent_returns = deque(maxlen=self.window)
        self.recent_lengths = deque(maxlen=self.window)

    def update(self, rewards: np.ndarray, ended: np.ndarray) -> None:
        self.returns += rewards
        self.lengths += 1
        if ended.any():
            idx = np.flatnonzero(ended)
            self.recent_returns.extend(self.returns[idx[-self.window:]].tolist())
            self.recent_lengths.extend(self.lengths[idx[-self.window:]].tolist())
            self.episodes += idx.size
            self.returns[idx] = 0.0
            self.lengths[idx] = 0

    def mean_return(self) -> float:
        return float(np.mean(self.recent_returns)) if self.recent_returns else float("nan")


@torch.no_grad()
def collect(env, agent, buf: RolloutBuffer, obs: np.ndarray, tracker: EpisodeTracker
            ) -> tuple[np.ndarray, dict[str, float]]:
    """Step `env` (SAME_STEP autoreset) buf.obs.shape[0] times from `obs`. Returns the next obs and
    {"time/env_s", "time/inference_s"}."""
    env_s = infer_s = 0.0
    num_steps = buf.obs.shape[0]
    for t in range(num_steps):
        t0 = time.perf_counter()
        obs_t = torch.as_tensor(to_numpy(obs))
        buf.obs[t].copy_(obs_t)
        action, logp, value = agent.act(buf.obs[t])
        buf.actions[t].copy_(action)
        buf.logprobs[t].copy_(logp)
        buf.values[t].copy_(value)
        t1 = time.perf_counter()
        obs, reward, term, trunc, info = env.step(action.numpy())
        t2 = time.perf_counter()
        reward, term, trunc = to_numpy(reward), to_numpy(term), to_numpy(trunc)
        buf.rewards[t].copy_(torch.as_tensor(reward))
        buf.terminated[t].copy_(torch.as_tensor(term))
        ended = term | trunc
        buf.ended[t].copy_(torch.as_tensor(ended))
        boot = trunc & ~term
        if boot.any():  # truncation is not termination: bootstrap from the true final obs
            idx = np.flatnonzero(boot)
            final = to_numpy(info["final_obs"])[idx]
            if final.dtype == object:  # SyncVectorEnv keeps one array per env
                final = np.stack(list(final))
            final = torch.as_tensor(final.astype(np.float32))
            buf.next_values[t, torch.as_tensor(idx)] = agent.value(final)
        tracker.update(reward, ended)
        t3 = time.perf_counter()
        env_s += t2 - t1
        infer_s += (t1 - t0) + (t3 - t2)
    t0 = time.perf_counter()
    last_value = agent.value(torch.as_tensor(to_numpy(obs)))
    boot = buf.ended & ~buf.terminated
    shifted = torch.cat([buf.values[1:], last_value[None]])
    buf.next_values.copy_(torch.where(boot, buf.next_values, shifted))
    infer_s += time.perf_counter() - t0
    return obs, {"time/env_s": env_s, "time/inference_s": infer_s}
