"""bf16 delta weight sync (SPECS §9): ship only the bf16 weights whose bits changed.

At RL learning rates most updates are smaller than half a bf16 ulp (|dw| < |w|/256), so ~99% of
the bf16 weights are bit-identical between consecutive steps. The sender keeps the last-shipped bf16
copy of every bucket; per bucket it sends the positions whose 16 bits changed (int32 indices, a
bitmask, or byte-coded gaps between changed positions, whichever is smallest) and their new bits.
The receiver keeps the same copy, OVERWRITES those positions (never adds, so errors cannot
accumulate), checks a CRC32 of the resulting bf16 bucket and hands dense bf16 buckets to its engine.
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

import zlib
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

from rollout.weight_sync import WeightBucket, pack_buckets

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
    checksum: crc32 of the whole resulting bf16 bucket.
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


def encode_bucket(new: np.ndarray, old: np.ndarray | None, dense_threshold: float) -> tuple[str, dict]:
    """Smallest encoding of `new` (int16 bf16 bits, [numel]) against `old` (same shape, or None).

    Returns (encoding, arrays) with arrays among values/indices/mask. Per change the values cost 2
    bytes, plus 4 (indices), ~1 at densities above 0.4% (gaps), or numel/8 in all (bitmask); dense
    costs 2 * numel.
    Example: encode_bucket(np.int16([1, 2, 3]), np.int16([1, 9, 3]), 0.4) -> ("gaps", ...)
    """
    if old is None or old.shape != new.shape:
        return DENSE, {"values": new.copy()}
    changed = new != old
    k = int(changed.sum())
    if k > dense_threshold * new.size:
        return DENSE, {"values": new.copy()}
    idx = np.flatnonzero(changed)
    gaps = np.diff(idx, prepend=-1)
    sizes = {INDICES: 4 * k, BITMASK: (new.size + 7) // 8, GAPS: int((gaps // _ESC).sum()) + k}
    best = min(sizes, key=sizes.get)
    if best == INDICES:
        return INDICES, {"indices": idx.astype(np.int32), "values": new[idx]}
    if best == BITMASK:
        return BITMASK, {"mask": np.packbits(changed), "values": new[idx]}
    return GAPS, {"indices": encode_gaps(gaps), "values": new[idx]}


def encode_gaps(gaps: np.ndarray) -> np.ndarray:
    """Gaps (>= 1) -> uint8 codes: gap // 255 escape bytes (255) then the remainder (0..254)."""
    escapes = gaps // _ESC
    ends = np.cumsum(escapes + 1) - 1  # where each gap's final byte goes
    out = np.full(int(ends[-1]) + 1 if len(ends) else 0, _ESC, dtype=np.uint8)
    out[ends] = (gaps % _ESC).astype(np.uint8)
    return out


def decode_gaps(codes: np.ndarray) -> np.ndarray:
    """uint8 codes -> positions: the running sum of byte values, read at each final byte, minus 1."""
    running = np.cumsum(codes.astype(np.int64))
    return running[codes != _ESC] - 1


def decode_bucket(base: np.ndarray | None, bucket: DeltaBucket) -> np.ndarray:
    """The resulting int16 bucket: `base` with the changed positions OVERWRITTEN by bucket.values."""
    if bucket.encoding == DENSE:
        if bucket.values.size != bucket.numel:
            raise DeltaSyncError(f"dense bucket at {bucket.names[0]!r} has {bucket.values.size} values, "
                                 f"expected {bucket.numel}")
        return np.array(bucket.values, dtype=np.int16, copy=True)
    if base is None or base.size != bucket.numel:
        raise DeltaSyncError(f"delta bucket at {bucket.names[0]!r} has no base of {bucket.numel} elements")
    out = base.copy()
    if bucket.encoding == INDICES:
        out[bucket.indices] = bucket.values
    elif bucket.encoding == GAPS:
        pos = decode_gaps(bucket.indices)
        if pos.size != bucket.values.size or (pos.size and (pos[-1] >= bucket.numel)):
            raise DeltaSyncError(f"gap codes at {bucket.names[0]!r} do not match their {bucket.values.size} values")
        out[pos] = bucket.values
    elif bucket.encoding == BITMASK:
        where = np.unpackbits(bucket.mask, count=bucket.numel).astype(bool)
        out[where] = bucket.values
    else:
        raise DeltaSyncError(f"unknown delta encoding {bucket.encoding!r}")
    return out


