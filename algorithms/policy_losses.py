"""Newer policy losses in the ``POLICY_LOSSES`` contract: GSPO and CISPO (SPECS §11).

``POLICY_LOSSES`` is the one registry of ``algorithms.losses`` (where ``ppo`` lives); importing this
module adds ``gspo`` and ``cispo`` to it, so callers that look a loss up by name import
``algorithms.policy_losses`` (which re-exports the registry). Contract of every entry (see
``algorithms.losses``):

    fn(logprobs, old_logprobs, advantages, mask, *, eps_low, eps_high, dual_clip_c)
        -> (per_token_loss [S, T], clipped [S, T] bool, False on masked-out tokens)

The per-token loss goes to ``algorithms.aggregation.aggregate_loss`` like PPO's, with any mode. A
rollout correction's weights (``algorithms.rollout_correction``) multiply the per-token loss.
No function here mutates its inputs.
"""
from __future__ import annotations

import torch
from torch import Tensor

from algorithms.losses import LOG_RATIO_CLAMP, POLICY_LOSSES, clipped_surrogate, ppo_policy_loss
from algorithms.segments import masked_mean

__all__ = ["POLICY_LOSSES", "ppo_policy_loss", "gspo_policy_loss", "cispo_policy_loss",
           "gspo_sequence_log_ratio"]


def _check(logprobs: Tensor, old_logprobs: Tensor, mask: Tensor) -> None:
    if logprobs.shape != old_logprobs.shape or mask.shape != logprobs.shape or logprobs.dim() != 2:
        raise ValueError(f"logprobs {tuple(logprobs.shape)}, old_logprobs {tuple(old_logprobs.shape)} "
                         f"and mask {tuple(mask.shape)} must all be [num_samples, max_len]")


def gspo_sequence_log_ratio(logprobs: Tensor, old_logprobs: Tensor, mask: Tensor) -> Tensor:
    """log s_i = (1/|y_i|) sum_{t in y_i} clamp(logp_t - logp_old_t, -20, 20): GSPO's length-normalised
    sequence log-ratio (Zheng et al. 2025), averaged over the unmasked tokens (0 for an empty row).

    Shapes: logprobs, old_logprobs, mask [S, T] -> [S] (differentiable in logprobs).
    Example: gspo_sequence_log_ratio(tensor([[.3, -.1, 9.]]), zeros(1, 3), tensor([[1, 1, 0]])) -> [.1]
    """
    _check(logprobs, old_logprobs, mask)
    log_ratio = (logprobs - old_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return masked_mean(log_ratio, mask, dim=-1)


@POLICY_LOSSES.register("gspo")
def gspo_policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, *,
                     eps_low: float, eps_high: float,
                     dual_clip_c: float | None = None) -> tuple[Tensor, Tensor]:
    """GSPO, Group Sequence Policy Optimization (Zheng et al. 2025, arXiv:2507.18071), token form:

        s_i    = exp((1/|y_i|) sum_t (log pi_theta(y_t) - log pi_old(y_t)))      sequence ratio
        s_i,t  = sg[s_i] * pi_theta(y_t) / sg[pi_theta(y_t)]                      (value s_i)
        L_i,t  = max(-A_i,t s_i,t, -A_i,t clip(s_i,t, 1 - eps_low, 1 + eps_high))

    s_i,t has the value of s_i and d s_i,t / d logp_t = s_i, so with per-sample advantages and the
    ``seq-mean-token-mean`` aggregation the gradient is exactly the paper's sequence objective
    (1/G) sum_i max(-A_i s_i, -A_i clip(s_i, ...)) (d s_i / d logp_t = s_i / |y_i|); other
    aggregation modes reweight the same per-sequence terms. The clip is decided per sequence (a
    clipped sequence has no gradient at all). Per-token advantages [S, T] give the paper's GSPO-token.
    The paper's clip range is tiny (eps_low 3e-4, eps_high 4e-4), not PPO's 0.2 / 0.28: the caller
    passes GSPO's. ``dual_clip_c`` is ignored (the paper has no dual clip). The clip reuses
    ``clipped_surrogate`` on log s_i,t against a zero baseline.

    Shapes: logprobs, old_logprobs, mask [S, T]; advantages [S] or [S, T] -> ([S, T], [S, T] bool).
    Example: log-ratios [[.3, -.1, .1]], A = [-1], eps .15 / .05 -> s = e^.1 = 1.1052 > 1.05, A < 0 so
             unclipped: loss [[1.1052] * 3], clipped [[False] * 3]
    """
    seq_log_ratio = gspo_sequence_log_ratio(logprobs, old_logprobs, mask).detach()
    # logp - sg[logp] is exactly 0 in value (1 in gradient); padding contributes neither
    token_offset = torch.where(mask.bool(), logprobs - logprobs.detach(), torch.zeros_like(logprobs))
    log_s_token = seq_log_ratio.unsqueeze(-1) + token_offset
    loss, clipped = clipped_surrogate(log_s_token, torch.zeros_like(log_s_token), advantages,
                                      eps_low, eps_high, None)
    return loss, clipped & mask.bool()


@POLICY_LOSSES.register("cispo")
def cispo_policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, *,
                      eps_low: float, eps_high: float,
                      dual_clip_c: float | None = None) -> tuple[Tensor, Tensor]:
    """CISPO, Clipped IS-weight Policy Optimization (MiniMax-M1, arXiv:2506.13585, 2025):

        r_t = exp(clamp(logp_t - logp_old_t, -20, 20))
        L_t = -sg[clip(r_t, 1 - eps_low, 1 + eps_high)] * A_t * log pi_theta(y_t)

    A REINFORCE-style loss whose importance weight is clipped and detached: every token keeps the
    gradient -sg[w_t] A_t d logp_t (PPO's clip would zero it). MiniMax-M1 clips only from above:
    pass eps_low >= 1 (lower bound <= 0, no lower clip). ``clipped`` marks tokens whose weight was
    clipped (r_t outside the band), whatever the sign of A; ``dual_clip_c`` is ignored. The loss value
    is not a surrogate of the return (it is -w A logp, positive for A > 0): compare gradients, not values.

    Shapes: logprobs, old_logprobs, mask [S, T]; advantages [S] or [S, T] -> ([S, T], [S, T] bool).
    Example: logp [[-1.]], r = 1.5, A = [1.], eps .2 / .28 -> w = 1.28, loss [[1.28]], clipped [[True]]
    """
    _check(logprobs, old_logprobs, mask)
    if advantages.dim() == logprobs.dim() - 1:
        advantages = advantages.unsqueeze(-1)
    with torch.no_grad():
        ratio = torch.exp((logprobs - old_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
        weight = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
        clipped = (weight != ratio) & mask.bool()
    return -weight * advantages * logprobs, clipped
