"""Per-token KL(pi || pi_ref) estimators from samples of pi (SPECS §1; Schulman 2020,
"Approximating KL Divergence", http://joschu.net/blog/kl-approx.html).

With x = log pi(a|s) - log pi_ref(a|s) on a token a sampled from pi (x clamped to [-20, 20]):
    k1 = x                         unbiased, high variance, can be negative
    k2 = x^2 / 2                   biased, low variance, >= 0
    k3 = exp(-x) - (-x) - 1        unbiased, low variance, >= 0 (GRPO paper, beta = 0.04)

Contract of every entry in ``KL_ESTIMATORS``: fn(logprobs [N, T], ref_logprobs [N, T]) -> [N, T].

``approx_kl`` is the one PPO diagnostic "how far did this update move the policy", shared by LLM
PPO/GRPO and classic-control PPO.
"""
from __future__ import annotations

import torch
from torch import Tensor

from algorithms.losses import LOG_RATIO_CLAMP
from algorithms.registry import Registry
from algorithms.segments import masked_mean

__all__ = ["KL_ESTIMATORS", "kl_penalty", "kl_k1", "kl_k2", "kl_k3", "approx_kl"]

KL_ESTIMATORS: Registry = Registry("KL estimator")


def _log_ratio(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError(f"logprobs {tuple(logprobs.shape)} != ref_logprobs "
                         f"{tuple(ref_logprobs.shape)}")
    return (logprobs - ref_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


@KL_ESTIMATORS.register("k1")
def kl_k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k1 = log pi - log pi_ref.  Shapes: [*], [*] -> [*].

    Example: kl_k1(tensor([-1.]), tensor([-2.])) -> tensor([1.])
    """
    return _log_ratio(logprobs, ref_logprobs)


@KL_ESTIMATORS.register("k2")
def kl_k2(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k2 = 0.5 * (log pi - log pi_ref)^2.  Shapes: [*], [*] -> [*].

    Example: kl_k2(tensor([-1.]), tensor([-3.])) -> tensor([2.])
    """
    return 0.5 * _log_ratio(logprobs, ref_logprobs) ** 2


@KL_ESTIMATORS.register("k3")
def kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k3 = pi_ref/pi - log(pi_ref/pi) - 1 = exp(ref - logp) - (ref - logp) - 1.
    Shapes: [*], [*] -> [*].

    Example: kl_k3(tensor([-1.]), tensor([-1.])) -> tensor([0.])
    """
    ref_minus_logp = -_log_ratio(logprobs, ref_logprobs)
    return torch.exp(ref_minus_logp) - ref_minus_logp - 1.0


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, kind: str) -> Tensor:
    """Per-token KL estimate of the kind named (``"k1"``, ``"k2"``, ``"k3"``); see the module
    docstring for the formulas. Unknown kind -> UnknownNameError listing the valid kinds.

    Shapes: logprobs, ref_logprobs [N, T] -> [N, T].
    Example: kl_penalty(logp, ref_logp, "k3").mul(mask).sum() / mask.sum()
    """
    return KL_ESTIMATORS.get(kind)(logprobs, ref_logprobs)


def approx_kl(logprobs: Tensor, old_logprobs: Tensor, mask: Tensor | None = None) -> Tensor:
    """KL(pi_old || pi_theta) estimated on tokens sampled from pi_old: the k3 estimator with
    x = log pi_old - log pi_theta, averaged over the unmasked tokens:

        r = exp(clamp(logp - logp_old, -20, 20));   approx_kl = mean_mask[(r - 1) - log r]

    k3 rather than k2 = 0.5 (log r)^2 (what the LLM learner logged before): k3 is unbiased for
    KL(pi_old || pi_theta), never negative, and is CleanRL's ``approx_kl``, so classic-control runs
    stay comparable with CleanRL's. Both agree to second order in log r.

    Shapes: logprobs, old_logprobs [*]; mask [*] bool or 0/1 (None: every entry) -> scalar.
    Example: approx_kl(log(tensor([2., 1.])), zeros(2)) -> ((2 - 1 - log 2) + 0) / 2 = 0.1534
    """
    per_token = kl_k3(old_logprobs, logprobs)
    return per_token.mean() if mask is None else masked_mean(per_token, mask)
