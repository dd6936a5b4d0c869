"""Ray actors: thin adapters around the engine and the learner.

Actors ask for a fraction of a CPU so an engine, a learner and reward tasks fit on a 2-core laptop;
generation and training alternate, so each sets torch to use all local cores.
"""
from __future__ import annotations

import os
import time
import warnings

import ray
import torch

from rl.learner import Learner
from rl.models import TINY, cache_dir, load_policy, load_tokenizer, resolve_model_path
from rollout.delta_sync import DeltaReceiver, DeltaSender, DeltaUpdate, bf16_crcs
from rollout.engines import ENGINES
from rollout.transport import SyncGroup, default_backend, flatten_payload, rebuild_payload
from rollout.types import Completion, GenerationRequest
from rollout.weight_sync import pack_buckets


RECOVERY_BUCKET_BYTES = 32 << 20


def local_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@ray.remote(num_cpus=0.5, max_restarts=1, max_task_retries=1)
class RolloutWorker:
    """One engine. `update_weights` takes full buckets (list[WeightBucket]) or a bf16 DeltaUpdate,
    which the worker's DeltaReceiver turns into verified dense bf16 buckets for the engine.

    Given `learner_name` (the named LearnerActor's name: a handle among the constructor's arguments
    would make Ray warn that the restart may not find it), a worker that Ray restarts after a crash
    (e.g. the OOM killer) pulls a full fp32 sync of the learner's current weights in its constructor, so the
    call that was in flight, retried by Ray on the new process, runs on trained weights, not the
    starting ones. Its completions then carry weight version -1 (recovered) until the next sync."""

    def __init__(self, engine: str, model_name: str, dtype: str = "float32", seed: int = 0,
                 share_prefill: bool = True, max_batch_samples: int = 256, engine_kwargs: dict | None = None,
                 learner_name: str | None = None):
        torch.set_num_threads(local_threads())
        builder = ENGINES.get(engine)
        if engine == "vllm":  # vLLM loads from a folder; it gets the same weights the learner starts from
            self.engine = builder(policy_folder(model_name, dtype, seed), load_tokenizer(model_name),
                                  dtype=dtype, seed=seed, **(engine_kwargs or {}))
        else:
            model, tok = load_policy(model_name, dtype, seed=seed)
            self.engine = builder(model, tok, share_prefill=share_prefill, max_batch_samples=max_batch_samples)
        self.receiver = DeltaReceiver()
        self.recovered = bool(learner_name is not None and _reconstructed())
        if self.recovered:
            learner = ray.get_actor(learner_name)
            payload, _ = learner.export_update.remote(RECOVERY_BUCKET_BYTES, -1, "full")
            self.update_weights(ray.get(payload), -1)

    def was_recovered(self) -> bool:
        """True in a process Ray restarted, which re-synced itself from the learner."""
        return self.recovered

    def generate(self, requests: list[GenerationRequest], seed: int | None = None) -> list[Completion]:
        return self.engine.generate(requests, seed=seed)

    def update_weights(self, update, version: int) -> int:
        if isinstance(update, DeltaUpdate):
            buckets = self.receiver.apply(update)
        else:
            buckets = update
            self.receiver.reset()  # the engine now holds weights the receiver never saw
        self.engine.update_weights(buckets, version)
        return version

    def join_sync_group(self, host: str, port: int, rank: int, world_size: int, backend: str,
                        timeout_s: float) -> int:
        self._group = SyncGroup.join(host, port, rank, world_size, backend, timeout_s)
        return rank

    def receive_update(self, skeleton_and_size: tuple, version: int) -> int:
        """Broadcast transport: take the payload's bytes from the learner's broadcast, then apply it."""
        group = getattr(self, "_group", None)
        if group is None:
            raise RuntimeError("this engine is in no weight-sync group (restarted?); the driver rebuilds it")
        skeleton, nbytes = skeleton_and_size
        return self.update_weights(rebuild_payload(skeleton, group.broadcast(None, nbytes)), version)

    def weights_checksum(self) -> int:
        from rollout.weight_sync import params_checksum
        return params_checksum(self.engine.model.named_parameters())

    def weights_crc(self) -> dict[str, int]:
        """bf16 CRC32 per parameter name, read from the engine's live weights."""
        if hasattr(self.engine, "weights_crc"):
            return self.engine.weights_crc()
        return bf16_crcs(self.engine.model.named_parameters())

    def is_sleeping(self) -> bool:
        return bool(getattr(self.engine, "is_sleeping", lambda: False)())

    def sleep(self) -> None:
        self.engine.sleep()

    def wake(self) -> None:
        self.engine.wake()


