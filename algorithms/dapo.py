"""DAPO reward shaping and dynamic-sampling filter (Yu et al. 2025, "DAPO"; SPECS §1).

The generation loop ("keep sampling until prompts_per_step informative groups or
max_generation_rounds") belongs to the driver; the decisions it needs are here.
"""
from __future__ import annotations

import torch
from torch import Tensor

from algorithms.segments import _check_ids, segment_index

__all__ = ["overlong_penalty", "informative_group_mask", "informative_groups"]


def overlong_penalty(lengths: Tensor, max_len: int, cache_len: int) -> Tensor:
    """DAPO soft overlong punishment, added to the reward (L_max = max_len, L_cache = cache_len):

        R(|y|) = 0                                   |y| <= L_max - L_cache
               = ((L_max - L_cache) - |y|) / L_cache L_max - L_cache < |y| <= L_max
               = -1                                  |y| > L_max

    The middle branch falls linearly from 0 to -1, so R is continuous. cache_len = 0 gives the
    hard cut (0, then -1 beyond max_len).

    Shapes: lengths [N] (int or float, completion tokens) -> [N] float.
    Example: overlong_penalty(tensor([10, 18, 25]), max_len=20, cache_len=4) -> [0., -.5, -1.]
    """
    if not 0 <= cache_len <= max_len:
        raise ValueError(f"need 0 <= cache_len <= max_len, got cache_len={cache_len}, "
                         f"max_len={max_len}")
    dtype = lengths.dtype if lengths.dtype.is_floating_point else torch.get_default_dtype()
    length = lengths.to(dtype)
    soft_start = max_len - cache_len
    ramp = (soft_start - length) / max(cache_len, 1)
    zeros = torch.zeros_like(length)
    out = torch.where(length <= soft_start, zeros, ramp)
    return torch.where(length > max_len, torch.full_like(length, -1.0), out)


def _group_spread(rewards: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, int]:
    """(max_g r - min_g r per group [num_groups], inverse [N], num_groups)."""
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [num_samples], got shape {tuple(rewards.shape)}")
    _check_ids(group_ids, rewards)
    inverse, num_groups = segment_index(group_ids)
    r = rewards if rewards.dtype.is_floating_point else rewards.to(torch.get_default_dtype())
    lo = r.new_zeros(num_groups).scatter_reduce(0, inverse, r, "amin", include_self=False)
    hi = r.new_zeros(num_groups).scatter_reduce(0, inverse, r, "amax", include_self=False)
    return hi - lo, inverse, num_groups


def informative_group_mask(rewards: Tensor, group_ids: Tensor, atol: float = 1e-8) -> Tensor:
    """DAPO dynamic sampling: keep samples whose group's rewards are not all equal,

        keep_i = (max_{j in g(i)} r_j - min_{j in g(i)} r_j) > atol

    (a group with equal rewards has zero GRPO advantage, hence no gradient). Groups of size 1 are
    never informative.

    Shapes: rewards [N] float, group_ids [N] long -> [N] bool.
    Example: informative_group_mask(tensor([1., 1., 0., 1.]), tensor([0, 0, 1, 1])) -> [F, F, T, T]
    """
    spread, inverse, _ = _group_spread(rewards, group_ids)
    return (spread > atol)[inverse]


def informative_groups(rewards: Tensor, group_ids: Tensor, atol: float = 1e-8) -> list[int]:
    """Sorted list of the group ids whose rewards are not all equal (see informative_group_mask).

    Shapes: rewards [N], group_ids [N] -> list[int] of length <= num_groups.
    Example: informative_groups(tensor([1., 1., 0., 1.]), tensor([7, 7, 3, 3])) -> [3]
    """
    spread, _, _ = _group_spread(rewards, group_ids)
    ids = torch.unique(group_ids, sorted=True)
    return [int(g) for g in ids[spread > atol].tolist()]
