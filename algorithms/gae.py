"""Generalised Advantage Estimation (Schulman et al. 2016, "High-Dimensional Continuous Control
Using Generalized Advantage Estimation"; SPECS §2). One function shared by LLM PPO and classic
control PPO. Time is dim 0.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["gae", "token_rewards", "token_gae"]


def gae(rewards: Tensor, values: Tensor, next_values: Tensor, terminated: Tensor, ended: Tensor,
        gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """GAE(gamma, lambda) with terminations and truncations kept apart:

        delta_t = r_t + gamma * V'_t * (1 - terminated_t) - V_t
        A_t     = delta_t + gamma * lam * (1 - ended_t) * A_{t+1}          (A_T = 0)
        returns = A + V

    V_t = values[t] = V(s_t); V'_t = next_values[t] = V(s_{t+1}), the value of the observation that
    followed step t. `ended` = terminated OR truncated marks an episode boundary (the recursion is
    cut there). At a truncated (time-limit) step pass V(true final observation) in next_values: a
    truncation is not a termination, so delta bootstraps from it. At the last row of a rollout that
    did not end, next_values holds V(the observation after the rollout).

    LLM PPO: one column per sequence, rows are token positions, reward on the last token (plus any
    per-token KL penalty), next_values[t] = values[t+1] and terminated = ended = True on the last
    real token; rows after it are padding (mask them out downstream); gamma = 1, lam = 0.95.

    Shapes: rewards, values, next_values [T, B] float; terminated, ended [T, B] bool (or 0/1)
            -> (advantages [T, B], returns [T, B]). Any trailing shape [T, *] works.
    Example: gae(tensor([[1.]]), tensor([[.5]]), tensor([[0.]]), tensor([[True]]), tensor([[True]]),
                 1., .95) -> (tensor([[.5]]), tensor([[1.]]))
    """
    shape = rewards.shape
    for name, t in (("values", values), ("next_values", next_values),
                    ("terminated", terminated), ("ended", ended)):
        if t.shape != shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, rewards has {tuple(shape)}")
    if bool((terminated.bool() & ~ended.bool()).any()):
        raise ValueError("a terminated step must also be ended (ended = terminated | truncated)")
    dtype = values.dtype
    not_terminated = 1.0 - terminated.to(dtype)
    carry = gamma * lam * (1.0 - ended.to(dtype))
    deltas = rewards.to(dtype) + gamma * next_values.to(dtype) * not_terminated - values
    advantages = torch.empty_like(deltas)
    running = torch.zeros_like(deltas[0]) if shape[0] > 0 else None
    for t in range(shape[0] - 1, -1, -1):  # sequential in time by definition; vectorised over B
        running = deltas[t] + carry[t] * running
        advantages[t] = running
    return advantages, advantages + values


def token_rewards(rewards: Tensor, mask: Tensor, kl: Tensor | None = None, kl_coef: float = 0.0) -> Tensor:
    """Token-level rewards for LLM PPO (SPECS §2; Ouyang et al. 2022): the outcome reward on the last
    real token of each completion, minus an optional per-token KL penalty kl_coef * kl_t:

        r_t = -kl_coef * kl_t + [t == last_i] * R_i

    Shapes: rewards [N]; mask [N, T] (1 on real tokens, left-aligned); kl [N, T] or None -> [N, T].
    Example: token_rewards(tensor([1.]), tensor([[1, 1, 0]])) -> [[0., 1., 0.]]
    """
    mask_f = mask.to(torch.float32)
    out = torch.zeros_like(mask_f)
    last = (mask.sum(1) - 1).clamp(min=0).long()
    has_tokens = mask.sum(1) > 0
    rows = torch.arange(mask.shape[0])[has_tokens]
    out[rows, last[has_tokens]] = rewards.to(torch.float32)[has_tokens]
    if kl is not None and kl_coef:
        out = out - kl_coef * kl.to(torch.float32) * mask_f
    return out


def token_gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0,
              lam: float = 0.95) -> tuple[Tensor, Tensor]:
    """GAE over completion tokens (LLM PPO), built on `gae`: V(s_{t+1}) = values[:, t+1], the episode
    ends (terminates) on each completion's last real token, padding is zeroed.

    Shapes: rewards, values, mask [N, T] (batch first, like the learner's tensors) -> (advantages,
    returns) [N, T], zero on padding.
    Example: token_gae(tensor([[0., 1.]]), tensor([[.5, .5]]), tensor([[1, 1]]), 1., 1.)
             -> (tensor([[.5, .5]]), tensor([[1., 1.]]))
    """
    m = mask.to(values.dtype)
    v = values * m
    next_v = torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], dim=1)
    last = torch.zeros_like(mask, dtype=torch.bool)
    lengths = mask.sum(1).long()
    rows = torch.arange(mask.shape[0])[lengths > 0]
    last[rows, lengths[lengths > 0] - 1] = True
    ended = last | (m == 0)
    adv, ret = gae((rewards * m).T, v.T, next_v.T, ended.T, ended.T, gamma, lam)
    return adv.T * m, ret.T * m

