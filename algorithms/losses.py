"""Per-token policy loss, critic loss and the DPO loss (SPECS §1, §2, §3, §11).

Losses here are *per element*; reducing them to a scalar is ``algorithms.aggregation``'s job
(one function, one place). No function mutates its inputs.

Policy losses are looked up by name in ``POLICY_LOSSES`` (a recipe's ``algorithm.policy_loss``).
Contract of every entry (one signature, so GSPO / CISPO / decoupled PPO plug in without touching
the learner):

    fn(logprobs, old_logprobs, advantages, mask, *, eps_low, eps_high, dual_clip_c)
        -> (per_token_loss [S, T], clipped [S, T] bool)

    logprobs      log pi_theta(y_t) of the sampled tokens, with gradient          [S, T]
    old_logprobs  log-probs the ratio is taken against (no gradient)              [S, T]
    advantages    per sample [S] (broadcast over tokens) or per token [S, T]
    mask          1/True on the tokens the loss applies to (sequence-level losses  [S, T]
                  such as GSPO average over it; token losses may ignore it)
    eps_low, eps_high, dual_clip_c   clip range [1 - eps_low, 1 + eps_high] and dual-clip
                  constant (None = off); a loss ignores the ones it has no use for
    per_token_loss  to be reduced by ``aggregate_loss`` (padding is masked there)
    clipped         True on unmasked tokens where a clip decided the value (-> clip_frac)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from algorithms.registry import Registry

__all__ = ["LOG_RATIO_CLAMP", "POLICY_LOSSES", "clipped_surrogate", "ppo_policy_loss", "value_loss",
           "dpo_loss"]

POLICY_LOSSES: Registry = Registry("policy loss")

# exp(20) ~ 4.9e8 still fits fp16/bf16/fp32; beyond it a single stale token would overflow.
LOG_RATIO_CLAMP = 20.0


def clipped_surrogate(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor,
                      eps_low: float = 0.2, eps_high: float = 0.28,
                      dual_clip_c: float | None = 3.0) -> tuple[Tensor, Tensor]:
    """PPO clipped surrogate per token, with DAPO clip-higher and dual clip.

        rho = exp(clamp(logp - logp_old, -20, 20))
        L   = max(-A * rho, -A * clip(rho, 1 - eps_low, 1 + eps_high))     (Schulman et al. 2017)
        L   = min(L, -A * c)   where A < 0, c = dual_clip_c          (Ye et al. 2020, dual clip)

    eps_high > eps_low is DAPO's clip-higher (Yu et al. 2025): low-probability tokens with A > 0 may
    grow further before the clip freezes them. ``clipped`` is True where a clip decided the value
    (the gradient wrt logprobs is 0 there): the PPO clip, or the dual clip.

    Shapes: logprobs, old_logprobs [N, T]; advantages [N] (broadcast over T) or [N, T]
            -> (loss [N, T], clipped [N, T] bool).
    Example: clipped_surrogate(log(tensor([[1.5]])), zeros(1, 1), tensor([1.])) -> (-1.28, True)
    """
    if logprobs.shape != old_logprobs.shape:
        raise ValueError(f"logprobs {tuple(logprobs.shape)} != old_logprobs "
                         f"{tuple(old_logprobs.shape)}")
    if dual_clip_c is not None and dual_clip_c <= 1.0:
        raise ValueError(f"dual_clip_c must be > 1 (got {dual_clip_c}); use None to disable")
    if advantages.dim() == logprobs.dim() - 1:
        advantages = advantages.unsqueeze(-1)
    log_ratio = (logprobs - old_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped_loss = -advantages * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    loss = torch.maximum(unclipped, clipped_loss)
    clipped = clipped_loss > unclipped
    if dual_clip_c is not None:
        dual = -advantages * dual_clip_c
        dual_active = (advantages < 0) & (loss > dual)
        loss = torch.where(dual_active, dual.expand_as(loss), loss)
        clipped = clipped | dual_active
    return loss, clipped


@POLICY_LOSSES.register("ppo")
def ppo_policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, *,
                    eps_low: float, eps_high: float, dual_clip_c: float | None) -> tuple[Tensor, Tensor]:
    """PPO's clipped surrogate with DAPO clip-higher and dual clip, in the ``POLICY_LOSSES`` contract
    (module docstring): ``clipped_surrogate`` per token, its clip flags restricted to ``mask``.

        rho = exp(clamp(logp - logp_old, -20, 20))
        L   = max(-A rho, -A clip(rho, 1 - eps_low, 1 + eps_high)), then min(L, -A c) where A < 0
        (Schulman et al. 2017; Ye et al. 2020 dual clip; Yu et al. 2025 DAPO clip-higher)

    Shapes: logprobs, old_logprobs, mask [S, T]; advantages [S] or [S, T] -> ([S, T], [S, T] bool).
    Example: ppo_policy_loss(log(tensor([[1.5, 1.]])), zeros(1, 2), tensor([1.]), tensor([[1, 0]]),
                             eps_low=.2, eps_high=.28, dual_clip_c=3.) -> ([[-1.28, -1.]], [[True, False]])
    """
    if mask.shape != logprobs.shape:
        raise ValueError(f"mask {tuple(mask.shape)} != logprobs {tuple(logprobs.shape)}")
    loss, clipped = clipped_surrogate(logprobs, old_logprobs, advantages, eps_low, eps_high, dual_clip_c)
    return loss, clipped & mask.bool()


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor,
               clip_eps: float | None) -> Tensor:
    """Clipped critic loss per element (PPO2 baselines; Andrychowicz et al. 2021 discuss it):

        V_clip = clip(V, V_old - eps_v, V_old + eps_v)
        L      = 0.5 * max((V - R)^2, (V_clip - R)^2)     (0.5 * (V - R)^2 when clip_eps is None)

    Shapes: values, old_values, returns [*] (same shape) -> [*].
    Example: value_loss(tensor([2.]), tensor([1.]), tensor([3.]), 0.5) -> 0.5 * max(1, 2.25) = 1.125
    """
    unclipped = (values - returns) ** 2
    if clip_eps is None:
        return 0.5 * unclipped
    v_clip = old_values + (values - old_values).clamp(-clip_eps, clip_eps)
    return 0.5 * torch.maximum(unclipped, (v_clip - returns) ** 2)


def dpo_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
             ref_chosen_logps: Tensor, ref_rejected_logps: Tensor,
             beta: float = 0.1) -> tuple[Tensor, dict[str, Tensor]]:
    """Direct Preference Optimisation loss (Rafailov et al. 2023):

        r_w = beta * (log pi(y_w|x) - log pi_ref(y_w|x))        implicit reward, chosen
        r_l = beta * (log pi(y_l|x) - log pi_ref(y_l|x))        implicit reward, rejected
        L   = mean_b  -log sigmoid(r_w - r_l)

    Inputs are per-sequence log-probs summed over completion tokens. Metrics (detached batch
    means): reward_accuracy = mean[r_w > r_l], margin = mean(r_w - r_l), chosen_reward = mean r_w,
    rejected_reward = mean r_l.

    Shapes: four tensors [B] -> (loss scalar, metrics {name: scalar}).
    Example: dpo_loss(tensor([-1.]), tensor([-2.]), tensor([-1.5]), tensor([-1.5]), beta=0.1)
             -> r_w = .05, r_l = -.05, loss = -log sigmoid(.1) = 0.6444
    """
    shapes = {tuple(t.shape) for t in (policy_chosen_logps, policy_rejected_logps,
                                       ref_chosen_logps, ref_rejected_logps)}
    if len(shapes) != 1:
        raise ValueError(f"dpo_loss inputs must share one shape [B], got {sorted(shapes)}")
    chosen_reward = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected_reward = beta * (policy_rejected_logps - ref_rejected_logps)
    margin = chosen_reward - rejected_reward
    loss = -F.logsigmoid(margin).mean()
    with torch.no_grad():
        metrics = {
            "reward_accuracy": (chosen_reward > rejected_reward).to(margin.dtype).mean(),
            "margin": margin.mean(),
            "chosen_reward": chosen_reward.mean(),
            "rejected_reward": rejected_reward.mean(),
        }
    return loss, {k: v.detach() for k, v in metrics.items()}
