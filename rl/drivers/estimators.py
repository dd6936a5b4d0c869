"""Advantage estimators as the driver sees them: `advantages(batch) -> (adv, metrics)`, then
`update(batch)` (anything that learns beside the policy, e.g. a critic; returns pending Ray refs)
and `collect(pending) -> metrics`; `actors` are checkpointed with the learner.

GRPO-family estimators are stateless group baselines (algorithms/advantages.py by name); LLM PPO's
is critic-based (SPECS §2): the critic scores every completion token (V(s_t)), the outcome reward goes
on the last token (minus an optional per-token KL penalty to the frozen reference), GAE(gamma, lambda)
over tokens gives advantages and returns (the same `gae` classic-control PPO uses), and the critic
trains on the clipped value loss in its own actor while the policy trains. On-policy distillation's
(`algorithm.name: opd`) asks a frozen teacher actor for per-token advantages. rl/build.py makes the first
two (`estimator_from`), rl/drivers/opd.py the third; the driver loop is the same for all.
"""
from __future__ import annotations

import time

import ray
import torch

from algorithms.distillation import distillation_metrics, mix_task_advantages, reverse_kl_advantages
from algorithms.gae import token_gae, token_rewards
from algorithms.metrics import explained_variance
from algorithms.segments import masked_whiten


class GroupEstimator:
    """GRPO / Dr.GRPO / RLOO / REINFORCE++-baseline: one advantage per sample from its group."""

    def __init__(self, adv_fn):
        self.adv_fn, self.actors = adv_fn, []

    def advantages(self, batch) -> tuple[torch.Tensor, dict]:
        adv = self.adv_fn(batch.rewards, batch.group_ids)
        return adv, {"advantage/mean": float(adv.mean()), "advantage/std": float(adv.std()) if len(adv) > 1 else 0.0}

    def update(self, batch) -> list:
        return []

    def collect(self, pending: list) -> dict:
        return {}

    def close(self) -> None:
        pass


def collect_refs(pending: list, prefix: str) -> dict:
    out = {}
    for m in ray.get(pending):
        out.update({f"{prefix}{k}": v for k, v in m.items()})
    return out


class CriticEstimator:
    """critic: an ActorCritic or a CriticGroup of sharded ranks (rl/workers/learner_group.py)."""

    def __init__(self, critic, reference, gamma: float, lam: float, kl_coef: float, whiten: bool):
        self.critic, self.reference = critic, reference
        self.gamma, self.lam, self.kl_coef, self.whiten = gamma, lam, kl_coef, whiten
        self.actors = list(critic.actors)
        self._targets = None

    def advantages(self, batch) -> tuple[torch.Tensor, dict]:
        mask = batch.completion_mask
        pending = self.critic.values_pending(batch)
        ref_logp = [self.reference.logprobs.remote(batch)] if self.reference is not None else []
        values, ref_logp = self.critic.values_collect(pending), ray.get(ref_logp)
        kl = (batch.logprobs - ref_logp[0]) * mask if ref_logp else None  # k1 on the sampled tokens
        rewards = token_rewards(batch.rewards, mask, kl, self.kl_coef)
        adv, returns = token_gae(rewards, values, mask, self.gamma, self.lam)
        self._targets = (values, returns)
        m = mask.float()
        n = m.sum().clamp(min=1)
        metrics = {"critic/value_mean": float((values * m).sum() / n),
                   "critic/return_mean": float((returns * m).sum() / n),
                   "critic/explained_variance": explained_variance(values, returns, mask),
                   "advantage/mean": float((adv * m).sum() / n),
                   "advantage/std": float((((adv - (adv * m).sum() / n) ** 2) * m).sum() / n) ** 0.5}
        if kl is not None:
            metrics["kl_penalty/mean"] = float(kl.sum() / n)
        return (masked_whiten(adv, mask) if self.whiten else adv), metrics

    def update(self, batch) -> list:
        values, returns = self._targets
        return self.critic.train_pending(batch, values, returns)

    def collect(self, pending: list) -> dict:
        return collect_refs(pending, "critic/")

    def close(self) -> None:
        self.critic.close()


class TeacherEstimator:
    """On-policy distillation (SPECS §11, algorithms/distillation.py): per token
    A_t = log pi_teacher(y_t) - log pi_student(y_t), + reward_weight * the task advantage when > 0.

    The teacher actor (rl/workers/teacher.py) scores the sampled tokens. The student log-probs are the
    ENGINE's, `batch.logprobs`: the distribution that actually sampled the tokens, which is what the
    single-sample reverse-KL estimate E_{y ~ pi_s}[log pi_s(y) - log pi_t(y)] needs; they cost no extra
    forward; at k = 0 with fp32 weight sync they equal the learner's up to numerics (`logprob_mismatch`
    says how far). With k > 0 they are the stale behaviour policy's, so the advantage says how far the
    policy that drew the sample was from the teacher, and the rollout correction (e.g. IcePop) treats
    the staleness in the loss as for GRPO. The teacher is frozen: nothing to checkpoint (`actors` empty).
    """

    def __init__(self, teacher, task_adv_fn, reward_weight: float = 0.0, clip: float | None = None):
        self.teacher, self.task_adv_fn, self.reward_weight, self.clip = teacher, task_adv_fn, reward_weight, clip
        self.actors = []

    def advantages(self, batch) -> tuple[torch.Tensor, dict]:
        mask, t0 = batch.train_mask, time.time()
        teacher_logp = ray.get(self.teacher.logprobs.remote(batch))
        teacher_s = time.time() - t0
        adv = reverse_kl_advantages(teacher_logp, batch.logprobs, mask, self.clip)
        if self.reward_weight > 0:
            adv = mix_task_advantages(adv, self.task_adv_fn(batch.rewards, batch.group_ids), mask, self.reward_weight)
        m = distillation_metrics(teacher_logp, batch.logprobs, mask, adv)
        return adv, {**m, "advantage/mean": m["opd/advantage_mean"], "time/teacher_s": teacher_s}

    def update(self, batch) -> list:
        return []

    def collect(self, pending: list) -> dict:
        return {}

    def close(self) -> None:
        ray.kill(self.teacher)
