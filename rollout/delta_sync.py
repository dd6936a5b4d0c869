"""bf16 delta weight sync (SPECS §9): ship only the bf16 weights whose bits changed.

At RL learning rates most updates are smaller than half a bf16 ulp (|dw| < |w|/256), so ~99% of
the bf16 weights are bit-identical between consecutive steps. The sender keeps the last-shipped bf16
copy of every bucket; per bucket it sends the positions whose 16 bits changed (int32 indices, a
bitmask, or byte-coded gaps between changed positions, whichever is smallest) and their new bits.
The receiver keeps the same copy, OVERWRITES those positions (never adds, so errors cannot
accumulate), checks the additive checksum of the resulting bf16 bucket (in O(changes): it updates
the base's sum) and hands dense bf16 buckets to its engine. Encoding and decoding are vectorised
torch ops on int16 bits; numpy appears only as zero-copy views at the Ray boundary.
A bucket denser than `dense_threshold` is shipped whole; a full (all-dense) sync happens on the
first call, every `full_every_steps` calls, and on request.

Engines therefore run on the learner's weights rounded to bf16, whatever their own dtype (an fp32
engine holds bf16-representable values).

Example:
    sender, receiver = DeltaSender(), DeltaReceiver()
    update = sender.encode(model.named_parameters(), 32 << 20, version=1)
    buckets = receiver.apply(update)          # list[WeightBucket], bf16, checksummed
    engine.update_weights(buckets, version=1)
"""
from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

from rollout import delta_kernels
from rollout.weight_sync import CHECKSUM_MOD, WeightBucket, weights_checksum

DENSE, INDICES, BITMASK, GAPS = "dense", "indices", "bitmask", "gaps"
_ESC = 255  # a gap byte of 255 means "add 255 and read on"; 0..254 ends the gap


class DeltaSyncError(RuntimeError):
    """A delta cannot be applied: wrong base version, layout change, or checksum mismatch."""


@dataclass
class DeltaBucket:
    """One bucket of a delta update.

    numel: elements in the bucket (bf16); values: int16 bits of the new bf16 values, [num_changed]
    (or [numel] when dense); indices: int32 positions [num_changed] (encoding "indices");
    mask: np.packbits of the changed positions, [ceil(numel / 8)] uint8 (encoding "bitmask");
    checksum: `weights_checksum` of the whole resulting bf16 bucket.
    """
    names: list[str]
    shapes: list[tuple[int, ...]]
    offsets: list[int]
    numel: int
    encoding: str
    values: np.ndarray
    checksum: int
    indices: np.ndarray | None = None
    mask: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in (self.values, self.indices, self.mask) if a is not None))

    @property
    def num_changed(self) -> int:
        return self.numel if self.encoding == DENSE else int(self.values.size)


@dataclass
class DeltaUpdate:
    """base_version: the version the receiver must hold (None: a full sync, applies to anything)."""
    base_version: int | None
    version: int
    buckets: list[DeltaBucket]

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.buckets)

    @property
    def is_full(self) -> bool:
        return self.base_version is None

    def density(self) -> float:
        """Share of bf16 elements whose bits changed (1.0 for a full sync)."""
        if self.is_full:
            return 1.0
        total = sum(b.numel for b in self.buckets)
        return sum(b.num_changed for b in self.buckets) / max(total, 1)


def _t(x) -> torch.Tensor:
    """A torch view of a numpy array (object-store arrays are read-only: only read, never written)."""
    if isinstance(x, torch.Tensor):
        return x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.asarray(x))


