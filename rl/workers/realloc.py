"""Parameter reallocation between the training and the generation layout, in the training loop
(`sync.transport: reshard`), and the standalone reshard workers of `rl bench plan` and the tests.

In the loop (Reallocation): the learner ranks (FSDP2: each holds rows [r*c, (r+1)*c) of every
parameter, c = ceil(rows / N); DDP or one learner: everything) and the engines (hf replicas: each
needs every parameter whole) join ONE torch.distributed group of their own (gloo on CPU, NCCL on
GPUs; learners are ranks 0..N-1, engines N..N+M-1). Each side reports the boxes it holds or needs,
`rollout.realloc.reshard.plan_pieces` assigns every needed piece to exactly one holder (replicas
share the load), and every rank runs its part in place (`exchange_pieces`): a learner sends views
of its own shards, an engine receives straight into its live weights. No rank gathers the model;
the plan is built once and reused while the group's members stay the same. Then the usual check:
every engine's served version and weights checksum against the learners' (rl/workers/weight_sync.py).

Standalone (ReshardWorker): actors that hold one rank's shards of a layout and reshard them to
another over a gloo group through a TCP store on 127.0.0.1.

Example:
    workers = start_reshard_workers("tiny-llama", Layout(dp=2, zero=True), world_size=2)
    stats = ray.get([w.reshard.remote(Layout(tp=2)) for w in workers])
"""
from __future__ import annotations

import socket
import time

import ray
import torch

from rollout.realloc.layout import Layout, ModelSpec, fsdp_box
from rollout.realloc.reshard import (Piece, exchange_pieces, execute_reshard, layout_boxes, plan_pieces, plan_reshard,
                                     shard_state_dict)
from rl.workers.weight_sync import engine_label, get_within, verify
from rollout.transport import SyncGroup


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def full_params(model) -> dict[str, torch.Tensor]:
    """Unique parameters by name (a tied lm_head appears once, as the embedding)."""
    return {n: p.detach() for n, p in model.named_parameters()}


@ray.remote(num_cpus=0)
class ReshardWorker:
    """One rank: builds the model, keeps only its shards of `layout`, reshards on request."""

    def __init__(self, rank: int, world_size: int, port: int):
        import torch.distributed as dist

        torch.set_num_threads(1)
        self.rank, self.world_size = rank, world_size
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world_size)
        self.shards, self.layout, self.spec, self.shapes = {}, None, None, {}

    def load(self, model_name: str, layout: Layout, seed: int = 0) -> int:
        """Build the model here (seeded: every rank builds the same weights), keep our shards."""
        from rl.workers.models import load_model

        model = load_model(model_name, seed=seed)
        n = self.load_params(full_params(model), ModelSpec.from_hf_config(model.config), layout)
        del model
        return n

    def load_params(self, params: dict, spec: ModelSpec, layout: Layout) -> int:
        """Keep our shards of a full parameter dict (e.g. one put once in the object store)."""
        self.spec = spec
        self.shapes = {n: tuple(t.shape) for n, t in params.items()}
        self.shards = shard_state_dict(params, self.spec, layout, self.rank)
        self.layout = layout
        return sum(t.numel() for _, t in self.shards.values())

    def reshard(self, dst: Layout) -> dict:
        pieces = plan_reshard(self.shapes, self.spec, self.layout, dst, self.world_size)
        dst_boxes = layout_boxes(self.shapes, self.spec, dst, self.rank)
        self.shards, stats = execute_reshard(pieces, self.rank, self.shards, dst_boxes)
        self.layout = dst
        stats["rank"] = self.rank
        return stats

    def get_shards(self) -> dict:
        return self.shards

    def close(self) -> None:
        import torch.distributed as dist
        dist.destroy_process_group()


def start_reshard_workers(model_name: str, layout: Layout, world_size: int,
                          params: dict | None = None, spec: ModelSpec | None = None) -> list:
    """world_size actors in one gloo group holding `layout`; with `params` (+ `spec`) the full
    weights come once through the object store instead of being rebuilt on every rank."""
    port = free_port()
    workers = [ReshardWorker.remote(r, world_size, port) for r in range(world_size)]
    if params is None:
        ray.get([w.load.remote(model_name, layout) for w in workers])
    else:
        ref = ray.put(params)
        ray.get([w.load_params.remote(ref, spec, layout) for w in workers])
    return workers


# -- in the training loop -------------------------------------------------------------------------

