"""Analytic cost and memory model of RLHF model calls (ReaLHF §5, Mei et al. 2024; SPECS.md §8).

Where ReaLHF profiles per-layer times, we compute them from FLOPs and bytes with three device
constants fitted to measured step times (`rl bench plan` fits them on this CPU):
  t_kernel = max(flops / (peak * compute_efficiency), bytes / (hbm * memory_efficiency))
             + overhead_s_per_layer * layer_passes
- generate = prefill (forward over the prompts) + gen_len decode steps; a decode step reads the
  local weights and KV cache once per in-flight micro-batch (memory-bound at small batch).
- inference = one forward over prompt + generation; train = forward + backward (3x forward FLOPs)
  + optimizer (memory-bound over the local optimizer state) per minibatch.
- pipeline (GPipe/1F1B bubble): t = t_stage * (m + pp - 1) with m micro-batches.
- tp: 2 all-reduces per layer per forward (4 with backward) of tokens * hidden activations;
  ring all-reduce t = 2 (k - 1)/k * bytes / bandwidth + 2 (k - 1) * latency.
- dp (train): one gradient all-reduce of the local gradient bytes.
- GEMM width (opt-in, `gemm_half_width` > 0): the compute ceiling of a matmul whose local weight
  width is w = hidden / tp is scaled by w / (w + gemm_half_width) (a Hockney half-performance
  width: narrow tensor-parallel shards reach less of the peak). It slows only compute-bound work
  (train, inference, prefill), not memory-bound decoding, so training prefers dp while generation
  keeps preferring tp; 0 (the default) turns it off.
Memory (bytes per device): params b*n/(tp*pp); train adds grads b*n/(tp*pp), optimizer
20*n/(dp*tp*pp) (fp32 master + Adam moments + fp32 grad, ZeRO-sharded) and activations
34*hidden bytes per token per layer / tp (Korthikanti et al. 2022, flash attention, sequence
parallel) for the micro-batches in flight (one sequence each, at most pp under 1F1B);
generate adds the KV cache (decoded in waves that fit KV_CACHE_FRACTION of the device).

Example: call_cost(LLAMA_7B, Call("generate", 512, 1024, 1024), Strategy(4, 2, 1), hw)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

OPTIMIZER_BYTES_PER_PARAM = 20
ACT_BYTES_PER_TOKEN_HIDDEN = 34
KV_CACHE_FRACTION = 0.3
GIB = 1024 ** 3


@dataclass(frozen=True)
class LlamaShape:
    """A Llama-like decoder: layers x (GQA attention + SwiGLU MLP), embeddings, lm_head."""
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def layer_params(self) -> int:
        """q, o: h*h; k, v: h*kv*d; gate, up, down: 3*h*i; two RMSNorm vectors."""
        kv_dim = self.kv_heads * self.head_dim
        return 2 * self.hidden * self.hidden + 2 * self.hidden * kv_dim + 3 * self.hidden * self.intermediate + 2 * self.hidden

    @property
    def num_params(self) -> int:
        embeds = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return self.layers * self.layer_params + embeds + self.hidden

    @property
    def matmul_params(self) -> int:
        """Weights multiplied per token (the embedding lookup is free, lm_head is not)."""
        return self.layers * (self.layer_params - 2 * self.hidden) + self.vocab * self.hidden


@dataclass(frozen=True)
class Hardware:
    """One cluster's devices and links; bandwidths in GB/s (1e9 bytes)."""
    nodes: int
    gpus_per_node: int
    device_memory_gib: float
    peak_tflops: float
    hbm_gbytes_per_s: float
    intra_node_gbytes_per_s: float
    inter_node_gbytes_per_s: float
    link_latency_us: float = 10.0
    param_bytes: int = 2
    compute_efficiency: float = 0.5
    memory_efficiency: float = 0.7
    overhead_us_per_layer: float = 20.0
    gemm_half_width: float = 0.0  # 0: off; else local matmul width at half the compute ceiling

    @property
    def num_gpus(self) -> int:
        return self.nodes * self.gpus_per_node


@dataclass(frozen=True)
class Strategy:
    dp: int
    tp: int
    pp: int

    @property
    def size(self) -> int:
        return self.dp * self.tp * self.pp

    def __str__(self) -> str:
        return f"{self.dp}/{self.tp}/{self.pp}"


@dataclass(frozen=True)
class Call:
    """One model function call: kind in generate | inference | train; batch in sequences."""
    kind: str
    batch_seqs: int
    prompt_len: int
    gen_len: int
    minibatches: int = 1


