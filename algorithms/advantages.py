"""Outcome-reward advantage estimators for group-sampled LLM RL (SPECS §1).

Contract of every entry in ``ADVANTAGE_ESTIMATORS``:
    fn(rewards: Tensor[N] float, group_ids: Tensor[N] long, eps: float = 1e-6) -> Tensor[N]
One advantage per sample (completion); the learner broadcasts it over the completion's tokens.
Groups are segments of ``group_ids`` and may have different sizes (see ``algorithms.segments``).

Example: ADVANTAGE_ESTIMATORS.get("grpo")(tensor([1., 0.]), tensor([0, 0])) -> ~tensor([1., -1.])
"""
from __future__ import annotations

import torch
from torch import Tensor

from algorithms.registry import Registry
from algorithms.segments import _check_ids, _counts, _mean, _std, segment_index

__all__ = ["ADVANTAGE_ESTIMATORS", "grpo_advantages", "dr_grpo_advantages", "rloo_advantages",
           "reinforce_pp_baseline_advantages"]

ADVANTAGE_ESTIMATORS: Registry = Registry("advantage estimator")


def _prepare(rewards: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, int]:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [num_samples], got shape {tuple(rewards.shape)}")
    _check_ids(group_ids, rewards)
    if not rewards.dtype.is_floating_point:
        rewards = rewards.to(torch.get_default_dtype())
    inverse, num_groups = segment_index(group_ids)
    return rewards, inverse, num_groups


def grpo_advantages(rewards: Tensor, group_ids: Tensor, norm_by_std: bool = True,
                    eps: float = 1e-6) -> Tensor:
    """GRPO advantage (Shao et al. 2024, DeepSeekMath, eq. for outcome supervision):

        A_i = (r_i - mean_g r) / (std_g r + eps)     std = population std of the group
        A_i =  r_i - mean_g r                        norm_by_std=False (Dr.GRPO, Liu et al. 2025)

    A group whose rewards are all equal (including a group of size 1) gets 0.

    Shapes: rewards [N] float, group_ids [N] long -> [N].
    Example: grpo_advantages(tensor([1., 0., 0., 1.]), tensor([0, 0, 0, 0])) -> ~[1, -1, -1, 1]
    """
    rewards, inverse, num_groups = _prepare(rewards, group_ids)
    centred = rewards - _mean(rewards, inverse, num_groups)[inverse]
    if not norm_by_std:
        return centred
    return centred / (_std(rewards, inverse, num_groups, unbiased=False)[inverse] + eps)


@ADVANTAGE_ESTIMATORS.register("grpo")
def _grpo(rewards: Tensor, group_ids: Tensor, eps: float = 1e-6) -> Tensor:
    """GRPO: (r - mean_g) / (std_g + eps). See grpo_advantages."""
    return grpo_advantages(rewards, group_ids, norm_by_std=True, eps=eps)


@ADVANTAGE_ESTIMATORS.register("dr_grpo")
def dr_grpo_advantages(rewards: Tensor, group_ids: Tensor, eps: float = 1e-6) -> Tensor:
    """Dr.GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training"): A_i = r_i - mean_g r,
    no std division (removes the difficulty bias). `eps` is accepted for the contract, unused.

    Shapes: rewards [N], group_ids [N] -> [N].
    Example: dr_grpo_advantages(tensor([1., 0., 0., 0.]), tensor([0, 0, 0, 0]))
             -> [.75, -.25, -.25, -.25]
    """
    return grpo_advantages(rewards, group_ids, norm_by_std=False, eps=eps)


@ADVANTAGE_ESTIMATORS.register("rloo")
def rloo_advantages(rewards: Tensor, group_ids: Tensor, eps: float = 1e-6) -> Tensor:
    """RLOO, leave-one-out baseline (Kool et al. 2019; Ahmadian et al. 2024):

        A_i = r_i - mean_{j in g, j != i} r_j = G/(G-1) * (r_i - mean_g r)

    with G = |g|, the size of sample i's group. Groups of size 1 have no baseline: A = 0.
    `eps` is accepted for the contract, unused.

    Shapes: rewards [N], group_ids [N] -> [N].
    Example: rloo_advantages(tensor([1., 0., 0.]), tensor([0, 0, 0])) -> [1., -.5, -.5]
    """
    rewards, inverse, num_groups = _prepare(rewards, group_ids)
    centred = rewards - _mean(rewards, inverse, num_groups)[inverse]
    sizes = _counts(inverse, num_groups, rewards.dtype)[inverse]
    scale = torch.where(sizes > 1, sizes / (sizes - 1).clamp_min(1), torch.zeros_like(sizes))
    return centred * scale


@ADVANTAGE_ESTIMATORS.register("reinforce_pp_baseline")
def reinforce_pp_baseline_advantages(rewards: Tensor, group_ids: Tensor,
                                     eps: float = 1e-6) -> Tensor:
    """REINFORCE++-baseline (Hu et al. 2025, "REINFORCE++"): subtract the group mean, then
    normalise over the whole batch (population std):

        a_i = r_i - mean_g r;   A_i = (a_i - mean_batch a) / (std_batch a + eps)

    Shapes: rewards [N], group_ids [N] -> [N].
    Example: reinforce_pp_baseline_advantages(tensor([1., 0., 2., 2.]), tensor([0, 0, 1, 1]))
             -> a = [.5, -.5, 0, 0], mean 0, std sqrt(.125) -> ~[1.414, -1.414, 0, 0]
    """
    centred = grpo_advantages(rewards, group_ids, norm_by_std=False)
    shifted = centred - centred.mean()
    return shifted / (shifted.pow(2).mean().sqrt() + eps)
