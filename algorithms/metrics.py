"""Training diagnostics shared by LLM PPO and classic-control PPO (the maths exists once).

No function here mutates its inputs; each returns a plain number for the logger.
"""
from __future__ import annotations

import torch
from torch import Tensor

from algorithms.segments import masked_mean

__all__ = ["explained_variance"]


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
