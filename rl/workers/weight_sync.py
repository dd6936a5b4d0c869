"""Weight sync learner -> rollout engines, called by the drivers after every optimizer step, verified.

sync.mode "full": fp32 buckets, engines get the learner's exact weights. "delta" (SPECS §9):
bf16 buckets carrying only the elements whose bf16 bits changed since the last sync (dense buckets
above sync.dense_threshold, a full bf16 sync every sync.full_every_steps); engines
then run on the learner's weights rounded to bf16.

sync.transport "vllm": the learner drives vLLM's own weight-transfer protocol on the engines (pause,
update, resume; rollout/vllm_transfer.py). Otherwise (rollout/transport.py): "object_store" (one put by the learner, zero-copy
shared-memory reads by the engines on its node: the colocated path) or "broadcast" (a torch.distributed
group of the sync's own, gloo on CPU / NCCL on GPU, learner rank 0: one broadcast of one flat buffer
per sync; built on the first sync; if a broadcast fails, e.g. an engine restarted, that sync falls
back to a full object-store sync and the group is rebuilt on the next one).

Verified (sync.verify): after every sync each engine reports the weight version it serves and the
additive checksum of its live weights (`rollout.weight_sync.weights_checksum`, in the dtype it
samples in; bf16 for delta syncs), and the learner computes the same over its own (sharded:
the sum of the ranks' partial sums). An engine that is behind or differs gets a full re-sync
(counted in sync/resyncs); if it still differs, `WeightSyncError` names it. Every wait has the
deadline sync.timeout_s; an engine or learner that does not answer in time raises
`WeightSyncTimeout` naming it, never a hang.

LoRA (`model.lora`, rl/workers/lora.py): the payload is the adapters only; sync/full_bytes (what a full sync
of the same model ships) and sync/bytes_ratio_vs_full come with it; checksums are of the merged weights.

Returns metrics: sync/bytes (payload size), sync/density (share of bf16 elements shipped as changed;
1.0 for full), sync/mode (0 full, 1 delta), sync/full (1 when this sync was a full one),
sync/transport (0 object store, 1 broadcast, 2 reshard, 3 vllm), sync/verified (1 when every engine was checked to serve
this version's weights), sync/resyncs (engines re-synced after a failed check), time/sync_encode_s
(learner side), time/sync_verify_s, time/sync_s (end to end).
Example: metrics = sync_weights(learner, engines, step + 1, cfg.sync)
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import ray

from rollout.delta_sync import DeltaSyncError

_GROUPS: dict[tuple[str, ...], str] = {}  # (learner, *engines) actor ids -> backend of their sync group


class WeightSyncError(Exception):
    """An engine does not serve the weights it was sent (after a full re-sync)."""


class WeightSyncTimeout(WeightSyncError):
    """An actor did not answer within sync.timeout_s."""


def engine_label(i: int, engine) -> str:
    return f"engine {i} (actor {engine._actor_id.hex()[:12]})"


def get_within(refs: list, labels: list[str], timeout_s: float, what: str) -> list:
    """ray.get of refs[i] (from the actor labels[i]) with one deadline; the actors that missed it
    are named in a WeightSyncTimeout."""
    _, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
    if pending:
        late = [label for ref, label in zip(refs, labels) if ref in pending]
        raise WeightSyncTimeout(f"weight sync: {', '.join(late)} did not {what} within sync.timeout_s={timeout_s:g} s")
    return ray.get(list(refs))


def check_dtype(sync) -> str | None:
    """The dtype engines are checked in: bf16 after delta syncs, else each engine's own."""
    return "bfloat16" if sync.mode == "delta" else None


def mismatched(engines: list, version: int, learner_checksum, sync, seen: dict | None = None) -> list[int]:
    """Indices of the engines whose served version or weights checksum differ from the learner's.
    learner_checksum(dtype) -> int (a sharded learner's is a collective). seen: gets the learner's
    checksum (`sync/checksum`) and each engine's (`sync/checksum_engine{i}`), exact ints."""
    labels = [engine_label(i, e) for i, e in enumerate(engines)]
    states = get_within([e.weights_state.remote(check_dtype(sync)) for e in engines], labels,
                        float(sync.timeout_s), "report its weights")
    want = {d: learner_checksum(d) for d in sorted({s["dtype"] for s in states})}
    if seen is not None:
        seen.update({"sync/checksum": want[states[0]["dtype"]],
                     **{f"sync/checksum_engine{i}": s["checksum"] for i, s in enumerate(states)}})
    return [i for i, s in enumerate(states) if s["version"] != version or s["checksum"] != want[s["dtype"]]]


