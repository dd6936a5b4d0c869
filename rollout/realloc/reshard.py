"""Reshard weights between two layouts over one torch.distributed group (ReaLHF §4, Mei et al. 2024).

`plan_reshard` (pure) decides, for every parameter and destination rank, which source rank sends
each piece: the destination box is cut by the distinct source boxes; a piece the destination
already holds is copied locally, otherwise exactly ONE holder sends it — the holder with the fewest
bytes assigned so far (ties: lowest rank), so replicas share the load.
`execute_reshard` runs a plan on one rank: all pieces for one peer travel as one flat buffer
(isend/irecv, gloo on CPU or NCCL on GPU), the old layout's shards are dropped by the caller.

Example: plan = plan_reshard(shapes, spec, Layout(dp=2, zero=True), Layout(tp=2), world_size=2)
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

import torch

from rollout.realloc.layout import Box, Layout, ModelSpec, box_numel, intersect, param_box, to_slices


@dataclass(frozen=True)
class Piece:
    """`box` (global coordinates) of parameter `name` goes from rank `src` to rank `dst`."""
    name: str
    box: Box
    src: int
    dst: int


def layout_boxes(shapes: dict[str, tuple[int, ...]], spec: ModelSpec, layout: Layout,
                 rank: int) -> dict[str, Box]:
    """Every parameter box `rank` holds (ranks beyond the layout's world hold nothing)."""
    if rank >= layout.world_size:
        return {}
    out = {}
    for name, shape in shapes.items():
        box = param_box(name, shape, spec, layout, rank)
        if box is not None:
            out[name] = box
    return out


def plan_reshard(shapes: dict[str, tuple[int, ...]], spec: ModelSpec, src: Layout, dst: Layout,
                 world_size: int, bytes_per_elem: int = 4) -> list[Piece]:
    """Pieces that turn the `src` layout into the `dst` layout; deterministic.

    Each needed box is tiled exactly by the pieces assigned to it (checked: a layout whose
    boxes do not cover the full parameter raises ValueError).
    """
    if max(src.world_size, dst.world_size) > world_size:
        raise ValueError(f"layouts {src} / {dst} need more than {world_size} ranks")
    sent_bytes = [0] * world_size
    pieces: list[Piece] = []
    src_all = [layout_boxes(shapes, spec, src, r) for r in range(world_size)]
    dst_all = [layout_boxes(shapes, spec, dst, r) for r in range(world_size)]
    for name in shapes:
        holders: dict[Box, list[int]] = defaultdict(list)
        for r in range(world_size):
            if name in src_all[r]:
                holders[src_all[r][name]].append(r)
        for r in range(world_size):
            need = dst_all[r].get(name)
            if need is None:
                continue
            covered = 0
            for box, ranks in holders.items():
                part = intersect(box, need)
                if part is None:
                    continue
                numel = box_numel(part)
                covered += numel
                if r in ranks:
                    sender = r
                else:
                    sender = min(ranks, key=lambda h: (sent_bytes[h], h))
                    sent_bytes[sender] += numel * bytes_per_elem
                pieces.append(Piece(name, part, sender, r))
            if covered != box_numel(need):
                raise ValueError(f"{name}: source layout {src} covers {covered} of "
                                 f"{box_numel(need)} elements rank {r} needs")
    return pieces


def moved_bytes(pieces: list[Piece], bytes_per_elem: int = 4) -> int:
    """Bytes that cross process boundaries (local copies are free)."""
    return sum(box_numel(p.box) * bytes_per_elem for p in pieces if p.src != p.dst)


def execute_reshard(pieces: list[Piece], rank: int, src_shards: dict[str, tuple[Box, torch.Tensor]],
                    dst_boxes: dict[str, Box], group=None) -> tuple[dict[str, tuple[Box, torch.Tensor]], dict]:
    """Run `pieces` on this rank: returns (new shards name -> (box, tensor), stats).

    One flat buffer per peer and direction; all sends/receives are posted before any wait, so
    no ordering between ranks can deadlock. stats: bytes_sent, bytes_received, seconds.
    """
    import torch.distributed as dist

    start = time.perf_counter()
    dtypes = {t.dtype for _, t in src_shards.values()}
    if len(dtypes) > 1:
        raise ValueError(f"reshard expects one dtype, got {sorted(map(str, dtypes))}")
    dtype = dtypes.pop() if dtypes else torch.float32
    out = {name: (box, torch.empty([hi - lo for lo, hi in box], dtype=dtype))
           for name, box in dst_boxes.items()}
    outgoing: dict[int, list[Piece]] = defaultdict(list)
    incoming: dict[int, list[Piece]] = defaultdict(list)
    for p in pieces:
        if p.src == rank and p.dst == rank:
            sbox, sten = src_shards[p.name]
            dbox, dten = out[p.name]
            dten[to_slices(p.box, dbox)] = sten[to_slices(p.box, sbox)]
        elif p.src == rank:
            outgoing[p.dst].append(p)
        elif p.dst == rank:
            incoming[p.src].append(p)
    works, keep = [], []
    for peer in sorted(outgoing):
        parts = []
        for p in outgoing[peer]:
            sbox, sten = src_shards[p.name]
            parts.append(sten[to_slices(p.box, sbox)].reshape(-1))
        flat = torch.cat(parts).contiguous()
        keep.append(flat)
        works.append(dist.isend(flat, dst=peer, group=group))
    recv_bufs = {}
    for peer in sorted(incoming):
        total = sum(box_numel(p.box) for p in incoming[peer])
        recv_bufs[peer] = torch.empty(total, dtype=dtype)
        works.append(dist.irecv(recv_bufs[peer], src=peer, group=group))
    for w in works:
        w.wait()
    for peer, buf in recv_bufs.items():
        offset = 0
        for p in incoming[peer]:
            n = box_numel(p.box)
            dbox, dten = out[p.name]
            shape = [hi - lo for lo, hi in p.box]
            dten[to_slices(p.box, dbox)] = buf[offset:offset + n].view(shape)
            offset += n
    item = torch.empty((), dtype=dtype).element_size()
    stats = {"bytes_sent": sum(f.numel() for f in keep) * item,
             "bytes_received": sum(b.numel() for b in recv_bufs.values()) * item,
             "seconds": time.perf_counter() - start}
    return out, stats


def shard_state_dict(state: dict[str, torch.Tensor], spec: ModelSpec, layout: Layout,
                     rank: int) -> dict[str, tuple[Box, torch.Tensor]]:
    """Cut a full state dict down to what `rank` holds in `layout` (copies, not views)."""
    shapes = {n: tuple(t.shape) for n, t in state.items()}
    return {name: (box, state[name][to_slices(box)].clone())
            for name, box in layout_boxes(shapes, spec, layout, rank).items()}
