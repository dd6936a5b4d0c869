"""Segment (group) and masked reductions: the shared vocabulary of the pure maths.

A *segment* is the set of samples that share a group id (in LLM RL: the completions of one prompt).
Group ids are an int64 tensor ``[num_samples]`` with arbitrary values: not contiguous, not sorted,
groups of different sizes (the knapsack allocator gives prompts different rollout counts). Every
reduction goes through ``index_add_`` / ``scatter_reduce`` on a fresh output, never through
``reshape(-1, G)`` (which silently assumes equal, contiguous groups).

Group order: group ``k`` of a per-group result is the k-th smallest distinct id (``torch.unique``).
No function here mutates its inputs.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "segment_index", "segment_sum", "segment_mean", "segment_std", "segment_max", "segment_min",
    "broadcast_to_samples", "group_sizes", "masked_sum", "masked_mean", "masked_whiten",
]


def _check_ids(group_ids: Tensor, values: Tensor | None = None) -> None:
    if group_ids.dim() != 1:
        raise ValueError(f"group_ids must be 1-D [num_samples], got shape {tuple(group_ids.shape)}")
    if group_ids.dtype.is_floating_point or group_ids.dtype == torch.bool:
        raise TypeError(f"group_ids must be an integer tensor, got {group_ids.dtype}")
    if values is not None and values.shape[:1] != group_ids.shape:
        raise ValueError(f"values {tuple(values.shape)} and group_ids {tuple(group_ids.shape)} "
                         "disagree on num_samples (dim 0)")


def segment_index(group_ids: Tensor) -> tuple[Tensor, int]:
    """Dense index of each sample's group.

    inverse[i] = k  where group_ids[i] is the k-th smallest distinct id; num_groups = #distinct ids.

    Shapes: group_ids [N] int -> (inverse [N] long, num_groups int).
    Example: segment_index(tensor([7, 3, 7])) -> (tensor([1, 0, 1]), 2)
    """
    _check_ids(group_ids)
    uniq, inverse = torch.unique(group_ids, sorted=True, return_inverse=True)
    return inverse.long(), int(uniq.numel())


def _sum(values: Tensor, inverse: Tensor, num_groups: int) -> Tensor:
    out = values.new_zeros((num_groups,) + tuple(values.shape[1:]))
    return out.index_add_(0, inverse, values)


def _counts(inverse: Tensor, num_groups: int, dtype: torch.dtype) -> Tensor:
    ones = torch.ones(inverse.shape[0], dtype=dtype, device=inverse.device)
    return torch.zeros(num_groups, dtype=dtype, device=inverse.device).index_add_(0, inverse, ones)


def _expand(per_group_1d: Tensor, like: Tensor) -> Tensor:
    """[G] -> [G, 1, ...] so it broadcasts against a per-group tensor with trailing dims."""
    return per_group_1d.reshape((-1,) + (1,) * (like.dim() - 1))


def _mean(values: Tensor, inverse: Tensor, num_groups: int) -> Tensor:
    total = _sum(values, inverse, num_groups)
    return total / _expand(_counts(inverse, num_groups, total.dtype), total)


def _std(values: Tensor, inverse: Tensor, num_groups: int, unbiased: bool) -> Tensor:
    # Two passes (mean first, then squared deviations): E[x^2] - E[x]^2 cancels badly in fp32.
    mean = _mean(values, inverse, num_groups)
    sq = (values - mean[inverse]) ** 2
    counts = _expand(_counts(inverse, num_groups, sq.dtype), mean)
    denom = (counts - 1) if unbiased else counts
    var = _sum(sq, inverse, num_groups) / denom.clamp_min(1)
    return torch.where(counts > 1, var, torch.zeros_like(var)).sqrt()


def segment_sum(values: Tensor, group_ids: Tensor) -> Tensor:
    """Per-group sum: S_g = sum_{i: id_i = g} x_i.

    Shapes: values [N, *] (float), group_ids [N] -> [num_groups, *].
    Example: segment_sum(tensor([1., 2., 4.]), tensor([5, 9, 5])) -> tensor([5., 2.])
    """
    _check_ids(group_ids, values)
    inverse, num_groups = segment_index(group_ids)
    return _sum(values, inverse, num_groups)


def segment_mean(values: Tensor, group_ids: Tensor) -> Tensor:
    """Per-group mean: mean_g = S_g / |g|.

    Shapes: values [N, *] float, group_ids [N] -> [num_groups, *].
    Example: segment_mean(tensor([1., 2., 4.]), tensor([5, 9, 5])) -> tensor([2.5, 2.])
    """
    _check_ids(group_ids, values)
    inverse, num_groups = segment_index(group_ids)
    return _mean(values, inverse, num_groups)


def segment_std(values: Tensor, group_ids: Tensor, unbiased: bool = False) -> Tensor:
    """Per-group standard deviation.

    std_g = sqrt( sum_{i in g} (x_i - mean_g)^2 / (|g| - [unbiased]) ); groups of size 1 -> 0
    (also when unbiased, where the formula would divide by 0).
    Population std (unbiased=False) is what GRPO normalises by (Shao et al. 2024, DeepSeekMath).

    Shapes: values [N, *] float, group_ids [N] -> [num_groups, *].
    Example: segment_std(tensor([1., 3., 4.]), tensor([0, 0, 1])) -> tensor([1., 0.])
    """
    _check_ids(group_ids, values)
    inverse, num_groups = segment_index(group_ids)
    return _std(values, inverse, num_groups, unbiased)


def segment_max(values: Tensor, group_ids: Tensor) -> Tensor:
    """Per-group maximum. Shapes: values [N] -> [num_groups].

    Example: segment_max(tensor([1., 3., 4.]), tensor([0, 0, 1])) -> tensor([3., 4.])
    """
    return _extreme(values, group_ids, "amax")


def segment_min(values: Tensor, group_ids: Tensor) -> Tensor:
    """Per-group minimum. Shapes: values [N] -> [num_groups].

    Example: segment_min(tensor([1., 3., 4.]), tensor([0, 0, 1])) -> tensor([1., 4.])
    """
    return _extreme(values, group_ids, "amin")


def _extreme(values: Tensor, group_ids: Tensor, reduce: str) -> Tensor:
    _check_ids(group_ids, values)
    if values.dim() != 1:
        raise ValueError(f"values must be 1-D [num_samples], got {tuple(values.shape)}")
    inverse, num_groups = segment_index(group_ids)
    out = values.new_zeros(num_groups)
    return out.scatter_reduce(0, inverse, values, reduce=reduce, include_self=False)


def broadcast_to_samples(per_group: Tensor, group_ids: Tensor) -> Tensor:
    """Give every sample the value of its group: y_i = per_group[k(i)].

    Shapes: per_group [num_groups, *], group_ids [N] -> [N, *].
    Example: broadcast_to_samples(tensor([10., 20.]), tensor([9, 5, 9])) -> tensor([20., 10., 20.])
    """
    inverse, num_groups = segment_index(group_ids)
    if per_group.shape[0] != num_groups:
        raise ValueError(f"per_group has {per_group.shape[0]} rows but group_ids has "
                         f"{num_groups} distinct groups")
    return per_group[inverse]


def group_sizes(group_ids: Tensor) -> Tensor:
    """Size of each sample's group: G_i = |{j : id_j = id_i}|.

    Shapes: group_ids [N] -> [N] long.
    Example: group_sizes(tensor([4, 4, 1, 4])) -> tensor([3, 3, 1, 3])
    """
    inverse, num_groups = segment_index(group_ids)
    return _counts(inverse, num_groups, torch.long)[inverse]


# ---------------------------------------------------------------------------------------------
# Masked reductions over padded [num_samples, max_len] token tensors.


def _as_mask(mask: Tensor, like: Tensor) -> Tensor:
    if mask.shape != like.shape:
        raise ValueError(f"mask {tuple(mask.shape)} must match x {tuple(like.shape)}")
    return mask.bool() if mask.dtype != torch.bool else mask


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """sum(x * mask) over `dim` (all dims when None); masked-out entries never contribute,
    even when they hold inf/NaN padding.

    Shapes: x [*], mask [*] (bool or 0/1) -> scalar or x reduced over dim.
    Example: masked_sum(tensor([1., 2., 9.]), tensor([1, 1, 0])) -> tensor(3.)
    """
    m = _as_mask(mask, x)
    kept = torch.where(m, x, torch.zeros_like(x))
    return kept.sum() if dim is None else kept.sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean over unmasked entries: sum(x * mask) / sum(mask), along `dim` (all dims when None).
    A slice with no unmasked entry gives 0 (not NaN).

    Shapes: x [*], mask [*] (bool or 0/1) -> scalar or x reduced over dim.
    Example: masked_mean(tensor([[1., 3., 9.]]), tensor([[1, 1, 0]]), dim=-1) -> tensor([2.])
    """
    m = _as_mask(mask, x)
    total = masked_sum(x, m, dim)
    count = m.sum() if dim is None else m.sum(dim)
    return total / count.clamp_min(1).to(total.dtype)


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Normalise the unmasked entries to mean 0, std 1 (population std over unmasked entries):
    y = (x - mu) / sqrt(var + eps), mu and var taken over mask; masked-out entries become 0.
    With shift_mean=False the mean is added back (scale-only whitening, as PPO for RLHF does
    for rewards; Ziegler et al. 2019).

    Shapes: x [*], mask [*] -> [*].
    Example: masked_whiten(tensor([1., 3., 7.]), tensor([1, 1, 0])) -> ~tensor([-1., 1., 0.])
    """
    m = _as_mask(mask, x)
    mu = masked_mean(x, m)
    var = masked_mean((x - mu) ** 2, m)
    y = (x - mu) * torch.rsqrt(var + eps)
    if not shift_mean:
        y = y + mu
    return torch.where(m, y, torch.zeros_like(y))
