"""Parameter layouts: which box of every Llama parameter each rank holds in one phase.

A layout is (dp, tp, pp, zero) over `dp * tp * pp` ranks, Megatron rank order (tp fastest, then
dp, then pp): rank = (pp_idx * dp + dp_idx) * tp + tp_idx.

- pp: decoder layers split into `pp` contiguous stages (balanced, like `numpy.array_split`);
  the embedding lives on stage 0, the final norm and an untied lm_head on the last stage
  (a tied embedding is also held by the last stage, as Megatron keeps a copy there).
- tp (Megatron-LM, Shoeybi et al. 2019): column-parallel q/k/v/gate/up are split on the output
  dim (dim 0 of the [out, in] weight); row-parallel o/down on the input dim (dim 1); the
  embedding / lm_head on the vocab dim (dim 0); norms are replicated. k/v are split by kv heads;
  when tp > kv heads each kv head is replicated over tp / kv_heads ranks (GQA, as vLLM does).
- dp: replicas; with `zero=True` each replica group additionally shards every (tp, pp) shard on
  its dim 0 over dp (FSDP2-style Shard(0), ZeRO-3): the training layout.

A box is a tuple of half-open (start, stop) per dim; `None` means the rank holds nothing.
Example: param_box("model.layers.0.self_attn.o_proj.weight", (64, 64), spec, Layout(tp=2), 1)
  -> ((0, 64), (32, 64))
"""
from __future__ import annotations

import re
from dataclasses import dataclass

Box = tuple[tuple[int, int], ...]

_LAYER = re.compile(r"^model\.layers\.(\d+)\.")
_COLUMN = ("q_proj", "gate_proj", "up_proj")
_KV = ("k_proj", "v_proj")
_ROW = ("o_proj", "down_proj")


@dataclass(frozen=True)
class ModelSpec:
    """The shape facts slicing needs (from a HF LlamaConfig)."""
    num_layers: int
    num_heads: int
    num_kv_heads: int
    tied_embeddings: bool = False

    @classmethod
    def from_hf_config(cls, config) -> "ModelSpec":
        return cls(config.num_hidden_layers, config.num_attention_heads,
                   getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
                   bool(getattr(config, "tie_word_embeddings", False)))


@dataclass(frozen=True)
class Layout:
    """dp replicas x tp tensor shards x pp pipeline stages; zero: shard params over dp too."""
    dp: int = 1
    tp: int = 1
    pp: int = 1
    zero: bool = False

    def __post_init__(self):
        for key in ("dp", "tp", "pp"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"layout.{key} must be a positive int, got {getattr(self, key)!r}")

    @property
    def world_size(self) -> int:
        return self.dp * self.tp * self.pp

    def coords(self, rank: int) -> tuple[int, int, int]:
        """rank -> (dp_idx, tp_idx, pp_idx); tp fastest, then dp, then pp."""
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank {rank} outside a layout of {self.world_size} ranks")
        tp_idx = rank % self.tp
        dp_idx = (rank // self.tp) % self.dp
        return dp_idx, tp_idx, rank // (self.tp * self.dp)

    def __str__(self) -> str:
        return f"dp{self.dp}{'z' if self.zero else ''}-tp{self.tp}-pp{self.pp}"


def chunk_bounds(size: int, parts: int, index: int) -> tuple[int, int]:
    """Balanced split of range(size) into `parts`: chunk_bounds(10, 4, 1) -> (2, 5)."""
    return index * size // parts, (index + 1) * size // parts


def stages_of(name: str, spec: ModelSpec, pp: int) -> tuple[int, ...]:
    """Pipeline stages holding a parameter: layer i -> the stage whose chunk holds i."""
    m = _LAYER.match(name)
    if m:
        layer = int(m.group(1))
        for stage in range(pp):
            lo, hi = chunk_bounds(spec.num_layers, pp, stage)
            if lo <= layer < hi:
                return (stage,)
        raise ValueError(f"{name}: layer {layer} outside {spec.num_layers} layers")
    if "embed_tokens" in name:
        return (0, pp - 1) if spec.tied_embeddings and pp > 1 else (0,)
    return (pp - 1,)  # final norm, lm_head


def tp_box(name: str, shape: tuple[int, ...], spec: ModelSpec, tp: int, tp_idx: int) -> Box:
    """The tensor-parallel shard of one parameter (before any ZeRO split)."""
    full = tuple((0, n) for n in shape)
    if tp == 1 or len(shape) < 2:
        return full  # norms are replicated
    leaf = name.split(".")[-2]
    if leaf in _KV:
        kv = spec.num_kv_heads
        head_dim = shape[0] // kv
        if tp <= kv:
            lo, hi = chunk_bounds(kv, tp, tp_idx)
        else:
            lo = tp_idx * kv // tp  # tp / kv consecutive ranks share one kv head
            hi = lo + 1
        return ((lo * head_dim, hi * head_dim),) + full[1:]
    if leaf in _COLUMN or "embed_tokens" in name or "lm_head" in name:
        return (chunk_bounds(shape[0], tp, tp_idx),) + full[1:]
    if leaf in _ROW:
        return (full[0], chunk_bounds(shape[1], tp, tp_idx)) + full[2:]
    raise ValueError(f"{name}: no tensor-parallel rule for a {len(shape)}-D parameter")


def param_box(name: str, shape: tuple[int, ...], spec: ModelSpec, layout: Layout,
              rank: int) -> Box | None:
    """The box of `name` that `rank` holds in `layout`, or None (other stage / empty ZeRO chunk)."""
    dp_idx, tp_idx, pp_idx = layout.coords(rank)
    if pp_idx not in stages_of(name, spec, layout.pp):
        return None
    box = tp_box(name, tuple(shape), spec, layout.tp, tp_idx)
    if layout.zero and layout.dp > 1:
        lo, hi = box[0]
        a, b = chunk_bounds(hi - lo, layout.dp, dp_idx)
        if a == b:
            return None
        box = ((lo + a, lo + b),) + box[1:]
    return box


def fsdp_box(shape: tuple[int, ...], world_size: int, rank: int) -> Box | None:
    """The box FSDP2's Shard(0) gives `rank` (torch.chunk on dim 0: ceil(d0 / world_size) rows per rank,
    the last ranks may hold fewer or none), or None: fsdp_box((10, 4), 4, 3) -> ((9, 10), (0, 4))."""
    rows = -(-shape[0] // world_size)
    lo, hi = min(rank * rows, shape[0]), min((rank + 1) * rows, shape[0])
    if lo == hi:
        return None
    return ((lo, hi),) + tuple((0, n) for n in shape[1:])


def box_numel(box: Box) -> int:
    n = 1
    for lo, hi in box:
        n *= max(0, hi - lo)
    return n


def intersect(a: Box, b: Box) -> Box | None:
    """Overlap of two boxes, or None: intersect(((0, 4),), ((2, 6),)) -> ((2, 4),)."""
    out = tuple((max(x0, y0), min(x1, y1)) for (x0, x1), (y0, y1) in zip(a, b))
    return out if all(lo < hi for lo, hi in out) else None


def to_slices(box: Box, origin: Box | None = None) -> tuple[slice, ...]:
    """Index `box` inside a tensor that itself starts at `origin` (default: the full tensor)."""
    if origin is None:
        return tuple(slice(lo, hi) for lo, hi in box)
    return tuple(slice(lo - o, hi - o) for (lo, hi), (o, _) in zip(box, origin))
