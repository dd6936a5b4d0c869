"""The rollout worker: a Ray actor that is a thin adapter around one inference engine."""
from __future__ import annotations

import warnings

import ray
import torch

from rl.workers.devices import actor_device, placement_info
from rl.workers.models import load_policy, load_tokenizer, policy_folder
from rl.workers.ray_setup import local_threads
from rollout.delta_sync import DeltaReceiver, DeltaUpdate, bf16_crcs
from rollout.engines import ENGINES
from rollout.lora import LoraMerger, LoraUpdate, target_names
from rl.workers.realloc import ReallocPeer
from rollout.transport import SyncGroup, default_backend, rebuild_payload
from rollout.types import Completion, GenerationRequest

RECOVERY_BUCKET_BYTES = 32 << 20


class EngineWorker(ReallocPeer):
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
        self._base_source, self._lora = (model_name, dtype, seed), None
        builder = ENGINES.get(engine)
        if engine == "vllm":  # vLLM loads from a folder; it gets the same weights the learner starts from
            self.engine = builder(policy_folder(model_name, dtype, seed), load_tokenizer(model_name),
                                  dtype=dtype, seed=seed, **(engine_kwargs or {}))
        else:
            model, tok = load_policy(model_name, dtype, seed=seed)
            self.engine = builder(model.to(actor_device()), tok, share_prefill=share_prefill,
                                  max_batch_samples=max_batch_samples)
        self.receiver = DeltaReceiver()
        self._staged: list = []  # buckets of an unfinished streamed update (engines without partial_updates)
        self.recovered = bool(learner_name is not None and _reconstructed())
        if self.recovered:
            learner = ray.get_actor(learner_name)
            payload, _ = learner.export_update.remote(RECOVERY_BUCKET_BYTES, -1, "full")
            self.update_weights(ray.get(payload), -1)

    def placement_info(self) -> dict:
        return placement_info()

    def was_recovered(self) -> bool:
        """True in a process Ray restarted, which re-synced itself from the learner."""
        return self.recovered

    def generate(self, requests: list[GenerationRequest], seed: int | None = None) -> list[Completion]:
        return self.engine.generate(requests, seed=seed)

    def update_weights(self, update, version: int, final: bool = True) -> int:
        """final=False: more buckets of this version follow (a sharded learner streams them one at a
        time); an engine that cannot take a subset (vllm reloads all at once) holds them until the last."""
        if isinstance(update, LoraUpdate):  # LoRA: adapters in, merged weights W0 + s * B @ A out
            update = self._lora_merger(update).merge(update)
        if isinstance(update, DeltaUpdate):
            buckets = self.receiver.apply(update)
        else:
            buckets = update
            self.receiver.reset()  # the engine now holds weights the receiver never saw
        if not getattr(self.engine, "partial_updates", False):
            self._staged.extend(buckets)
            if not final:
                return version
            buckets, self._staged = self._staged, []
        self.engine.update_weights(buckets, version)
        return version

    def _lora_merger(self, update: LoraUpdate) -> LoraMerger:
        """The base weights W0 the adapters merge into, kept from the first LoRA update on: an engine with
        in-place weights (hf) keeps copies of the target weights it loaded; one that reloads whole models
        (vllm) keeps the starting model's weights on the host and gets all of them merged each sync."""
        if self._lora is None:
            model = getattr(self.engine, "model", None)
            if getattr(self.engine, "partial_updates", False) and model is not None:
                params = dict(model.named_parameters())
                self._lora = LoraMerger({n: params[n].detach().clone() for n in target_names(update)})
            else:
                base = load_policy(*self._base_source)[0]
                self._lora = LoraMerger(dict(base.named_parameters()), emit_all=True)
        return self._lora

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

    def weights_state(self, dtype: str | None = None) -> dict:
        """What this engine serves: {version, dtype, checksum} (`rollout.weight_sync.weights_checksum`
        of its live weights cast to `dtype`, default the dtype it samples in)."""
        torch_dtype = getattr(torch, dtype) if dtype else self.engine.serving_dtype()
        return {"version": int(self.engine.weight_version), "dtype": str(torch_dtype).removeprefix("torch."),
                "checksum": self.engine.weights_checksum(torch_dtype)}

    def weights_checksum(self, dtype: str | None = None) -> int:
        return self.weights_state(dtype)["checksum"]

    def weights_crc(self) -> dict[str, int]:
        """bf16 CRC32 per parameter name, read from the engine's live weights."""
        if hasattr(self.engine, "weights_crc"):
            return self.engine.weights_crc()
        return bf16_crcs(self.engine.model.named_parameters())

    def vllm_weight_transfer(self, op: str, arg=None):
        """sync.transport: vllm: one step of vLLM's weight-transfer protocol (init, start, update, finish,
        num_workers, shutdown), driven by the learner's `rollout.vllm_transfer.EngineActorClient`."""
        return self.engine.weight_transfer(op, arg)

    def default_sync_backend(self) -> str:
        return default_backend()

    def _realloc_into(self) -> dict:
        """The reshard writes straight into the live weights (hf engines; vllm keeps its own layout)."""
        model = getattr(self.engine, "model", None)
        if not getattr(self.engine, "partial_updates", False) or model is None:
            raise RuntimeError(f"sync.transport: reshard needs an engine whose weights it can write in place (hf); "
                               f"{type(self.engine).__name__} takes object_store or broadcast")
        return {n: (tuple(p.shape), tuple((0, k) for k in p.shape), p.data) for n, p in model.named_parameters()}

    def _realloc_received(self, version: int) -> None:
        self.receiver.reset()  # the engine now holds weights the delta receiver never saw
        self.engine.weight_version = version

    def is_sleeping(self) -> bool:
        return bool(getattr(self.engine, "is_sleeping", lambda: False)())

    def sleep(self) -> None:
        self.engine.sleep()

    def wake(self) -> None:
        self.engine.wake()


RolloutWorker = ray.remote(num_cpus=0.5, max_restarts=1, max_task_retries=1)(EngineWorker)


def _reconstructed() -> bool:
    """Whether Ray restarted this actor process (its own property reads a deprecated id: silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return ray.get_runtime_context().was_current_actor_reconstructed


