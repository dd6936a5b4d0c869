"""LLM PPO with a critic (SPECS §2): the GRPO driver loop with the critic-based advantage estimator
(rl/drivers/estimators.py `CriticEstimator`, built by rl/build.py `estimator_from`).

`critic.placement`: `own_actor` reserves its own CPU share (GPU on a cluster); `colocated` pins the
critic to the learner's node with no reservation of its own, so both time-share those resources.
Example: rl train recipes/ppo_arith.yaml
"""
from __future__ import annotations

from rl.drivers.grpo import train


def train_ppo(cfg, resume: bool = False, address: str | None = None, callbacks: list = ()) -> dict:
    return train(cfg, resume=resume, address=address, callbacks=callbacks, estimator="critic")
