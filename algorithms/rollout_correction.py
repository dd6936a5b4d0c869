"""Rollout (train/inference mismatch) corrections, looked up by name in ``ROLLOUT_CORRECTIONS`` (SPECS §11).

The engine that sampled a token (behaviour policy pi_b, ``engine_logprobs``) and the learner's policy at
the start of the step (proximal policy pi_old, ``learner_logprobs``, recomputed once per batch) differ:
another numeric path, a stale weight version. With w_t = pi_old(y_t) / pi_b(y_t)
= exp(clamp(learner - engine, -20, 20)) each correction says what the policy loss's ratio is taken
against and how each token's loss is weighted. Contract of every entry:

    fn(learner_logprobs, engine_logprobs, mask, **params) -> RolloutCorrection
        old_logprobs  what the policy loss's ratio pi_theta / pi_? is taken against      [S, T]
        weights       per-token multiplier of the policy loss, no gradient, 0 on dropped  [S, T]
                      tokens and padding, exactly 1.0 where nothing is corrected
        kept          mask with the dropped tokens removed (bool)                         [S, T]
        metrics       {name: float}, over this call's unmasked tokens (see mismatch_metrics)

Use (params bound at the edge with functools.partial):
    c = ROLLOUT_CORRECTIONS.get(name)(learner_logp, engine_logp, mask, **params)
    per_tok, clipped = policy_loss(logp, c.old_logprobs, adv, mask, ...)
    loss = aggregate_loss(per_tok * c.weights, mask, mode, ...)     # the ORIGINAL mask
Aggregating with the original mask keeps the normalisers of ``loss_normalizers(train_mask)`` valid
for micro-batches (a dropped token still counts in the denominator, as in verl and AReaL).
No function here mutates its inputs.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor

from algorithms.kl import kl_k3
from algorithms.losses import LOG_RATIO_CLAMP
from algorithms.registry import Registry
from algorithms.segments import masked_mean, masked_sum

__all__ = ["ROLLOUT_CORRECTIONS", "RolloutCorrection", "mismatch_metrics", "effective_sample_fraction",
           "icepop_weights", "no_correction", "truncated_is", "masked_is_sequence", "icepop",
           "decoupled_ppo"]


class RolloutCorrection(NamedTuple):
    old_logprobs: Tensor  # [S, T] the policy loss's ratio baseline
    weights: Tensor       # [S, T] detached per-token loss multiplier
    kept: Tensor          # [S, T] bool
    metrics: dict[str, float]


CorrectionFn = Callable[..., RolloutCorrection]
ROLLOUT_CORRECTIONS: Registry = Registry("rollout correction")


def _log_w(learner_logprobs: Tensor, engine_logprobs: Tensor, mask: Tensor) -> Tensor:
    if learner_logprobs.shape != engine_logprobs.shape or mask.shape != learner_logprobs.shape \
            or mask.dim() != 2:
        raise ValueError(f"learner_logprobs {tuple(learner_logprobs.shape)}, engine_logprobs "
                         f"{tuple(engine_logprobs.shape)} and mask {tuple(mask.shape)} must all be "
                         "[num_samples, max_len]")
    return (learner_logprobs.detach() - engine_logprobs.detach()).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


def effective_sample_fraction(weights: Tensor, mask: Tensor) -> float:
    """ESS / n = (sum w)^2 / (n * sum w^2) over the unmasked entries (Kong 1992): 1 when all weights
    are equal, 1/n when one carries everything; 0 when every weight is 0 or nothing is unmasked.

    Shapes: weights, mask [*] -> float.
    Example: effective_sample_fraction(tensor([1., 0., 1., 2.]), ones(4)) -> 16 / (4 * 6) = 0.6667
    """
    m = mask.bool()
    n, s1, s2 = float(m.sum()), float(masked_sum(weights, m)), float(masked_sum(weights ** 2, m))
    return s1 * s1 / (n * s2) if n > 0 and s2 > 0 else 0.0


def mismatch_metrics(learner_logprobs: Tensor, engine_logprobs: Tensor, mask: Tensor, weights: Tensor,
                     kept: Tensor) -> dict[str, float]:
    """Mismatch diagnostics over the unmasked tokens (means over this call's tokens; for micro-batches
    scale by the call's token share like ``approx_kl``; max and ESS are per call):

        mismatch/logprob_abs_diff  mean |log pi_old - log pi_b|
        mismatch/kl                mean k3 of KL(pi_b || pi_old) on tokens sampled from pi_b:
                                   w - 1 - log w, w = pi_old / pi_b (>= 0, unbiased)
        mismatch/is_weight_mean    mean of the applied weights (0 for dropped tokens)
        mismatch/is_weight_max     max of the applied weights
        mismatch/ess_frac          effective_sample_fraction of the applied weights
        mismatch/masked_frac       share of unmasked tokens the correction dropped

    Shapes: four [S, T] tensors and kept [S, T] bool -> {name: float}.
    Example: learner = engine -> diff 0, kl 0, weight mean = max = ess = 1, masked 0 (weights 1).
    """
    m = mask.bool()
    lp, ep = learner_logprobs.detach(), engine_logprobs.detach()
    n = float(m.sum())
    w_max = float(torch.where(m, weights, torch.full_like(weights, -torch.inf)).max()) if n > 0 else 0.0
    return {
        "mismatch/logprob_abs_diff": float(masked_mean((lp - ep).abs(), m)),
        "mismatch/kl": float(masked_mean(kl_k3(ep, lp), m)),
        "mismatch/is_weight_mean": float(masked_mean(weights, m)),
        "mismatch/is_weight_max": w_max,
        "mismatch/ess_frac": effective_sample_fraction(weights, m),
        "mismatch/masked_frac": float((m & ~kept).sum()) / n if n > 0 else 0.0,
    }


def _result(old_logprobs: Tensor, weights: Tensor, kept: Tensor, learner_logprobs: Tensor,
            engine_logprobs: Tensor, mask: Tensor) -> RolloutCorrection:
    m = mask.bool()
    kept = kept & m
    weights = torch.where(kept, weights, torch.zeros_like(weights)).detach()
    return RolloutCorrection(old_logprobs.detach(), weights, kept,
                             mismatch_metrics(learner_logprobs, engine_logprobs, m, weights, kept))


@ROLLOUT_CORRECTIONS.register("none")
def no_correction(learner_logprobs: Tensor, engine_logprobs: Tensor, mask: Tensor) -> RolloutCorrection:
    """No correction: the ratio is taken against the engine's log-probs, weight 1 on every unmasked
    token (the learner's behaviour before corrections existed, bit for bit: x * 1.0 == x). Metrics are
    still computed; pass engine_logprobs twice when the learner did not recompute (all zero then).

    Shapes: [S, T] x 3 -> RolloutCorrection.
    Example: no_correction(l, e, m).old_logprobs is e's values; weights = m as float
    """
    _log_w(learner_logprobs, engine_logprobs, mask)
    ones = torch.ones_like(engine_logprobs)
    return _result(engine_logprobs, ones, mask.bool(), learner_logprobs, engine_logprobs, mask)


@ROLLOUT_CORRECTIONS.register("tis")
def truncated_is(learner_logprobs: Tensor, engine_logprobs: Tensor, mask: Tensor, *,
                 cap: float = 2.0) -> RolloutCorrection:
    """Token-level truncated importance sampling (Yao et al. 2025, "Your efficient RL framework secretly
    brings you off-policy RL training"; Ionides 2008 truncated IS):

        w_t = min(pi_old(y_t) / pi_b(y_t), C);   L_t = sg[w_t] * policy_loss_t(ratio pi_theta / pi_old)

    Biased (the truncation) but bounded variance; no token is dropped. C ~ 2.

    Shapes: [S, T] x 3 -> RolloutCorrection (old_logprobs = learner_logprobs).
    Example: w = [0.5, 1.5, 3.0], C = 2 -> weights [0.5, 1.5, 2.0]
    """
    if cap <= 0:
        raise ValueError(f"tis cap must be > 0, got {cap}")
    w = torch.exp(_log_w(learner_logprobs, engine_logprobs, mask)).clamp(max=cap)
    return _result(learner_logprobs, w, mask.bool(), learner_logprobs, engine_logprobs, mask)


@ROLLOUT_CORRECTIONS.register("mis")
def masked_is_sequence(learner_logprobs: Tensor, engine_logprobs: Tensor, mask: Tensor, *,
                       low: float = 0.5, high: float = 2.0, reduce: str = "sum") -> RolloutCorrection:
    """Sequence-level masked importance sampling (Liu, Li et al. 2025, "When Speed Kills Stability",
    Seq-MIS: rejection instead of truncation):

        log rho_i = clamp(sum_t (log pi_old - log pi_b), -20, 20)        reduce="sum": the sequence IS weight
                  = clamp(mean_t (...), -20, 20)                        reduce="mean": geometric mean (SPECS)
        weight_i,t = rho_i if low <= rho_i <= high else 0               whole sample dropped outside the band

    Kept sequences carry their weight rho_i on every token (rho * 1[rho in band], the estimator of the
    paper). Suits sequence losses (GSPO); with token losses the weight is broadcast over the tokens.

    Shapes: [S, T] x 3 -> RolloutCorrection (old_logprobs = learner_logprobs).
    Example: per-token log w [[.1, .2], [1., 1.]], band [.5, 2] -> rho [e^.3, e^2]: row 1 dropped
    """
    if not 0 <= low <= high:
        raise ValueError(f"mis band must satisfy 0 <= low <= high, got [{low}, {high}]")
    if reduce not in ("sum", "mean"):
        raise ValueError(f"mis reduce must be 'sum' or 'mean', got {reduce!r}")
    log_w = _log_w(learner_logprobs, engine_logprobs, mask)
    seq = masked_sum(log_w, mask, dim=-1) if reduce == "sum" else masked_mean(log_w, mask, dim=-1)
    rho = torch.exp(seq.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)).unsqueeze(-1).expand_as(log_w)
    kept = (rho >= low) & (rho <= high)
    return _result(learner_logprobs, rho, kept, learner_logprobs, engine_logprobs, mask)


def icepop_weights(ratio: Tensor, low: float, high: float) -> Tensor:
    """IcePop's token weight: w if low <= w <= high, else 0 (Ling team / inclusionAI 2025, "IcePop";
    the form verl tests: w = [0.4, 0.8, 6.0], band [0.5, 5.0] -> [0.0, 0.8, 0.0]).

    Shapes: ratio [*] -> [*]. Example: icepop_weights(tensor([0.4, 0.8, 6.0]), 0.5, 5.0) -> [0, .8, 0]
    """
    return torch.where((ratio >= low) & (ratio <= high), ratio, torch.zeros_like(ratio))


@ROLLOUT_CORRECTIONS.register("icepop")
def icepop(learner_logprobs: Tensor, engine_logprobs: Tensor, mask: Tensor, *,
           low: float = 0.5, high: float = 5.0) -> RolloutCorrection:
    """IcePop, token-level double-sided masking of the train/inference mismatch (inclusionAI Ring-1T,
    2025; band alpha = 0.5, beta = 5):

        w_t = pi_old(y_t) / pi_b(y_t);   weight_t = w_t * 1[low <= w_t <= high]

    Tokens outside the band are dropped (weight 0, no gradient); kept tokens carry their ratio w_t.

    Shapes: [S, T] x 3 -> RolloutCorrection (old_logprobs = learner_logprobs).
    Example: w = [[0.4, 0.8, 6.0]], band [0.5, 5.0] -> weights [[0, 0.8, 0]], masked_frac 2/3
    """
    if not 0 <= low <= high:
        raise ValueError(f"icepop band must satisfy 0 <= low <= high, got [{low}, {high}]")
    w = torch.exp(_log_w(learner_logprobs, engine_logprobs, mask))
    kept = (w >= low) & (w <= high)
    return _result(learner_logprobs, icepop_weights(w, low, high), kept, learner_logprobs,
                   engine_logprobs, mask)


@ROLLOUT_CORRECTIONS.register("decoupled")
def decoupled_ppo(learner_logprobs: Tensor, engine_logprobs: Tensor, mask: Tensor, *,
                  cap: float | None = 5.0) -> RolloutCorrection:
    """Decoupled PPO objective (Hilton et al. 2022, "Batch size-invariance for policy optimization";
    AReaL, Fu et al. 2025): clip against the proximal policy, correct for the behaviour policy:

        L_t = sg[w_t] * max(-A r_t, -A clip(r_t, 1 - eps_low, 1 + eps_high)),
        r_t = pi_theta / pi_old (old_logprobs = learner_logprobs),  w_t = pi_old / pi_b

    Capped as AReaL does: a token with w_t > cap is dropped (weight 0), not truncated (that is
    ``tis``); cap=None keeps every weight. Only the upper side is capped (unlike ``icepop``).

    Shapes: [S, T] x 3 -> RolloutCorrection.
    Example: w = [0.5, 1.5, 6.0], cap 5 -> weights [0.5, 1.5, 0.0]
    """
    if cap is not None and cap <= 0:
        raise ValueError(f"decoupled cap must be > 0 or None, got {cap}")
    w = torch.exp(_log_w(learner_logprobs, engine_logprobs, mask))
    kept = mask.bool() if cap is None else w <= cap
    return _result(learner_logprobs, w, kept, learner_logprobs, engine_logprobs, mask)