def verify(engines: list, version: int, learner_checksum, resync, sync) -> dict[str, float]:
    """Check every engine; re-sync the ones that differ in full (resync(engine indices)) and check
    again; raise WeightSyncError naming those still wrong."""
    t0 = time.time()
    if not sync.verify or version % max(1, sync.verify_every_steps):
        return {"sync/verified": 0.0, "sync/resyncs": 0.0}
    seen: dict = {}
    bad = mismatched(engines, version, learner_checksum, sync, seen)
    if bad:
        resync(bad)
        still = [bad[i] for i in mismatched([engines[j] for j in bad], version, learner_checksum, sync)]
        if still:
            raise WeightSyncError(
                f"weight sync v{version}: {', '.join(engine_label(i, engines[i]) for i in still)} still "
                f"serve other weights than the learner's after a full re-sync (version or checksum differ)")
    return {"sync/verified": 1.0, "sync/resyncs": float(len(bad)), "sync/version": version, **seen,
            "time/sync_verify_s": time.time() - t0}


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

    def resync(bad: list[int]) -> None:
        _ship(learner, [engines[i] for i in bad], version, args, True, "object_store", sync)

    def learner_checksum(dtype):
        return get_within([learner.weights_checksum.remote(dtype)], ["the learner"], float(sync.timeout_s),
                          "report its weights checksum")[0]

    verified = verify(engines, version, learner_checksum, resync, sync)
    out = {"sync/bytes": float(s["bytes"]), "sync/density": float(s["density"]),
           "sync/mode": float(mode == "delta"), "sync/full": float(s["full"]),
           "sync/transport": {"object_store": 0.0, "broadcast": 1.0, "reshard": 2.0, "vllm": 3.0}[transport],
           "time/sync_encode_s": float(s["encode_s"]), **verified, "time/sync_s": time.time() - t0}
    if "full_bytes" in s:  # adapter-only (LoRA) syncs: what a full sync of the same model would ship
        out.update({"sync/full_bytes": float(s["full_bytes"]), "sync/bytes_ratio_vs_full": s["bytes"] / s["full_bytes"]})
    if recovered:
        out["sync/recovered"] = 1.0
    return out


def _ship(learner, engines, version, args, force_full, transport, sync):
    """Export one payload and deliver it to every engine. -> stats ObjectRef."""
    labels, timeout_s = [engine_label(i, e) for i, e in enumerate(engines)], float(sync.timeout_s)
    if transport == "vllm":  # the learner drives vLLM's own protocol on the engines
        stats = learner.send_vllm.remote(engines, version, timeout_s)
        get_within([stats], ["the learner"], timeout_s, f"send version {version} through vLLM's weight transfer")
        return stats
    if transport == "object_store":
        payload, stats = learner.export_update.remote(*args, force_full=force_full)
        get_within([e.update_weights.remote(payload, version) for e in engines], labels, timeout_s,
                   f"take the weights of version {version}")
        return stats
    _ensure_group(learner, engines, sync)
    payload, stats = learner.export_update.remote(*args, force_full=force_full, transport="broadcast")
    sent = learner.broadcast_pending.remote()
    get_within([sent, *[e.receive_update.remote(payload, version) for e in engines]], ["the learner", *labels],
               timeout_s, f"finish the broadcast of version {version}")
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
    get_within([learner.join_sync_group.remote(world, backend, timeout_s),
                *[e.join_sync_group.remote(host, port, r + 1, world, backend, timeout_s) for r, e in enumerate(engines)]],
               ["the learner", *[engine_label(i, e) for i, e in enumerate(engines)]], timeout_s + 30.0,
               "join the weight-sync group")
    _GROUPS[key] = backend


@dataclass(frozen=True)
class Phases:
    """What changes hands between the generation and the training phase (colocated mode frees the
    devices for the other phase): engines sleep while the learners train; the learners offload AdamW
    state (and, optionally, parameters) to host memory while the engines generate."""
    engine_sleep: bool = False
    offload_optimizer: bool = False
    offload_params: bool = False


def before_train(engines, learner, phases: Phases) -> None:
    """Engines free what they can (KV cache, weights); the learners take their state back."""
    if phases.engine_sleep:
        ray.get([e.sleep.remote() for e in engines])
    if phases.offload_optimizer or phases.offload_params:
        learner.onload()


def after_train(engines, phases: Phases) -> None:
    """Engines wake (before the weights arrive: a sleeping vLLM engine cannot take them)."""
    if phases.engine_sleep:
        ray.get([e.wake.remote() for e in engines])


def before_generate(learner, phases: Phases) -> float:
    """After the sync: the learners move their optimizer state (params) to host memory. -> MiB moved."""
    if phases.offload_optimizer or phases.offload_params:
        return learner.offload(phases.offload_optimizer, phases.offload_params)
    return 0.0
