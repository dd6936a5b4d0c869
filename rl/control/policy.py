"""Actor-critic MLPs for classic control (separate actor and critic trunks, orthogonal init, as
in CleanRL's ppo.py / Huang et al. 2022 "The 37 implementation details of PPO").

Discrete actions: categorical over logits, sampled by Gumbel-max (one fused pass, no multinomial).
Continuous (Pendulum): diagonal Gaussian with a state-independent log std.

Shapes: obs [B, obs_dim] -> logits [B, A] (or mean [B, act_dim]), value [B].
Example: ac = ActorCritic(4, 2, True, [64, 64]); a, logp, v = ac.act(torch.zeros(8, 4))
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _mlp(sizes: list[int], activation: str, out_gain: float) -> nn.Sequential:
    act = nn.Tanh if activation == "tanh" else nn.ReLU
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(a, b)
        last = i == len(sizes) - 2
        nn.init.orthogonal_(lin.weight, out_gain if last else math.sqrt(2))
        nn.init.zeros_(lin.bias)
        layers += [lin] if last else [lin, act()]
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, discrete: bool, hidden_sizes: list[int],
                 activation: str = "tanh"):
        super().__init__()
        self.discrete = discrete
        self.actor = _mlp([obs_dim, *hidden_sizes, act_dim], activation, 0.01)
        self.critic = _mlp([obs_dim, *hidden_sizes, 1], activation, 1.0)
        if not discrete:
            self.log_std = nn.Parameter(torch.zeros(act_dim))

    def value(self, obs: Tensor) -> Tensor:
        return self.critic(obs).squeeze(-1)

    def act(self, obs: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """-> (action [B] long or [B, act_dim] float, logprob [B], value [B])."""
        out = self.actor(obs)
        if self.discrete:
            logp_all = torch.log_softmax(out, -1)
            if deterministic:
                action = out.argmax(-1)
            else:
                gumbel = -torch.log(-torch.log(torch.rand_like(out).clamp_(1e-20, 1.0)))
                action = (logp_all + gumbel).argmax(-1)
            logp = logp_all.gather(-1, action[:, None]).squeeze(-1)
        else:
            std = self.log_std.exp()
            action = out if deterministic else out + std * torch.randn_like(out)
            logp = _gauss_logp(action, out, self.log_std)
        return action, logp, self.value(obs)

    def evaluate(self, obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """-> (logprob [B], entropy [B], value [B]) of given actions under the current policy."""
        out = self.actor(obs)
        if self.discrete:
            logp_all = torch.log_softmax(out, -1)
            logp = logp_all.gather(-1, action[:, None].long()).squeeze(-1)
            entropy = -(logp_all.exp() * logp_all).sum(-1)
        else:
            logp = _gauss_logp(action, out, self.log_std)
            entropy = (0.5 + 0.5 * math.log(2 * math.pi) + self.log_std).sum().expand(len(out))
        return logp, entropy, self.value(obs)


def _gauss_logp(x: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    z = (x - mean) * torch.exp(-log_std)
    return (-0.5 * z * z - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