def policy_folder(model_name: str, dtype: str = "float32", seed: int = 0) -> str:
    """A local HF folder with the policy's starting weights (tiny-llama: the seeded random model,
    written once per seed)."""
    if model_name != TINY:
        return resolve_model_path(model_name)
    target = cache_dir() / "models" / f"{TINY}-seed{seed}"
    if not (target / "config.json").exists():
        import shutil
        import tempfile
        model, tok = load_policy(model_name, "float32", seed=seed)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=target.parent, prefix=".tmp-")
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            os.rename(tmp, target)  # atomic: a concurrent writer loses the race harmlessly
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


class SyncingLearner(Learner):
    """The learner plus the sender side of weight sync, kept where the weights live."""

    _sender: DeltaSender | None = None

    _group: SyncGroup | None = None
    _pending = None

    @ray.method(num_returns=2)
    def export_update(self, bucket_bytes: int, version: int, mode: str = "full", dense_threshold: float = 0.4,
                      full_every_steps: int = 10, force_full: bool = False, transport: str = "object_store"):
        """-> (payload for RolloutWorker.update_weights, stats {bytes, density, full}).

        mode "full": fp32 buckets (the engine gets the exact weights); "delta": a bf16 DeltaUpdate.
        transport "broadcast": the payload is (skeleton, nbytes) for RolloutWorker.receive_update and
        the bytes wait here for `broadcast_pending`.
        """
        t0 = time.perf_counter()
        if mode == "full":
            payload = pack_buckets(self.model.named_parameters(), bucket_bytes)
            stats = {"bytes": sum(b.nbytes for b in payload), "density": 1.0, "full": True}
        elif mode == "delta":
            if self._sender is None or (self._sender.dense_threshold, self._sender.full_every_steps) != \
                    (dense_threshold, full_every_steps):
                self._sender = DeltaSender(dense_threshold, full_every_steps)
            payload = self._sender.encode(self.model.named_parameters(), bucket_bytes, version, force_full)
            stats = {"bytes": payload.nbytes, "density": payload.density(), "full": payload.is_full}
        else:
            raise ValueError(f"sync mode must be 'full' or 'delta', got {mode!r}")
        if transport == "broadcast":
            skeleton, self._pending = flatten_payload(payload)
            payload = (skeleton, int(self._pending.nbytes))
        return payload, {**stats, "encode_s": time.perf_counter() - t0}

    def default_sync_backend(self) -> str:
        return default_backend()

    def open_sync_group(self, world_size: int, timeout_s: float) -> tuple[str, int]:
        """Rank 0 of the broadcast transport: listen, -> (host, port) for the engines."""
        self._store, host, port = SyncGroup.listen(world_size, timeout_s)
        return host, port

    def join_sync_group(self, world_size: int, backend: str, timeout_s: float) -> int:
        self._group = SyncGroup.join("", 0, 0, world_size, backend, timeout_s, store=self._store)
        return 0

    def broadcast_pending(self) -> int:
        """Send the bytes of the last exported payload to every engine in the group. -> bytes sent."""
        flat, self._pending = self._pending, None
        self._group.broadcast(flat, flat.nbytes)
        return int(flat.nbytes)

    def weights_crc(self) -> dict[str, int]:
        """bf16 CRC32 per parameter name: what every engine must hold after a sync."""
        return bf16_crcs(self.model.named_parameters())


def _reconstructed() -> bool:
    """Whether Ray restarted this actor process (its own property reads a deprecated id: silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return ray.get_runtime_context().was_current_actor_reconstructed


LearnerActor = ray.remote(num_cpus=0.5, max_restarts=0)(SyncingLearner)


class LearnerWorker:
    """Marker for typing; the actor class is LearnerActor."""


def init_ray(address: str | None = None) -> None:
    if ray.is_initialized():
        return
    # workers import reward plug-ins and the toolkit from the driver's cwd and sys.path
    pythonpath = os.pathsep.join([os.getcwd(), *[p for p in os.sys.path if p]])
    env = {"env_vars": {"PYTHONPATH": pythonpath, "TOKENIZERS_PARALLELISM": "false"}}
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=True)
    else:
        ray.init(num_cpus=max(2, local_threads()), include_dashboard=False, runtime_env=env,
                 log_to_driver=True, configure_logging=False)