def encode_bucket(new, old, dense_threshold: float) -> tuple[str, dict]:
    """Smallest encoding of `new` (int16 bf16 bits, [numel]) against `old` (same shape, or None).

    Vectorised torch ops throughout (compare, nonzero, gathers, bit packing); the arrays returned are
    numpy views (what Ray ships zero-copy). Returns (encoding, arrays) with arrays among
    values/indices/mask. Per change the values cost 2 bytes, plus 4 (indices), ~1 at densities
    above 0.4% (gaps), or numel/8 in all (bitmask); dense costs 2 * numel.
    Example: encode_bucket(np.int16([1, 2, 3]), np.int16([1, 9, 3]), 0.4) -> ("gaps", ...)
    """
    new = _t(new)
    if old is None or _t(old).shape != new.shape:
        return DENSE, {"values": new.clone().numpy()}
    changed = new != _t(old)
    idx = torch.nonzero(changed).squeeze(1)
    k = int(idx.numel())
    if k > dense_threshold * new.numel():
        return DENSE, {"values": new.clone().numpy()}
    return sparse_encoding(idx, new[idx], new.numel())


def sparse_encoding(idx: torch.Tensor, values: torch.Tensor, numel: int) -> tuple[str, dict]:
    """The smallest of indices / bitmask / gaps for the changed positions idx (int64, ascending) and
    their new bits, as numpy arrays."""
    k = int(idx.numel())
    gaps = torch.diff(idx, prepend=torch.tensor([-1]))
    sizes = {INDICES: 4 * k, BITMASK: (numel + 7) // 8, GAPS: int((gaps // _ESC).sum()) + k}
    best = min(sizes, key=sizes.get)
    values = values.numpy()
    if best == INDICES:
        return INDICES, {"indices": idx.to(torch.int32).numpy(), "values": values}
    if best == BITMASK:
        changed = torch.zeros(numel, dtype=torch.bool)
        changed[idx] = True
        return BITMASK, {"mask": pack_bits(changed).numpy(), "values": values}
    return GAPS, {"indices": encode_gaps(gaps).numpy(), "values": values}


_BIT_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """bool [n] -> uint8 [ceil(n / 8)], most significant bit first (np.packbits' layout)."""
    pad = (-mask.numel()) % 8
    m = torch.cat([mask, mask.new_zeros(pad)]) if pad else mask
    return (m.view(-1, 8).to(torch.uint8) * _BIT_WEIGHTS).sum(1, dtype=torch.uint8)


def unpack_bits(packed, count: int) -> torch.Tensor:
    """uint8 [ceil(count / 8)] -> bool [count] (inverse of pack_bits)."""
    bits = (_t(packed).unsqueeze(1) & _BIT_WEIGHTS) != 0
    return bits.view(-1)[:count]


def encode_gaps(gaps) -> torch.Tensor:
    """Gaps (>= 1) -> uint8 codes: gap // 255 escape bytes (255) then the remainder (0..254)."""
    gaps = _t(gaps).to(torch.int64)
    escapes = gaps // _ESC
    ends = torch.cumsum(escapes + 1, 0) - 1  # where each gap's final byte goes
    out = torch.full((int(ends[-1]) + 1 if len(ends) else 0,), _ESC, dtype=torch.uint8)
    out[ends] = (gaps % _ESC).to(torch.uint8)
    return out


def decode_gaps(codes) -> torch.Tensor:
    """uint8 codes -> positions: the running sum of byte values, read at each final byte, minus 1."""
    codes = _t(codes)
    running = torch.cumsum(codes.to(torch.int64), 0)
    return running[codes != _ESC] - 1


def changed_positions(bucket: DeltaBucket) -> torch.Tensor:
    """The positions a sparse bucket overwrites (int64 [num_changed]), checked against its values."""
    if bucket.encoding == INDICES:
        pos = _t(bucket.indices).to(torch.int64)
    elif bucket.encoding == GAPS:
        pos = decode_gaps(bucket.indices)
    elif bucket.encoding == BITMASK:
        pos = torch.nonzero(unpack_bits(bucket.mask, bucket.numel)).squeeze(1)
    else:
        raise DeltaSyncError(f"unknown delta encoding {bucket.encoding!r}")
    if pos.numel() != bucket.values.size or (pos.numel() and (int(pos.max()) >= bucket.numel or int(pos.min()) < 0)):
        raise DeltaSyncError(f"positions at {bucket.names[0]!r} do not match their {bucket.values.size} values")
    return pos


def decode_bucket(base, bucket: DeltaBucket) -> torch.Tensor:
    """The resulting int16 bucket: `base` with the changed positions OVERWRITTEN by bucket.values."""
    if bucket.encoding == DENSE:
        if bucket.values.size != bucket.numel:
            raise DeltaSyncError(f"dense bucket at {bucket.names[0]!r} has {bucket.values.size} values, "
                                 f"expected {bucket.numel}")
        return _t(bucket.values).clone()
    if base is None or _t(base).numel() != bucket.numel:
        raise DeltaSyncError(f"delta bucket at {bucket.names[0]!r} has no base of {bucket.numel} elements")
    out = _t(base).clone()
    out[changed_positions(bucket)] = _t(bucket.values)
    return out


def _bf16_bits(named: list[tuple[str, torch.Tensor]]) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).to(torch.bfloat16).cpu() for _, p in named]).view(torch.int16)


