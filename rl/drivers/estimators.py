"""Advantage estimators as the driver sees them: `advantages(batch) -> (adv, metrics)`, then
`update(batch)` (anything that learns beside the policy, e.g. a critic; returns pending Ray refs)
and `collect(pending) -> metrics`; `actors` are checkpointed with the learner.

GRPO-family estimators are stateless group baselines (algorithms/advantages.py by name); LLM PPO's
critic-based estimator lives in rl/drivers/ppo.py. The trainer loop is the same for both.
"""
from __future__ import annotations

import ray
import torch


class GroupEstimator:
    """GRPO / Dr.GRPO / RLOO / REINFORCE++-baseline: one advantage per sample from its group."""

    def __init__(self, adv_fn):
        self.adv_fn, self.actors = adv_fn, []

    def advantages(self, batch) -> tuple[torch.Tensor, dict]:
        return self.adv_fn(batch.rewards, batch.group_ids), {}

    def update(self, batch) -> list:
        return []

    def collect(self, pending: list) -> dict:
        return {}


def group_estimator(cfg, pad_id: int, learner) -> GroupEstimator:
    from rl.build import advantage_fn
    return GroupEstimator(advantage_fn(cfg))


def collect_refs(pending: list, prefix: str) -> dict:
    out = {}
    for m in ray.get(pending):
        out.update({f"{prefix}{k}": v for k, v in m.items()})
    return out
