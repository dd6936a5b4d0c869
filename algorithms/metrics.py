"""Training diagnostics shared by LLM PPO and classic-control PPO (the maths exists once).

No function here mutates its inputs; each returns a plain number for the logger.
"""
from __future__ import annotations

import torch
from torch import Tensor

from algorithms.segments import masked_mean

__all__ = ["clip_fractions", "explained_variance"]


def explained_variance(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> float:
    """How much of the returns' variance the value function explains:

        EV = 1 - Var[target - pred] / Var[target]

    with population variances over the unmasked entries (mask None: all entries). 1 is a perfect
    critic, 0 is no better than predicting the mean, < 0 is worse. NaN when target is constant
    (0 / 0), as in CleanRL and Stable-Baselines3.

    Shapes: pred, target [*] (same shape); mask [*] bool or 0/1 -> float.
    Example: explained_variance(tensor([0., 0., 0., 0.]), tensor([1., 2., 3., 4.])) -> 0.0
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} != target {tuple(target.shape)}")
    m = torch.ones_like(target, dtype=torch.bool) if mask is None else mask
    resid = target - pred
    var_target = masked_mean((target - masked_mean(target, m)) ** 2, m)
    if var_target == 0:
        return float("nan")
    var_resid = masked_mean((resid - masked_mean(resid, m)) ** 2, m)
    return float(1 - var_resid / var_target)


def clip_fractions(clipped: Tensor, advantages: Tensor, mask: Tensor, num_tokens: float) -> dict[str, float]:
    """The share of tokens where a clip decided the loss, split by side (TRL's clip_ratio/low and /high,
    verl's pg_clipfrac_lower): `high` where A > 0 (the ratio hit 1 + eps_high), `low` where A < 0 (the
    ratio hit 1 - eps_low, or the dual clip). Fractions of `num_tokens` (the step's token count).

    Shapes: clipped, mask [S, T]; advantages [S] (one per sample) or [S, T] -> {clip_frac, clip_frac/low,
    clip_frac/high}. Example: clipped all True, A = [1, -1], T = 1 -> {1.0, 0.5, 0.5} with num_tokens 2.
    """
    adv = advantages if advantages.dim() == 2 else advantages[:, None].expand_as(clipped)
    c = clipped.bool() & mask.bool()
    return {"clip_frac": float(c.sum()) / num_tokens, "clip_frac/low": float((c & (adv < 0)).sum()) / num_tokens,
            "clip_frac/high": float((c & (adv > 0)).sum()) / num_tokens}