def _crc(flat: np.ndarray) -> int:
    return zlib.crc32(flat.tobytes())


class DeltaSender:
    """Lives with the learner's weights; remembers the bf16 bits it last shipped.

    full_every_steps: a full sync every K encodes (0: only the first one and on request).
    """

    def __init__(self, dense_threshold: float = 0.4, full_every_steps: int = 10):
        if not 0.0 <= dense_threshold <= 1.0:
            raise ValueError(f"dense_threshold must be in [0, 1], got {dense_threshold}")
        if full_every_steps < 0:
            raise ValueError(f"full_every_steps must be >= 0, got {full_every_steps}")
        self.dense_threshold, self.full_every_steps = dense_threshold, full_every_steps
        self.last: list[WeightBucket] | None = None
        self.last_version: int | None = None
        self.deltas_since_full = 0

    def encode(self, named_params: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int, version: int,
               force_full: bool = False) -> DeltaUpdate:
        new = pack_buckets(named_params, bucket_bytes, dtype=torch.bfloat16)
        full = (force_full or self.last is None or not _same_layout(self.last, new)
                or (self.full_every_steps > 0 and self.deltas_since_full + 1 >= self.full_every_steps))
        buckets = []
        for i, b in enumerate(new):
            old = None if full else self.last[i].flat
            encoding, arrays = encode_bucket(b.flat, old, 1.0 if full else self.dense_threshold)
            buckets.append(DeltaBucket(names=b.names, shapes=b.shapes, offsets=b.offsets, numel=b.flat.size,
                                       encoding=encoding, checksum=b.checksum, **arrays))
        update = DeltaUpdate(base_version=None if full else self.last_version, version=version, buckets=buckets)
        self.last, self.last_version = new, version
        self.deltas_since_full = 0 if full else self.deltas_since_full + 1
        return update


class DeltaReceiver:
    """Lives with an engine; holds the bf16 bits the engine was last given, per bucket."""

    def __init__(self):
        self.flats: list[np.ndarray] | None = None
        self.version: int | None = None

    def reset(self) -> None:
        """Forget the base (e.g. the engine got weights another way); the next delta must be full."""
        self.flats, self.version = None, None

    def apply(self, update: DeltaUpdate) -> list[WeightBucket]:
        """Decodes and verifies every bucket, then commits; returns dense bf16 WeightBuckets.

        Raises DeltaSyncError (and keeps the old state) on a base-version mismatch or a bad checksum.
        """
        if not update.is_full:
            if self.flats is None or self.version != update.base_version:
                raise DeltaSyncError(f"delta from version {update.base_version} cannot apply to "
                                     f"version {self.version}: a full sync is needed")
            if len(self.flats) != len(update.buckets):
                raise DeltaSyncError(f"delta has {len(update.buckets)} buckets, receiver holds {len(self.flats)}")
        flats = []
        for i, b in enumerate(update.buckets):
            flat = decode_bucket(None if update.is_full else self.flats[i], b)
            if _crc(flat) != b.checksum:
                raise DeltaSyncError(f"bucket {i} starting at {b.names[0]!r} failed its checksum "
                                     f"after applying version {update.version}")
            flats.append(flat)
        self.flats, self.version = flats, update.version
        return [WeightBucket(names=b.names, shapes=b.shapes, offsets=b.offsets, flat=f, checksum=b.checksum)
                for b, f in zip(update.buckets, flats)]


def _same_layout(a: list[WeightBucket], b: list[WeightBucket]) -> bool:
    return len(a) == len(b) and all(x.names == y.names and x.shapes == y.shapes for x, y in zip(a, b))


def bf16_crcs(named_params: Iterable[tuple[str, torch.Tensor]]) -> dict[str, int]:
    """crc32 of each tensor's bf16 bits, by name: what 'bit-identical in bf16' is checked against."""
    out = {}
    for name, p in named_params:
        bits = p.detach().to(torch.bfloat16).contiguous().view(-1).view(torch.int16).cpu()
        out[name] = zlib.crc32(bits.numpy().tobytes())
    return out