def bf16_layout(named_params: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int) -> list[list]:
    """The parameters grouped into buckets of at most bucket_bytes of bf16 (in order)."""
    groups, size = [[]], 0
    for name, p in named_params:
        nbytes = 2 * p.numel()
        if groups[-1] and size + nbytes > bucket_bytes:
            groups.append([])
            size = 0
        groups[-1].append((name, p))
        size += nbytes
    return groups if groups[-1] else []


def _kernel_ready(p: torch.Tensor) -> bool:
    return p.device.type == "cpu" and p.dtype in (torch.float32, torch.bfloat16) and p.is_contiguous()


def _encode_in_place(group: list, held: torch.Tensor, dense_threshold: float) -> tuple[str, dict]:
    """The numba path: one pass per parameter writes the changed positions and bits and updates
    `held` (the bucket's last-shipped bits) in place."""
    n = held.numel()
    positions, values = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int16)  # touched only as filled
    held_np, count, offset = held.numpy(), 0, 0
    for _, p in group:
        src = p.detach().reshape(-1)
        if src.dtype == torch.float32:
            count = delta_kernels.encode_f32(src.numpy().view(np.uint32), held_np, offset, positions, values, count)
        else:
            count = delta_kernels.encode_bits(src.view(torch.int16).numpy(), held_np, offset, positions, values, count)
        offset += src.numel()
    if count > dense_threshold * n:
        return DENSE, {"values": held_np.copy()}
    return sparse_encoding(torch.from_numpy(positions[:count]), torch.from_numpy(values[:count]), n)


class DeltaSender:
    """Lives with the learner's weights; remembers the bf16 bits it last shipped (torch int16 per bucket).

    full_every_steps: a full sync every K encodes (0: only the first one and on request).
    """

    def __init__(self, dense_threshold: float = 0.4, full_every_steps: int = 10):
        if not 0.0 <= dense_threshold <= 1.0:
            raise ValueError(f"dense_threshold must be in [0, 1], got {dense_threshold}")
        if full_every_steps < 0:
            raise ValueError(f"full_every_steps must be >= 0, got {full_every_steps}")
        self.dense_threshold, self.full_every_steps = dense_threshold, full_every_steps
        self.last: list[torch.Tensor] | None = None
        self.layout: list | None = None  # (names, shapes) per bucket
        self.last_version: int | None = None
        self.deltas_since_full = 0

    def encode(self, named_params: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int, version: int,
               force_full: bool = False) -> DeltaUpdate:
        groups = bf16_layout(named_params, bucket_bytes)
        layout = [([n for n, _ in g], [tuple(p.shape) for _, p in g]) for g in groups]
        full = (force_full or self.last is None or layout != self.layout
                or (self.full_every_steps > 0 and self.deltas_since_full + 1 >= self.full_every_steps))
        buckets, bits = [], []
        for i, (group, (names, shapes)) in enumerate(zip(groups, layout)):
            if not full and delta_kernels.AVAILABLE and all(_kernel_ready(p) for _, p in group):
                new = self.last[i]  # updated in place by the kernel: it becomes this version's bits
                encoding, arrays = _encode_in_place(group, new, self.dense_threshold)
            else:
                new = _bf16_bits(group)
                encoding, arrays = encode_bucket(new, None if full else self.last[i], 1.0 if full else self.dense_threshold)
            offsets = torch.cumsum(torch.tensor([0] + [p.numel() for _, p in group[:-1]]), 0).tolist()
            buckets.append(DeltaBucket(names=names, shapes=shapes, offsets=offsets, numel=new.numel(),
                                       encoding=encoding, checksum=weights_checksum([new]), **arrays))
            bits.append(new)
        update = DeltaUpdate(base_version=None if full else self.last_version, version=version, buckets=buckets)
        self.last, self.layout, self.last_version = bits, layout, version
        self.deltas_since_full = 0 if full else self.deltas_since_full + 1
        return update