def forward_flops(shape: LlamaShape, tokens: float, context: float) -> float:
    """2 * matmul_params * tokens + attention 4 * layers * tokens * context * hidden.

    forward_flops(shape, 1, 0) == 2 * shape.matmul_params.
    """
    return 2.0 * shape.matmul_params * tokens + 4.0 * shape.layers * tokens * context * shape.hidden


def kv_bytes_per_token(shape: LlamaShape, tp: int, param_bytes: int) -> float:
    """K and V of one token over all layers on one tp rank (kv heads replicate when tp > kv)."""
    kv_local = max(1, shape.kv_heads // tp) if tp > shape.kv_heads else shape.kv_heads / tp
    return 2.0 * shape.layers * kv_local * shape.head_dim * param_bytes


def gemm_width_factor(width: float, half_width: float) -> float:
    """Share of the compute ceiling a matmul of local weight width `width` reaches:
    width / (width + half_width); 1.0 when half_width <= 0. gemm_width_factor(256, 256) == 0.5."""
    return 1.0 if half_width <= 0 else width / (width + half_width)


def kernel_s(flops: float, nbytes: float, layer_passes: float, hw: Hardware, width: float | None = None) -> float:
    """Roofline time of work done on one device plus a fixed cost per layer pass; `width` (the
    local matmul width) scales the compute ceiling by gemm_width_factor (None: no scaling)."""
    factor = 1.0 if width is None else gemm_width_factor(width, hw.gemm_half_width)
    compute = flops / (hw.peak_tflops * 1e12 * hw.compute_efficiency * factor)
    memory = nbytes / (hw.hbm_gbytes_per_s * 1e9 * hw.memory_efficiency)
    return max(compute, memory) + layer_passes * hw.overhead_us_per_layer * 1e-6


def allreduce_s(nbytes: float, k: int, gbytes_per_s: float, latency_us: float) -> float:
    """Ring all-reduce: 2 (k-1)/k * bytes / bw + 2 (k-1) * latency; allreduce_s(x, 1, ...) == 0."""
    if k <= 1:
        return 0.0
    return 2.0 * (k - 1) / k * nbytes / (gbytes_per_s * 1e9) + 2.0 * (k - 1) * latency_us * 1e-6


def pipeline_s(stage_s_per_microbatch: float, microbatches: int, pp: int) -> float:
    """GPipe / 1F1B makespan: (m + pp - 1) * t_stage; pipeline_s(1.0, 4, 2) == 5.0."""
    return (microbatches + pp - 1) * stage_s_per_microbatch


def microbatches(local_seqs: int, pp: int) -> int:
    """Micro-batches per pass: enough to fill the pipeline (4 per stage), at most one per sequence."""
    return max(1, min(local_seqs, 4 * pp)) if pp > 1 else 1


def _links(s: Strategy, hw: Hardware) -> tuple[float, float]:
    """(tp bandwidth, dp bandwidth): tp stays in a node; dp leaves it once tp*dp > gpus_per_node."""
    dp_bw = hw.intra_node_gbytes_per_s if s.tp * s.dp <= hw.gpus_per_node else hw.inter_node_gbytes_per_s
    return hw.intra_node_gbytes_per_s, dp_bw


def _pass_s(shape: LlamaShape, tokens: float, context: float, s: Strategy, hw: Hardware,
            backward: bool) -> float:
    """One forward (or forward + backward) over `tokens` local tokens, pipelined over pp."""
    m = microbatches(max(1, int(tokens // max(context, 1))), s.pp)
    mult = 3.0 if backward else 1.0
    mb_tokens = tokens / m
    flops = mult * forward_flops(shape, mb_tokens, context) / (s.tp * s.pp)
    weights = mult * shape.num_params * hw.param_bytes / (s.tp * s.pp)
    layer_passes = mult * shape.layers / s.pp
    tp_bw, _ = _links(s, hw)
    comm = (2 * mult) * (shape.layers / s.pp) * allreduce_s(
        mb_tokens * shape.hidden * hw.param_bytes, s.tp, tp_bw, hw.link_latency_us)
    p2p = 0.0 if s.pp == 1 else mb_tokens * shape.hidden * hw.param_bytes / (hw.inter_node_gbytes_per_s * 1e9)
    stage = kernel_s(flops, weights, layer_passes, hw, shape.hidden / s.tp) + comm + p2p
    return pipeline_s(stage, m, s.pp)


def decode_waves(shape: LlamaShape, call: Call, s: Strategy, hw: Hardware) -> int:
    """Sequences of a dp replica are decoded in waves so the KV cache fits in KV_CACHE_FRACTION of
    device memory (what vLLM's block manager does with its preallocated cache)."""
    local = math.ceil(call.batch_seqs / s.dp)
    per_seq = (call.prompt_len + call.gen_len) * kv_bytes_per_token(shape, s.tp, hw.param_bytes) / s.pp
    fits = max(1, int(KV_CACHE_FRACTION * hw.device_memory_gib * GIB // per_seq))
    return math.ceil(local / min(local, fits))


def generate_s(shape: LlamaShape, call: Call, s: Strategy, hw: Hardware) -> float:
    """Per wave: prefill the prompts, then gen_len decode steps with pp micro-batches in flight."""
    local = math.ceil(call.batch_seqs / s.dp)
    waves = decode_waves(shape, call, s, hw)
    wave = local / waves
    prefill = _pass_s(shape, wave * call.prompt_len, call.prompt_len, s, hw, backward=False)
    m = max(1.0, min(wave, s.pp))  # pipelined decoding keeps pp micro-batches in flight
    mb = wave / m
    context = call.prompt_len + call.gen_len / 2
    flops = forward_flops(shape, mb, context) / (s.tp * s.pp)
    nbytes = (shape.num_params * hw.param_bytes / (s.tp * s.pp)
              + mb * context * kv_bytes_per_token(shape, s.tp, hw.param_bytes) / s.pp)
    tp_bw, _ = _links(s, hw)
    comm = 2 * (shape.layers / s.pp) * allreduce_s(mb * shape.hidden * hw.param_bytes, s.tp, tp_bw,
                                                   hw.link_latency_us)
    step = m * (kernel_s(flops, nbytes, shape.layers / s.pp, hw, shape.hidden / s.tp) + comm)
    step += (s.pp - 1) * hw.link_latency_us * 1e-6 if s.pp > 1 else 0.0
    return waves * (prefill + call.gen_len * step)


def call_seconds(shape: LlamaShape, call: Call, s: Strategy, hw: Hardware) -> float:
    """Estimated wall time of one call on dp*tp*pp devices."""
    if call.kind == "generate":
        return generate_s(shape, call, s, hw)
    seqlen = call.prompt_len + call.gen_len
    local_tokens = math.ceil(call.batch_seqs / s.dp) * seqlen
    if call.kind == "inference":
        return _pass_s(shape, local_tokens, seqlen, s, hw, backward=False)
    if call.kind != "train":
        raise ValueError(f"call kind {call.kind!r}: expected generate, inference or train")
    per_mb_tokens = max(seqlen, local_tokens // call.minibatches)
    _, dp_bw = _links(s, hw)
    local_params = shape.num_params / (s.tp * s.pp)
    step = (_pass_s(shape, per_mb_tokens, seqlen, s, hw, backward=True)
            + kernel_s(0.0, OPTIMIZER_BYTES_PER_PARAM * 2 * local_params / s.dp, 0, hw)
            + allreduce_s(local_params * hw.param_bytes, s.dp, dp_bw, hw.link_latency_us))
    return call.minibatches * step


def call_memory_bytes(shape: LlamaShape, call: Call, s: Strategy, hw: Hardware) -> dict[str, float]:
    """Per-device bytes of one call: params, grads, optimizer, activations, kv_cache."""
    n = shape.num_params
    out = {"params": hw.param_bytes * n / (s.tp * s.pp), "grads": 0.0, "optimizer": 0.0,
           "activations": 0.0, "kv_cache": 0.0}
    local = math.ceil(call.batch_seqs / s.dp)
    seqlen = call.prompt_len + call.gen_len
    logits = 4.0 * shape.vocab / s.tp  # fp32 logits of one token on the last stage
    if call.kind == "generate":
        wave = math.ceil(local / decode_waves(shape, call, s, hw))
        out["kv_cache"] = wave * seqlen * kv_bytes_per_token(shape, s.tp, hw.param_bytes) / s.pp
        out["activations"] = wave * logits
        return out
    # gradient accumulation / inference micro-batches of one sequence bound the activations
    local_seqs = local if call.kind == "inference" else max(1, local // call.minibatches)
    mb_tokens = seqlen
    if call.kind == "inference":
        out["activations"] = mb_tokens * (ACT_BYTES_PER_TOKEN_HIDDEN * shape.hidden / s.tp + logits)
        return out
    in_flight = min(local_seqs, s.pp)  # 1F1B keeps at most pp micro-batches alive
    out["grads"] = hw.param_bytes * n / (s.tp * s.pp)
    out["optimizer"] = OPTIMIZER_BYTES_PER_PARAM * n / (s.dp * s.tp * s.pp)
    out["activations"] = (shape.layers / s.pp * in_flight * mb_tokens
                          * ACT_BYTES_PER_TOKEN_HIDDEN * shape.hidden / s.tp + mb_tokens * logits)
    return out