def held_boxes(named_params, world_size: int = 1, rank: int = 0) -> dict[str, tuple]:
    """name -> (full shape, box, tensor) of what a learner rank holds: a DTensor (FSDP2 Shard(0)) its
    local rows, anything else the whole tensor. FSDP2's chunking is checked against the local shape."""
    from torch.distributed.tensor import DTensor
    out = {}
    for name, p in named_params:
        shape = tuple(p.shape)
        if isinstance(p, DTensor):
            local = p.detach().to_local()
            box = fsdp_box(shape, world_size, rank)
            rows = 0 if box is None else box[0][1] - box[0][0]
            if local.shape[0] != rows:
                raise RuntimeError(f"{name}: rank {rank} holds {local.shape[0]} rows, FSDP2 chunking says {rows}")
            if box is not None:
                out[name] = (shape, box, local)
        else:
            out[name] = (shape, tuple((0, n) for n in shape), p.detach())
    return out


class ReallocPeer:
    """Either end of the in-loop reallocation (mixed into the learners and the engine worker):
    `_realloc_held()` -> what this rank sends from, `_realloc_into()` -> what it receives into,
    both name -> (full shape, box, tensor)."""

    _realloc_group: SyncGroup | None = None
    _realloc_store = None
    _realloc_token: str | None = None

    def open_realloc_group(self, world_size: int, timeout_s: float) -> tuple[str, int]:
        """Rank 0 (learner rank 0), before everyone joins: own the rendezvous store. -> (host, port)."""
        self._realloc_store, host, port = SyncGroup.listen(world_size, timeout_s)
        return host, port

    def join_realloc_group(self, host: str, port: int, rank: int, world_size: int, backend: str,
                           timeout_s: float, token: str) -> int:
        store = self._realloc_store if rank == 0 else None
        self._realloc_group = SyncGroup.join(host, port, rank, world_size, backend, timeout_s, store=store)
        self._realloc_token = token
        return rank

    def realloc_token(self) -> str | None:
        """The id of the group this actor is in (None after a restart): the driver rebuilds on a mismatch."""
        return self._realloc_token

    def realloc_boxes(self) -> tuple[dict, dict, str]:
        """-> (held name -> (shape, box), needed name -> (shape, box), dtype of what it sends)."""
        held, into = self._realloc_held(), self._realloc_into()
        dtypes = {str(t.dtype) for _, _, t in held.values()}
        return ({n: (s, b) for n, (s, b, _) in held.items()}, {n: (s, b) for n, (s, b, _) in into.items()},
                dtypes.pop() if len(dtypes) == 1 else "")

    def realloc_exchange(self, pieces: list, version: int | None = None, gather: bool = False) -> dict:
        """Run this rank's pieces of the plan (all ranks at once). -> stats incl. this rank's peak memory
        (before_mb: resident at the start; peak_mb: the high-water mark during the exchange). gather: the
        learner ranks first gather every full tensor on rank 0 (the anchor of `rl bench realloc`)."""
        from rl.workers.devices import actor_device, peak_memory_mb
        if self._realloc_group is None:
            raise RuntimeError("this actor is in no reallocation group (restarted?); the driver rebuilds it")
        device = getattr(self, "device", None) or actor_device()
        peak_memory_mb(device, reset=True)
        before = peak_memory_mb(device)  # right after a reset: what is resident now
        held = {n: (b, t) for n, (_, b, t) in (self._realloc_gathered() if gather else self._realloc_held()).items()}
        into = {n: (b, t) for n, (_, b, t) in self._realloc_into().items()}
        with torch.no_grad():
            stats = exchange_pieces(pieces, self._realloc_group.rank, held, into, self._realloc_group)
        if version is not None:
            self._realloc_received(version)
        return {**stats, "before_mb": before, "peak_mb": peak_memory_mb(device)}

    def _realloc_held(self) -> dict:
        return {}

    def _realloc_into(self) -> dict:
        return {}

    def _realloc_gathered(self) -> dict:
        return self._realloc_held()

    def _realloc_received(self, version: int) -> None:
        pass


