"""CleanRL-style PPO on CartPole (Huang et al. 2022, cleanrl/ppo.py defaults): the end-to-end
anchor for `rl bench envs`. Gymnasium SyncVectorEnv of 4 CartPole-v1, 128 steps per env per
rollout, 4 minibatches, 4 epochs, lr 2.5e-4 annealed, gamma 0.99, lambda 0.95, clip 0.2, ent 0.01,
vf 0.5, grad-norm 0.5, 64-64 tanh actor and critic, torch.distributions.Categorical sampling.
The GAE and clipped surrogate are the toolkit's shared functions (same maths; what the anchor
measures is CleanRL's loop shape: per-env Python stepping and small batches).

Example: sps = run_cleanrl_ppo(total_env_steps=8192)["sps"]
"""
from __future__ import annotations

import time

import gymnasium
import torch
from torch.distributions import Categorical

from algorithms.gae import gae
from algorithms.losses import clipped_surrogate
from rl.control.policy import ActorCritic


def run_cleanrl_ppo(total_env_steps: int = 8192, num_envs: int = 4, num_steps: int = 128,
                    seed: int = 1) -> dict[str, float]:
    torch.manual_seed(seed)
    envs = gymnasium.vector.SyncVectorEnv(  # same-step autoreset: the gym 0.26 API CleanRL assumes
        [lambda: gymnasium.make("CartPole-v1")] * num_envs,
        autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP)
    agent = ActorCritic(4, 2, True, [64, 64])
    opt = torch.optim.Adam(agent.parameters(), lr=2.5e-4, eps=1e-5)
    batch = num_envs * num_steps
    mb = batch // 4
    updates = max(1, total_env_steps // batch)
    obs_b = torch.zeros(num_steps, num_envs, 4)
    act_b = torch.zeros(num_steps, num_envs, dtype=torch.long)
    logp_b, val_b, rew_b = (torch.zeros(num_steps, num_envs) for _ in range(3))
    done_b = torch.zeros(num_steps, num_envs, dtype=torch.bool)
    obs, _ = envs.reset(seed=seed)
    next_obs, next_done = torch.tensor(obs), torch.zeros(num_envs, dtype=torch.bool)
    t0 = time.perf_counter()
    for update in range(updates):
        opt.param_groups[0]["lr"] = 2.5e-4 * (1.0 - update / updates)
        for t in range(num_steps):
            obs_b[t], done_b[t] = next_obs, next_done
            with torch.no_grad():
                logits = agent.actor(next_obs)
                dist = Categorical(logits=logits)
                action = dist.sample()
                logp_b[t], val_b[t], act_b[t] = dist.log_prob(action), agent.value(next_obs), action
            obs, r, term, trunc, _ = envs.step(action.numpy())
            rew_b[t] = torch.tensor(r)
            next_obs, next_done = torch.tensor(obs), torch.tensor(term | trunc)
        with torch.no_grad():  # CleanRL's done convention: done_b[t] = episode started at t
            next_v = torch.cat([val_b[1:], agent.value(next_obs)[None]])
            ended = torch.cat([done_b[1:], next_done[None]])
            adv, ret = gae(rew_b, val_b, next_v, ended, ended, 0.99, 0.95)
        flat = lambda x: x.reshape(batch, *x.shape[2:])  # noqa: E731
        b_obs, b_act, b_logp, b_adv, b_ret = map(flat, (obs_b, act_b, logp_b, adv, ret))
        for _ in range(4):
            perm = torch.randperm(batch)
            for k in range(0, batch, mb):
                i = perm[k:k + mb]
                dist = Categorical(logits=agent.actor(b_obs[i]))
                a_norm = (b_adv[i] - b_adv[i].mean()) / (b_adv[i].std() + 1e-8)
                pg, _ = clipped_surrogate(dist.log_prob(b_act[i]), b_logp[i], a_norm, 0.2, 0.2,
                                          dual_clip_c=None)
                v_loss = 0.5 * ((agent.value(b_obs[i]) - b_ret[i]) ** 2).mean()
                loss = pg.mean() - 0.01 * dist.entropy().mean() + 0.5 * v_loss
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(agent.parameters(), 0.5)
                opt.step()
    wall = time.perf_counter() - t0
    envs.close()
    return {"sps": updates * batch / wall, "env_steps": float(updates * batch), "wall_s": wall}
