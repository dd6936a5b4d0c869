"""Weight sync learner -> rollout engines, called by the drivers after every optimizer step.

sync.mode "full": fp32 buckets, engines get the learner's exact weights. "delta" (SPECS §9):
bf16 buckets carrying only the elements whose bf16 bits changed since the last sync (dense buckets
above sync.dense_threshold, a full bf16 sync every sync.full_every_steps); engines
then run on the learner's weights rounded to bf16.

sync.transport (rollout/transport.py): "object_store" (one put by the learner, zero-copy
shared-memory reads by the engines on its node: the colocated path) or "broadcast" (a torch.distributed
group of the sync's own, gloo on CPU / NCCL on GPU, learner rank 0: one broadcast of one flat buffer
per sync; built on the first sync; if a broadcast fails, e.g. an engine restarted, that sync falls
back to a full object-store sync and the group is rebuilt on the next one).

Returns metrics: sync/bytes (payload size), sync/density (share of bf16 elements shipped as changed;
1.0 for full), sync/mode (0 full, 1 delta), sync/full (1 when this sync was a full one),
sync/transport (0 object store, 1 broadcast), time/sync_encode_s (learner side), time/sync_s (end to end).
Example: metrics = sync_weights(learner, engines, step + 1, cfg.sync)
"""
from __future__ import annotations

import time

import ray

from rollout.delta_sync import DeltaSyncError

_GROUPS: dict[tuple[str, ...], str] = {}  # (learner, *engines) actor ids -> backend of their sync group


def sync_weights(learner, engines, version: int, sync, force_full: bool = False) -> dict[str, float]:
    """force_full: in delta mode, ship every bucket dense (bf16) this time."""
    t0 = time.time()
    mode, transport = sync.mode, sync.transport
    args = (int(sync.bucket_mb * 2**20), version, mode, sync.dense_threshold, sync.full_every_steps)
    recovered = 0
    try:
        stats = _ship(learner, engines, version, args, force_full, transport, sync)
    except DeltaSyncError:  # an engine lost its base (restart) or a bucket failed its checksum
        stats, recovered = _ship(learner, engines, version, args, True, transport, sync), 1
    except (ray.exceptions.RayError, RuntimeError):
        if transport != "broadcast":
            raise
        _GROUPS.pop(_group_key(learner, engines), None)  # rebuilt on the next sync
        deadline = time.time() + float(sync.timeout_s)
        while True:  # a restarting engine answers "unavailable" until its constructor has run
            try:
                stats, recovered = _ship(learner, engines, version, args, True, "object_store", sync), 1
                break
            except ray.exceptions.ActorUnavailableError:
                if time.time() > deadline:
                    raise
                time.sleep(1.0)
    s = ray.get(stats)
    out = {"sync/bytes": float(s["bytes"]), "sync/density": float(s["density"]),
           "sync/mode": float(mode == "delta"), "sync/full": float(s["full"]),
           "sync/transport": float(transport == "broadcast"),
           "time/sync_encode_s": float(s["encode_s"]), "time/sync_s": time.time() - t0}
    if recovered:
        out["sync/recovered"] = 1.0
    return out


def _ship(learner, engines, version, args, force_full, transport, sync):
    """Export one payload and deliver it to every engine. -> stats ObjectRef."""
    if transport == "object_store":
        payload, stats = learner.export_update.remote(*args, force_full=force_full)
        ray.get([e.update_weights.remote(payload, version) for e in engines])
        return stats
    _ensure_group(learner, engines, sync)
    payload, stats = learner.export_update.remote(*args, force_full=force_full, transport="broadcast")
    sent = learner.broadcast_pending.remote()
    ray.get([sent, *[e.receive_update.remote(payload, version) for e in engines]])
    return stats


def _group_key(learner, engines) -> tuple[str, ...]:
    return tuple(a._actor_id.hex() for a in (learner, *engines))


def _ensure_group(learner, engines, sync) -> None:
    key = _group_key(learner, engines)
    if key in _GROUPS:
        return
    backend = sync.backend
    if backend == "auto":
        backend = ray.get(learner.default_sync_backend.remote())
    timeout_s, world = float(sync.timeout_s), len(engines) + 1
    host, port = ray.get(learner.open_sync_group.remote(world, timeout_s))
    ray.get([learner.join_sync_group.remote(world, backend, timeout_s),
             *[e.join_sync_group.remote(host, port, r + 1, world, backend, timeout_s) for r, e in enumerate(engines)]])
    _GROUPS[key] = backend


def before_train(engines, sleep_between_phases: bool) -> None:
    """Colocated mode: engines free what they can (KV cache, weights) while the learner trains."""
    if sleep_between_phases:
        ray.get([e.sleep.remote() for e in engines])


def after_train(engines, sleep_between_phases: bool) -> None:
    if sleep_between_phases:
        ray.get([e.wake.remote() for e in engines])