class Reallocation:
    """The driver's side: builds the group and the plan once per set of members, then runs the plan on
    every rank for each version. -> metrics realloc/bytes (total), realloc/bytes_engine{j} (per receiving
    rank), realloc/bytes_sent_max (the busiest learner rank), realloc/messages, realloc/s."""

    def __init__(self, backend: str = "auto"):
        self.backend, self.token, self.parts = backend, None, []

    def run(self, learners: list, engines: list, version: int, timeout_s: float) -> dict[str, float]:
        t0, n = time.time(), len(learners)
        stats = self.exchange(learners, engines, version, timeout_s)
        received = [s["bytes_received"] for s in stats[n:]]
        return {"realloc/bytes": float(sum(received)),
                **{f"realloc/bytes_engine{j}": float(b) for j, b in enumerate(received)},
                "realloc/bytes_sent_max": float(max(s["bytes_sent"] for s in stats[:n])),
                "realloc/messages": float(sum(s["messages"] for s in stats[n:])), "realloc/s": time.time() - t0,
                "realloc/peak_mb_max": float(max(s["peak_mb"] for s in stats))}

    def exchange(self, learners: list, engines: list, version: int, timeout_s: float,
                 gather_first: bool = False) -> list[dict]:
        """One reallocation; -> every rank's stats (learners first). gather_first: the anchor of `rl bench
        realloc` instead of the plan: the learner ranks gather every full tensor on rank 0, which sends
        each to every engine."""
        actors = [*learners, *engines]
        labels = [f"learner rank {r}" for r in range(len(learners))] + \
            [engine_label(i, e) for i, e in enumerate(engines)]
        token = "-".join(a._actor_id.hex()[:8] for a in actors)
        if self.token != token or get_within([a.realloc_token.remote() for a in actors], labels, timeout_s,
                                             "report its reallocation group") != [token] * len(actors):
            self._setup(actors, labels, token, timeout_s)
        n, parts = len(learners), self.gather_parts(len(learners), len(engines)) if gather_first else self.parts
        refs = [a.realloc_exchange.remote(parts[r], version if r >= n else None, gather_first and r < n)
                for r, a in enumerate(actors)]
        try:
            return get_within(refs, labels, timeout_s, f"finish the reallocation of version {version}")
        except BaseException:
            self.token = None  # rebuilt next time
            raise

    def gather_parts(self, n_learners: int, n_engines: int) -> list[list]:
        """Gather-on-rank-0-then-send: every full tensor from learner rank 0 to every engine."""
        pieces = [Piece(name, tuple((0, k) for k in shape), 0, n_learners + j)
                  for name, shape in self.shapes.items() for j in range(n_engines)]
        return [[(i, p) for i, p in enumerate(pieces) if r in (p.src, p.dst)] for r in range(n_learners + n_engines)]

    def _setup(self, actors: list, labels: list[str], token: str, timeout_s: float) -> None:
        self.token = None
        backend = self.backend if self.backend != "auto" else ray.get(actors[0].default_sync_backend.remote())
        world = len(actors)
        host, port = get_within([actors[0].open_realloc_group.remote(world, timeout_s)], labels[:1], timeout_s,
                                "open the reallocation group")[0]
        get_within([a.join_realloc_group.remote(host, port, r, world, backend, timeout_s, token)
                    for r, a in enumerate(actors)], labels, timeout_s + 30.0, "join the reallocation group")
        boxes = get_within([a.realloc_boxes.remote() for a in actors], labels, timeout_s, "report its boxes")
        shapes = {n: s for held, _, _ in boxes for n, (s, _) in held.items()}
        for r, (_, need, _) in enumerate(boxes):
            wrong = [n for n, (s, _) in need.items() if shapes.get(n) != s]
            if wrong:
                raise RuntimeError(f"reallocation: {labels[r]} needs {wrong[0]!r} {need[wrong[0]][0]}, the learners "
                                   f"hold {shapes.get(wrong[0])} ({len(wrong)} such parameters)")
        item = torch.empty((), dtype=getattr(torch, boxes[0][2].removeprefix("torch.") or "float32")).element_size()
        pieces = plan_pieces(shapes, [{n: b for n, (_, b) in held.items()} for held, _, _ in boxes],
                             [{n: b for n, (_, b) in need.items()} for _, need, _ in boxes], item,
                             what="the learner ranks")
        self.parts = [[(i, p) for i, p in enumerate(pieces) if r in (p.src, p.dst)] for r in range(world)]
        self.token, self.shapes = token, shapes


def reshard_sync(realloc: Reallocation, learners: list, engines: list, version: int, sync, full_sync,
                 checksum) -> dict[str, float]:
    """`sync.transport: reshard`: reallocate, then verify (version + checksum of every engine). A
    reallocation that fails (an actor restarted or left the group) falls back to full_sync(engine
    indices) for this version (sync/recovered) and the group is rebuilt for the next one.
    checksum(dtype) -> the learners' weights checksum."""
    t0, recovered, stats = time.time(), 0, {}
    try:
        stats = realloc.run(learners, engines, version, float(sync.timeout_s))
    except (ray.exceptions.RayError, RuntimeError):
        realloc.token = None
        full_sync(list(range(len(engines))))
        recovered = 1
    verified = verify(engines, version, checksum, full_sync, sync)
    out = {"sync/bytes": stats.get("realloc/bytes", 0.0), "sync/density": 1.0, "sync/mode": 0.0, "sync/full": 1.0,
           "sync/transport": 2.0, **stats, **verified, "time/sync_s": time.time() - t0}
    if recovered:
        out["sync/recovered"] = 1.0
    return out