class DeltaReceiver:
    """Lives with an engine; holds the bf16 bits (torch int16 per bucket) and their checksums the
    engine was last given. A sparse bucket is verified in O(changes) before anything is written:
    checksum(new) = checksum(base) - sum(base[positions]) + sum(values) (mod 2**64). That proves the
    payload and the base's changed positions; drift of the held bits elsewhere is caught by the
    end-to-end check of the engine's live weights (rl/workers/weight_sync.py)."""

    def __init__(self):
        self.flats: list[torch.Tensor] | None = None
        self.sums: list[int] | None = None
        self.version: int | None = None

    def reset(self) -> None:
        """Forget the base (e.g. the engine got weights another way); the next delta must be full."""
        self.flats, self.sums, self.version = None, None, None

    def apply(self, update: DeltaUpdate) -> list[WeightBucket]:
        """Verifies every bucket, then commits (in place); returns dense bf16 WeightBuckets (numpy views
        of the held bits, for the engine to copy from).

        Raises DeltaSyncError (and keeps the old state) on a base-version mismatch or a bad checksum.
        """
        if not update.is_full:
            if self.flats is None or self.version != update.base_version:
                raise DeltaSyncError(f"delta from version {update.base_version} cannot apply to "
                                     f"version {self.version}: a full sync is needed")
            if len(self.flats) != len(update.buckets):
                raise DeltaSyncError(f"delta has {len(update.buckets)} buckets, receiver holds {len(self.flats)}")
        staged = []
        for i, b in enumerate(update.buckets):
            if b.encoding == DENSE:
                flat = decode_bucket(None, b)
                got = weights_checksum([flat])
                staged.append((flat, None, None))
            else:
                base = self.flats[i] if self.flats is not None and i < len(self.flats) else None
                if base is None or base.numel() != b.numel:
                    raise DeltaSyncError(f"delta bucket at {b.names[0]!r} has no base of {b.numel} elements")
                pos, vals = changed_positions(b), _t(b.values)
                got = (self.sums[i] - weights_checksum([base[pos]]) + weights_checksum([vals])) % CHECKSUM_MOD
                staged.append((base, pos, vals))
            if got != b.checksum:
                raise DeltaSyncError(f"bucket {i} starting at {b.names[0]!r} failed its checksum "
                                     f"after applying version {update.version}")
        flats = []
        for flat, pos, vals in staged:
            if pos is not None:
                flat[pos] = vals  # overwrite, never add
            flats.append(flat)
        self.flats, self.sums, self.version = flats, [b.checksum for b in update.buckets], update.version
        return [WeightBucket(names=b.names, shapes=b.shapes, offsets=b.offsets, flat=f.numpy(), checksum=b.checksum)
                for b, f in zip(update.buckets, flats)]


def bf16_crcs(named_params: Iterable[tuple[str, torch.Tensor]]) -> dict[str, int]:
    """crc32 of each tensor's bf16 bits, by name: what 'bit-identical in bf16' is checked against."""
    out = {}
    for name, p in named_params:
        bits = p.detach().to(torch.bfloat16).contiguous().view(-1).view(torch.int16).cpu()
        out[name] = zlib.crc32(bits.numpy().tobytes())
    return out
