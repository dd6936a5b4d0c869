"""Reshard weights between two layouts over one torch.distributed group (ReaLHF §4, Mei et al. 2024).

`plan_reshard` (pure) decides, for every parameter and destination rank, which source rank sends
each piece: the destination box is cut by the distinct source boxes; a piece the destination
already holds is copied locally, otherwise exactly ONE holder sends it — the holder with the fewest
bytes assigned so far (ties: lowest rank), so replicas share the load.
`plan_pieces` is the same decision for any boxes (e.g. the FSDP2 shards a learner rank really
holds -> the full tensors each hf engine replica serves).
`execute_reshard` runs a plan on one rank: all pieces for one peer travel as one flat buffer
(isend/irecv, gloo on CPU or NCCL on GPU), the old layout's shards are dropped by the caller.
`exchange_pieces` runs one in place, a message per piece, from and into the live tensors (the
training loop's reallocation: no flat buffers, nothing gathered).

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
    """Pieces that turn the `src` layout into the `dst` layout over `world_size` ranks; deterministic."""
    if max(src.world_size, dst.world_size) > world_size:
        raise ValueError(f"layouts {src} / {dst} need more than {world_size} ranks")
    return plan_pieces(shapes, [layout_boxes(shapes, spec, src, r) for r in range(world_size)],
                       [layout_boxes(shapes, spec, dst, r) for r in range(world_size)], bytes_per_elem,
                       what=f"source layout {src}")


def plan_pieces(shapes: dict[str, tuple[int, ...]], src_all: list[dict[str, Box]], dst_all: list[dict[str, Box]],
                bytes_per_elem: int = 4, what: str = "the source ranks") -> list[Piece]:
    """Pieces that give every rank r the boxes dst_all[r] from the ranks holding src_all[...]
    (rank r of the plan is index r of both lists; pad with {} for ranks that hold or need nothing).

    Each needed box is tiled exactly by its pieces (a source that does not cover it raises
    ValueError); a piece the rank already holds is a local copy, otherwise exactly one holder sends
    it: the one with the fewest bytes assigned so far (ties: lowest rank), so replicas share the load.
    """
    world_size = max(len(src_all), len(dst_all))
    src_all = list(src_all) + [{}] * (world_size - len(src_all))
    dst_all = list(dst_all) + [{}] * (world_size - len(dst_all))
    sent_bytes = [0] * world_size
    pieces: list[Piece] = []
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
                raise ValueError(f"{name}: {what} covers {covered} of {box_numel(need)} elements rank {r} needs")
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


def exchange_pieces(pieces: list[tuple[int, Piece]], rank: int, held: dict[str, tuple[Box, torch.Tensor]],
                    into: dict[str, tuple[Box, torch.Tensor]], comm) -> dict:
    """Run this rank's part of a plan in place, one message per piece (tag = the piece's index in the
    plan, so both ends agree without ordering): send the view of `held[name]` a piece covers, receive
    straight into the view of `into[name]` (a contiguous view of the same dtype, which is what FSDP2
    row shards and full tensors give; otherwise through a temporary). No flat buffers: a rank never
    holds more than its own tensors plus one temporary piece. comm: isend/irecv(tensor, peer, tag) -> work.
    -> stats: bytes_sent, bytes_received, messages, seconds.
    """
    start, works, copies, sent, received = time.perf_counter(), [], [], 0, 0
    for tag, p in pieces:
        if p.src == rank and p.dst == rank:
            (sbox, sten), (dbox, dten) = held[p.name], into[p.name]
            dten[to_slices(p.box, dbox)].copy_(sten[to_slices(p.box, sbox)])
        elif p.src == rank:
            sbox, sten = held[p.name]
            view = sten[to_slices(p.box, sbox)]
            view = view if view.is_contiguous() else view.contiguous()
            works.append(comm.isend(view, p.dst, tag))
            sent += view.numel() * view.element_size()
        elif p.dst == rank:
            dbox, dten = into[p.name]
            view = dten[to_slices(p.box, dbox)]
            if view.is_contiguous():
                works.append(comm.irecv(view, p.src, tag))
            else:
                tmp = torch.empty(view.shape, dtype=view.dtype, device=view.device)
                works.append(comm.irecv(tmp, p.src, tag))
                copies.append((view, tmp))
            received += view.numel() * view.element_size()
    for w in works:
        w.wait()
    for view, tmp in copies:
        view.copy_(tmp)
    return {"bytes_sent": sent, "bytes_received": received, "messages": len(works),
            "seconds": time.perf_counter() - start}
