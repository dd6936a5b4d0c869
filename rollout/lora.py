"""LoRA weight sync: the learner ships only the adapters, the engine merges them into its base weights.

A LoRA layer (Hu et al. 2021, arXiv:2106.09685) replaces a frozen weight W0 [out, in] by

    W = W0 + (alpha / r) * B @ A        A [r, in], B [out, r]

The learner trains A and B (fp32) and ships them in a `LoraUpdate` (r * (in + out) numbers per layer
instead of in * out). The engine keeps W0 and, on every sync, writes W = merged_weight(W0, A, B, s)
into the weights it samples with: re-merged from W0 each time, so errors never accumulate and the
engine stays a plain model (hf: weights in place; vllm: its ordinary weight reload). The learner
computes the same `merged_weight` for its checksum and export, so both sides hold the same bits.

Example: merged_weight(torch.zeros(2, 2), torch.ones(1, 2), torch.ones(2, 1), 0.5) -> 0.5 everywhere
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rollout.weight_sync import WeightBucket, bucket_tensors, pack_buckets, verify_bucket

A_SUFFIX, B_SUFFIX = ".lora_A", ".lora_B"  # bucket names: "<base weight name>.lora_A" / ".lora_B"


@dataclass
class LoraUpdate:
    """One adapter sync: buckets of A [r, in] and B [out, r] per target weight (named by the plain
    model's weight name + A_SUFFIX / B_SUFFIX), and the scaling alpha / r."""
    buckets: list[WeightBucket]
    scaling: float

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.buckets)


def lora_delta(lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float) -> torch.Tensor:
    """scaling * B @ A in fp32, [out, in], summed over the rank in a fixed order (k = 0, 1, ...) with
    elementwise ops only: the same bits on every process and device, whatever BLAS and thread count
    (a matmul may split its sum differently per machine, and learner and engine must agree exactly)."""
    a, b = lora_a.detach().float(), lora_b.detach().float()
    acc = torch.zeros(b.shape[0], a.shape[1], dtype=torch.float32, device=a.device)
    for k in range(a.shape[0]):
        acc.add_(b[:, k:k + 1] * a[k:k + 1, :])
    return acc.mul_(scaling)


def merged_weight(w0: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float) -> torch.Tensor:
    """W = W0 + scaling * B @ A, added in fp32, returned in W0's dtype. w0 [out, in]; A [r, in]; B [out, r]."""
    delta = lora_delta(lora_a.to(w0.device), lora_b.to(w0.device), scaling)
    return (w0.detach().float() + delta).to(w0.dtype)


def pack_adapters(adapters: dict[str, tuple[torch.Tensor, torch.Tensor]], scaling: float,
                  bucket_bytes: int) -> LoraUpdate:
    """adapters: base weight name -> (A, B) -> a LoraUpdate (fp32 buckets, checksummed)."""
    named = [(n + sfx, t.detach().float())
             for n, (a, b) in adapters.items() for sfx, t in ((A_SUFFIX, a), (B_SUFFIX, b))]
    return LoraUpdate(pack_buckets(named, bucket_bytes), float(scaling))


def unpack_adapters(update: LoraUpdate) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Inverse of pack_adapters (every bucket's checksum verified first). -> base name -> (A, B)."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for bucket in update.buckets:
        verify_bucket(bucket)
        for name, t in bucket_tensors(bucket):
            base, sfx = name.rsplit(".", 1)
            parts.setdefault(base, {})[sfx] = t
    return {n: (p["lora_A"], p["lora_B"]) for n, p in parts.items()}


def target_names(update: LoraUpdate) -> list[str]:
    """The base weight names a LoraUpdate changes (its A and B buckets' names without the suffix)."""
    return sorted({n.rsplit(".", 1)[0] for b in update.buckets for n in b.names})


class LoraMerger:
    """The engine side: holds the base weights W0 and turns each LoraUpdate into buckets of the merged
    weights, in the base's dtype, for the engine's ordinary `update_weights`.

    base: name -> W0 of (at least) every target weight; `emit_all`: also emit the untouched weights
    (engines that reload the whole model at once, e.g. vllm's layer-wise reload), else only the merged ones.
    """

    def __init__(self, base: dict[str, torch.Tensor], emit_all: bool = False, bucket_bytes: int = 32 << 20):
        self.base, self.emit_all, self.bucket_bytes = base, emit_all, bucket_bytes

    def merge(self, update: LoraUpdate) -> list[WeightBucket]:
        adapters = unpack_adapters(update)
        missing = sorted(set(adapters) - set(self.base))
        if missing:
            raise KeyError(f"LoRA update names weights the engine does not hold: {missing[:3]}")
        merged = {n: merged_weight(self.base[n], a, b, update.scaling) for n, (a, b) in adapters.items()}
        names = list(self.base) if self.emit_all else list(merged)
        return pack_buckets(((n, merged.get(n, self.base.get(n))) for n in names), self.bucket_bytes)
