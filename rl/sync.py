"""Weight sync learner -> rollout engines, called by the drivers after every optimizer step.

Returns metrics: time/sync_s (and, as sync modes grow, bytes sent and density).
"""
from __future__ import annotations

import time

import ray


def sync_weights(learner, engines, version: int, trainer_cfg) -> dict[str, float]:
    t0 = time.time()
    buckets = learner.export_weights.remote(int(trainer_cfg.sync_bucket_mb * 2**20))
    ray.get([e.update_weights.remote(buckets, version) for e in engines])
    return {"time/sync_s": time.time() - t0}


def before_train(engines, rollout_cfg) -> None:
    """Colocated mode: engines free what they can (KV cache, weights) while the learner trains."""
    if rollout_cfg.sleep_between_phases:
        ray.get([e.sleep.remote() for e in engines])


def after_train(engines, rollout_cfg) -> None:
    if rollout_cfg.sleep_between_phases:
        ray.get([e.wake.remote() for e in engines])
