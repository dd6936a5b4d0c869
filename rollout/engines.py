"""Engine builders by name (`rollout.engine` in recipes). A builder gets the model name and returns
an object speaking the engine protocol of rollout/types.py. hf builds on a loaded (model, tokenizer);
vllm loads the weights itself from a local HF folder (model_path)."""
from __future__ import annotations

from algorithms.registry import Registry

ENGINES: Registry = Registry("rollout engine")


@ENGINES.register("hf")
def build_hf(model, tokenizer, **kwargs):
    from rollout.hf_engine import HFEngine
    return HFEngine(model, tokenizer, **kwargs)


@ENGINES.register("vllm")
def build_vllm(model_path, tokenizer, **kwargs):
    """model_path: a local HF folder; kwargs: dtype, seed, gpu_memory_utilization, tensor_parallel_size, ..."""
    from rollout.vllm_engine import VLLMEngine
    return VLLMEngine(model_path, tokenizer, **kwargs)
