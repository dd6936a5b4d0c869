"""Ray actors: thin adapters around the engine and the learner.

Actors ask for a fraction of a CPU so an engine, a learner and reward tasks fit on a 2-core laptop;
generation and training alternate, so each sets torch to use all local cores.
"""
from __future__ import annotations

import os
import time

import ray
import torch

from rl.learner import Learner
from rl.models import TINY, cache_dir, load_policy, load_tokenizer, resolve_model_path
from rollout.delta_sync import DeltaReceiver, DeltaSender, DeltaUpdate, bf16_crcs
from rollout.engines import ENGINES
from rollout.types import Completion, GenerationRequest
from rollout.weight_sync import pack_buckets


def local_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@ray.remote(num_cpus=0.5, max_restarts=1)
class RolloutWorker:
    """One engine. `update_weights` takes full buckets (list[WeightBucket]) or a bf16 DeltaUpdate,
    which the worker's DeltaReceiver turns into verified dense bf16 buckets for the engine."""

    def __init__(self, engine: str, model_name: str, dtype: str = "float32", seed: int = 0,
                 share_prefill: bool = True, max_batch_samples: int = 256, engine_kwargs: dict | None = None):
        torch.set_num_threads(local_threads())
        builder = ENGINES.get(engine)
        if engine == "vllm":  # vLLM loads from a folder; it gets the same weights the learner starts from
            self.engine = builder(policy_folder(model_name, dtype, seed), load_tokenizer(model_name),
                                  dtype=dtype, seed=seed, **(engine_kwargs or {}))
        else:
            model, tok = load_policy(model_name, dtype, seed=seed)
            self.engine = builder(model, tok, share_prefill=share_prefill, max_batch_samples=max_batch_samples)
        self.receiver = DeltaReceiver()

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

    @ray.method(num_returns=2)
    def export_update(self, bucket_bytes: int, version: int, mode: str = "full", dense_threshold: float = 0.4,
                      full_every_steps: int = 10, force_full: bool = False):
        """-> (payload for RolloutWorker.update_weights, stats {bytes, density, full}).

        mode "full": fp32 buckets (the engine gets the exact weights); "delta": a bf16 DeltaUpdate.
        """
        t0 = time.perf_counter()
        if mode == "full":
            buckets = pack_buckets(self.model.named_parameters(), bucket_bytes)
            return buckets, {"bytes": sum(b.nbytes for b in buckets), "density": 1.0, "full": True,
                             "encode_s": time.perf_counter() - t0}
        if mode != "delta":
            raise ValueError(f"sync mode must be 'full' or 'delta', got {mode!r}")
        if self._sender is None or (self._sender.dense_threshold, self._sender.full_every_steps) != \
                (dense_threshold, full_every_steps):
            self._sender = DeltaSender(dense_threshold, full_every_steps)
        update = self._sender.encode(self.model.named_parameters(), bucket_bytes, version, force_full)
        return update, {"bytes": update.nbytes, "density": update.density(), "full": update.is_full,
                        "encode_s": time.perf_counter() - t0}

    def weights_crc(self) -> dict[str, int]:
        """bf16 CRC32 per parameter name: what every engine must hold after a sync."""
        return bf16_crcs(self.model.named_parameters())


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
