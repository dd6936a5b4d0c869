"""One PPO update on a collected rollout, with the shared maths of `algorithms/`:

    A, R   = gae(rewards, values, next_values, terminated, ended, gamma, lam)     (Schulman 2016)
    L_clip = clipped_surrogate(logp, logp_old, A_hat, clip, clip)                  (Schulman 2017)
    L_v    = value_loss(V, V_old, R, value_clip)
    loss   = agg(L_clip) - ent_coef * H + vf_coef * agg(L_v),  agg = aggregate_loss(., "token-mean")

Co-scaling (Beukman et al. 2026): minibatches per epoch = samples // minibatch_samples; every
epoch visits each sample once in a random order. PPO-EWMA (Hilton et al. 2022, "Batch size-
invariance for policy optimization"): with ewma_decay > 0 the clip is centred on an exponentially
averaged copy of past policies (`prox_agent`) instead of the behaviour policy, with the ratio
correction pi_prox / pi_old folded into the advantages.

Shapes: buffer tensors [T, N, ...] flattened to [T*N, ...]; metrics are floats.
Example: metrics = ppo_update(agent, opt, buf, gamma=.99, lam=.95, epochs=4, minibatch_samples=512,
                              clip=.2, value_clip=None, ent_coef=0., vf_coef=.5, max_grad_norm=.5)
"""
from __future__ import annotations

import torch
from torch import Tensor

from algorithms.aggregation import aggregate_loss
from algorithms.gae import gae
from algorithms.kl import approx_kl
from algorithms.losses import clipped_surrogate, value_loss
from algorithms.metrics import explained_variance
from algorithms.segments import masked_whiten


def _mean(per_sample: Tensor) -> Tensor:
    col = per_sample.reshape(-1, 1)  # control: one "token" per sample
    return aggregate_loss(col, torch.ones_like(col, dtype=torch.bool), "token-mean")


def ppo_update(agent, optimizer, buf, *, gamma: float, lam: float, epochs: int,
               minibatch_samples: int, clip: float, value_clip: float | None, ent_coef: float,
               vf_coef: float, max_grad_norm: float, norm_adv: bool = True,
               prox_agent=None, generator: torch.Generator | None = None) -> dict[str, float]:
    advantages, returns = gae(buf.rewards, buf.values, buf.next_values, buf.terminated,
                              buf.ended, gamma, lam)
    n = advantages.numel()
    obs = buf.obs.reshape(n, -1)
    actions = buf.actions.reshape(n, *buf.actions.shape[2:])
    old_logp, old_values = buf.logprobs.reshape(n), buf.values.reshape(n)
    adv, ret = advantages.reshape(n), returns.reshape(n)
    num_mb = max(1, n // minibatch_samples)
    mb_size = n // num_mb
    sums = {"loss/policy": 0.0, "loss/value": 0.0, "loss/entropy": 0.0, "ppo/approx_kl": 0.0,
            "ppo/clip_fraction": 0.0}
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator)
        for k in range(num_mb):
            idx = perm[k * mb_size:(k + 1) * mb_size]
            logp, entropy, values = agent.evaluate(obs[idx], actions[idx])
            mb_adv, anchor = adv[idx], old_logp[idx]
            if norm_adv:
                mb_adv = masked_whiten(mb_adv, torch.ones_like(mb_adv, dtype=torch.bool))
            if prox_agent is not None:
                with torch.no_grad():
                    anchor = prox_agent.evaluate(obs[idx], actions[idx])[0]
                mb_adv = mb_adv * torch.exp((anchor - old_logp[idx]).clamp(-20, 20))
            pg, clipped = clipped_surrogate(logp[:, None], anchor[:, None], mb_adv[:, None],
                                            clip, clip, dual_clip_c=None)
            v_loss = value_loss(values, old_values[idx], ret[idx], value_clip)
            loss = _mean(pg) - ent_coef * entropy.mean() + vf_coef * _mean(v_loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(agent.parameters(), max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                sums["loss/policy"] += float(_mean(pg))
                sums["loss/value"] += float(_mean(v_loss))
                sums["loss/entropy"] += float(entropy.mean())
                sums["ppo/approx_kl"] += float(approx_kl(logp, old_logp[idx]))
                sums["ppo/clip_fraction"] += float(clipped.float().mean())
    steps = epochs * num_mb
    metrics = {k: v / steps for k, v in sums.items()}
    metrics["ppo/explained_variance"] = explained_variance(buf.values.reshape(n), ret)
    metrics["ppo/num_minibatches"] = float(num_mb)
    metrics["ppo/minibatch_samples"] = float(mb_size)
    metrics["ppo/samples_per_kl"] = n / max(metrics["ppo/approx_kl"], 1e-12)
    return metrics


@torch.no_grad()
def ewma_update(prox_agent, agent, decay: float) -> None:
    """theta_prox <- decay * theta_prox + (1 - decay) * theta (PPO-EWMA proximal policy)."""
    for p_prox, p in zip(prox_agent.parameters(), agent.parameters()):
        p_prox.mul_(decay).add_(p, alpha=1 - decay)
