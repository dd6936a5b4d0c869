"""LLM PPO with a critic (SPECS §2): the GRPO driver loop with a critic-based advantage estimator.

Per step: the critic scores every completion token (V(s_t)), the outcome reward goes on the last
token (minus an optional per-token KL penalty to the frozen reference), GAE(gamma, lambda) over
tokens gives advantages and returns (algorithms/gae.py, the same function classic-control PPO
uses), the policy trains on the clipped surrogate with token-level advantages, and the critic
trains on the clipped value loss (algorithms/losses.py) at the same time, in its own actor.

`critic.placement`: `own_actor` reserves its own CPU share (GPU on a cluster); `colocated` pins the
critic to the learner's node with no reservation of its own, so both time-share those resources.
"""
from __future__ import annotations

import ray
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from algorithms.gae import masked_whiten, token_gae, token_rewards
from rl.drivers.estimators import collect_refs
from rl.workers.critic import CriticActor, ReferenceActor
from rl.workers.ray_setup import local_threads


class CriticEstimator:
    def __init__(self, critic, reference, gamma: float, lam: float, kl_coef: float, whiten: bool):
        self.critic, self.reference = critic, reference
        self.gamma, self.lam, self.kl_coef, self.whiten = gamma, lam, kl_coef, whiten
        self.actors = [critic]
        self._targets = None

    def advantages(self, batch) -> tuple[torch.Tensor, dict]:
        mask = batch.completion_mask
        refs = [self.critic.values.remote(batch)]
        if self.reference is not None:
            refs.append(self.reference.logprobs.remote(batch))
        values, *ref_logp = ray.get(refs)
        kl = (batch.logprobs - ref_logp[0]) * mask if ref_logp else None  # k1 on the sampled tokens
        rewards = token_rewards(batch.rewards, mask, kl, self.kl_coef)
        adv, returns = token_gae(rewards, values, mask, self.gamma, self.lam)
        self._targets = (values, returns)
        m = mask.float()
        n = m.sum().clamp(min=1)
        resid = ((returns - values) * m)
        ret_mean = (returns * m).sum() / n
        var_ret = (((returns - ret_mean) * m) ** 2).sum() / n
        metrics = {"critic/value_mean": float((values * m).sum() / n),
                   "critic/return_mean": float(ret_mean),
                   "critic/explained_variance": float(1 - (resid ** 2).sum() / n / var_ret.clamp(min=1e-8)),
                   "advantage/mean": float((adv * m).sum() / n)}
        if kl is not None:
            metrics["kl_penalty/mean"] = float(kl.sum() / n)
        return (masked_whiten(adv, mask) if self.whiten else adv), metrics

    def update(self, batch) -> list:
        values, returns = self._targets
        return [self.critic.train_step.remote(batch, values, returns)]

    def collect(self, pending: list) -> dict:
        return collect_refs(pending, "critic/")


def critic_estimator(cfg, pad_id: int, learner) -> CriticEstimator:
    c, t = cfg.critic, cfg.trainer
    options = {}
    if c.placement == "colocated":
        node = ray.get(learner.node_id.remote())
        options = {"num_cpus": 0, "scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)}
    critic = CriticActor.options(**options).remote(
        c.model or cfg.model.name, cfg.model.dtype, cfg.run.seed, lr=c.lr, weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm, value_clip=c.value_clip, value_loss_coef=c.value_loss_coef,
        minibatch_samples=t.minibatch_samples, microbatch_samples=t.microbatch_samples,
        updates_per_batch=cfg.algorithm.updates_per_batch, loss_aggregation=cfg.algorithm.loss_aggregation,
        max_new_tokens=cfg.rollout.max_new_tokens, num_threads=local_threads(), pad_id=pad_id)
    reference = None
    if c.kl_penalty_coef > 0:
        reference = ReferenceActor.options(**options).remote(
            cfg.model.name, cfg.model.dtype, cfg.run.seed, temperature=cfg.rollout.temperature,
            microbatch_samples=t.microbatch_samples, num_threads=local_threads(), pad_id=pad_id)
    return CriticEstimator(critic, reference, c.gamma, c.lam, c.kl_penalty_coef, c.whiten_advantages)


def train_ppo(cfg, resume: bool = False, address: str | None = None) -> dict:
    from rl.drivers.grpo import train
    return train(cfg, resume=resume, address=address, estimator_factory=critic_estimator)
