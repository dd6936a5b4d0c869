"""Weight sync learner -> rollout engines, called by the drivers after every optimizer step.

trainer.sync_mode "full": fp32 buckets, engines get the learner's exact weights. "delta" (SPECS §9):
bf16 buckets carrying only the elements whose bf16 bits changed since the last sync (dense buckets
above trainer.sync_dense_threshold, a full bf16 sync every trainer.sync_full_every_steps); engines
then run on the learner's weights rounded to bf16. The payload travels through the Ray object store
(one put by the learner, zero-copy shared-memory reads by the engines on its node).

Returns metrics: sync/bytes (payload size), sync/density (share of bf16 elements shipped as changed;
1.0 for full), sync/mode (0 full, 1 delta), sync/full (1 when this sync was a full one),
time/sync_encode_s (learner side), time/sync_s (end to end).
Example: metrics = sync_weights(learner, engines, step + 1, cfg.trainer)
"""
from __future__ import annotations

import time

import ray

from rollout.delta_sync import DeltaSyncError


def sync_weights(learner, engines, version: int, trainer_cfg, force_full: bool = False) -> dict[str, float]:
    """force_full: in delta mode, ship every bucket dense (bf16) this time."""
    t0 = time.time()
    mode = getattr(trainer_cfg, "sync_mode", "full")
    args = (int(trainer_cfg.sync_bucket_mb * 2**20), version, mode,
            getattr(trainer_cfg, "sync_dense_threshold", 0.4), getattr(trainer_cfg, "sync_full_every_steps", 10))
    payload, stats = learner.export_update.remote(*args, force_full=force_full)
    recovered = 0
    try:
        ray.get([e.update_weights.remote(payload, version) for e in engines])
    except DeltaSyncError:  # an engine lost its base (restart) or a bucket failed its checksum
        payload, stats = learner.export_update.remote(*args, force_full=True)
        ray.get([e.update_weights.remote(payload, version) for e in engines])
        recovered = 1
    s = ray.get(stats)
    out = {"sync/bytes": float(s["bytes"]), "sync/density": float(s["density"]),
           "sync/mode": float(mode == "delta"), "sync/full": float(s["full"]),
           "time/sync_encode_s": float(s["encode_s"]), "time/sync_s": time.time() - t0}
    if recovered:
        out["sync/recovered"] = 1.0
    return out


def before_train(engines, rollout_cfg) -> None:
    """Colocated mode: engines free what they can (KV cache, weights) while the learner trains."""
    if rollout_cfg.sleep_between_phases:
        ray.get([e.sleep.remote() for e in engines])


def after_train(engines, rollout_cfg) -> None:
    if rollout_cfg.sleep_between_phases:
        ray.get([e.wake.remote() for e in engines])
