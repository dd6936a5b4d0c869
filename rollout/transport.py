"""How a weight-sync payload travels from the learner actor to the engine actors.

sync.transport:
- "object_store": the learner puts the payload once in Ray's object store; engines on its node read
  it zero-copy from shared memory (the colocated path), engines on other nodes pull it over Ray.
- "broadcast": a torch.distributed group of the sync's own (gloo on CPU, NCCL on GPU) with the
  learner as rank 0 and the engines as ranks 1..N. Per sync, the payload's skeleton (names, shapes,
  encodings, array sizes: a few KB) goes through Ray and its bytes through ONE broadcast of one flat
  uint8 buffer. The group is built from a TCPStore and a ProcessGroupGloo/NCCL object directly, not
  init_process_group, so it never collides with the default group an engine (vLLM) makes for itself.

The payload is any tree of dataclasses and lists (list[WeightBucket] for a full sync, a DeltaUpdate
for a delta); `flatten_payload` swaps every numpy array for an `ArraySlot` and concatenates the bytes,
`rebuild_payload` inverts it exactly (bit-for-bit: the receiver's CRC checks still run on the result).

Example (what rl.workers.weight_sync drives through the actors):
    store, host, port = SyncGroup.listen(world_size=3)                     # rank 0, first
    g = SyncGroup.join("", 0, 0, 3, "gloo", store=store)                   # rank 0 } at the
    g = SyncGroup.join(host, port, rank, 3, "gloo")                        # 1, 2   } same time
    skeleton, flat = flatten_payload(payload); g.broadcast(flat, flat.nbytes)        # rank 0
    payload = rebuild_payload(skeleton, g.broadcast(None, payload_nbytes(skeleton)))  # ranks 1, 2
"""
from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class ArraySlot:
    """Where one numpy array lives in the flat buffer."""
    offset: int
    nbytes: int
    dtype: str
    shape: tuple[int, ...]


def map_leaves(tree: Any, leaf_type: type, fn) -> Any:
    """`tree` (lists and dataclasses, nested) with every `leaf_type` value x replaced by fn(x)."""
    if isinstance(tree, leaf_type):
        return fn(tree)
    if isinstance(tree, list):
        return [map_leaves(v, leaf_type, fn) for v in tree]
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        return dataclasses.replace(tree, **{f.name: map_leaves(getattr(tree, f.name), leaf_type, fn)
                                            for f in dataclasses.fields(tree) if f.init})
    return tree


def flatten_payload(payload: Any) -> tuple[Any, np.ndarray]:
    """-> (skeleton: the payload with every ndarray replaced by an ArraySlot, flat uint8 buffer)."""
    chunks: list[np.ndarray] = []
    end = [0]  # bytes placed so far

    def slot(x: np.ndarray) -> ArraySlot:
        a = np.ascontiguousarray(x)
        chunks.append(a.reshape(-1).view(np.uint8))
        end[0] += a.nbytes
        return ArraySlot(end[0] - a.nbytes, a.nbytes, a.dtype.str, tuple(a.shape))

    skeleton = map_leaves(payload, np.ndarray, slot)
    return skeleton, (np.concatenate(chunks) if chunks else np.zeros(0, np.uint8))


def payload_nbytes(skeleton: Any) -> int:
    """Size of the flat buffer a skeleton describes."""
    ends = [0]
    map_leaves(skeleton, ArraySlot, lambda s: ends.append(s.offset + s.nbytes))
    return max(ends)


def rebuild_payload(skeleton: Any, flat: np.ndarray) -> Any:
    """Inverse of flatten_payload; arrays are copies (the buffer can be reused)."""
    return map_leaves(skeleton, ArraySlot, lambda s: flat[s.offset:s.offset + s.nbytes]
                      .view(np.dtype(s.dtype)).reshape(s.shape).copy())


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


class SyncGroup:
    """One process group for weight sync, independent of any default torch.distributed group.

    Rank 0 calls `listen` first (it owns the TCPStore), then every rank calls `join` concurrently
    (construction is a rendezvous: it returns once all `world_size` ranks are in).
    """

    def __init__(self, store, rank: int, world_size: int, backend: str, timeout_s: float):
        import torch.distributed as dist
        timeout = datetime.timedelta(seconds=timeout_s)
        prefixed = dist.PrefixStore("rl-weight-sync", store)
        if backend == "gloo":
            self.pg = dist.ProcessGroupGloo(prefixed, rank, world_size, timeout)
        elif backend == "nccl":
            opts = dist.ProcessGroupNCCL.Options()
            opts._timeout = timeout
            self.pg = dist.ProcessGroupNCCL(prefixed, rank, world_size, opts)
        else:
            raise ValueError(f"sync.backend must be gloo, nccl or auto, got {backend!r}")
        self.store, self.rank, self.world_size, self.backend = store, rank, world_size, backend
        self.device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")

    @staticmethod
    def listen(world_size: int, timeout_s: float = 300.0):
        """Rank 0: open the rendezvous store on a free port. -> (store, host, port)."""
        import ray
        import torch.distributed as dist
        store = dist.TCPStore("0.0.0.0", 0, world_size, True, timeout=datetime.timedelta(seconds=timeout_s),
                              wait_for_workers=False)
        return store, ray.util.get_node_ip_address(), store.port

    @classmethod
    def join(cls, host: str, port: int, rank: int, world_size: int, backend: str,
             timeout_s: float = 300.0, store=None) -> "SyncGroup":
        import torch.distributed as dist
        if store is None:
            store = dist.TCPStore(host, port, world_size, False, timeout=datetime.timedelta(seconds=timeout_s))
        return cls(store, rank, world_size, backend, timeout_s)

    def broadcast(self, flat: np.ndarray | None, nbytes: int) -> np.ndarray:
        """Rank 0 passes the buffer; others pass None and get the bytes back."""
        import torch.distributed as dist
        if self.rank == 0:
            t = torch.from_numpy(flat).to(self.device)
        else:
            t = torch.empty(nbytes, dtype=torch.uint8, device=self.device)
        opts = dist.BroadcastOptions()
        opts.rootRank = 0
        self.pg.broadcast([t], opts).wait()
        return t.cpu().numpy() if self.rank else flat

    def isend(self, tensor: torch.Tensor, peer: int, tag: int):
        """Point to point (rollout.realloc.reshard.exchange_pieces): -> a work to wait on."""
        return self.pg.send([tensor], peer, tag)

    def irecv(self, tensor: torch.Tensor, peer: int, tag: int):
        return self.pg.recv([tensor], peer, tag)

    def close(self) -> None:
        self.pg = None
        self.store = None
