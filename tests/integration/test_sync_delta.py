"""Weight sync between Ray actors on the tiny model: full and bf16 delta into the hf engine, after
real AdamW steps on GRPO-shaped data; engines end bit-identical to the learner's bf16 weights."""
import pytest
import ray
import torch

from rl.config import SyncConfig
from rl.drivers.experience import to_batch
from rl.workers.learner import LearnerActor
from rl.workers.models import load_tokenizer
from rl.workers.rollout_worker import RolloutWorker
from rl.workers.weight_sync import Phases, after_train, before_train, sync_weights
from rollout.types import GenerationRequest


def trainer_cfg(mode, full_every=3, transport="object_store"):
    return SyncConfig(bucket_mb=0.25, mode=mode, full_every_steps=full_every, dense_threshold=0.4,
                      transport=transport, backend="auto", timeout_s=60.0)


def one_step(learner, engine, tok, step):
    prompts = [tok.encode(t) for t in ("What is 2 + 3?", "Say hi.")]
    reqs = [GenerationRequest(prompt_ids=p, n=4, max_new_tokens=8, request_id=i) for i, p in enumerate(prompts)]
    comps = ray.get(engine.generate.remote(reqs, step))
    group = [c.request_id for c in comps]
    rewards = torch.randn(len(comps), generator=torch.Generator().manual_seed(step))
    batch = to_batch(reqs, comps, group, rewards, tok.pad_token_id)
    adv = rewards - rewards.mean()
    return ray.get(learner.train_step.remote(batch, adv))


@pytest.fixture(scope="module")
def actors(ray_local):
    learner = LearnerActor.remote("tiny-llama", "float32", 0, lr=1e-5, minibatch_samples=8, microbatch_samples=8)
    engines = [RolloutWorker.remote("hf", "tiny-llama", "float32", 0) for _ in range(2)]
    yield learner, engines, load_tokenizer("tiny-llama")
    for a in [learner, *engines]:
        ray.kill(a)


def test_delta_sync_keeps_engines_bit_identical_in_bf16(actors):
    learner, engines, tok = actors
    seen = []
    for step in range(5):
        m = sync_weights(learner, engines, step, trainer_cfg("delta", full_every=3))
        seen.append(m)
        want = ray.get(learner.weights_crc.remote())
        for e in engines:
            assert ray.get(e.weights_crc.remote()) == want
        one_step(learner, engines[0], tok, step)
    assert [m["sync/full"] for m in seen] == [1.0, 0.0, 0.0, 1.0, 0.0]  # first, then every 3rd
    assert all(m["sync/mode"] == 1.0 and m["sync/bytes"] > 0 and m["time/sync_s"] >= 0 for m in seen)
    full_bytes = seen[0]["sync/bytes"]
    assert all(m["sync/density"] < 1.0 and m["sync/bytes"] < full_bytes for m in seen if m["sync/full"] == 0)
    assert full_bytes == 2 * ray.get(learner.num_parameters.remote())  # a full delta sync ships bf16


def test_full_sync_is_exact_fp32(actors):
    learner, engines, tok = actors
    one_step(learner, engines[0], tok, 10)
    m = sync_weights(learner, engines, 20, trainer_cfg("full"))
    assert m["sync/full"] == 1.0 and m["sync/density"] == 1.0 and m["sync/mode"] == 0.0
    want = ray.get(learner.weights_checksum.remote())
    assert all(ray.get(e.weights_checksum.remote()) == want for e in engines)
    assert m["sync/bytes"] == 4 * ray.get(learner.num_parameters.remote())


def test_engine_that_lost_its_base_recovers_with_a_full_sync(actors):
    learner, engines, tok = actors
    sync_weights(learner, engines, 30, trainer_cfg("delta", full_every=0))
    one_step(learner, engines[0], tok, 30)
    sync_weights(learner, engines, 31, trainer_cfg("full"))  # engines' receivers forget their base
    one_step(learner, engines[0], tok, 31)
    m = sync_weights(learner, engines, 32, trainer_cfg("delta", full_every=0))
    assert m.get("sync/recovered") == 1.0 and m["sync/full"] == 1.0
    want = ray.get(learner.weights_crc.remote())
    assert all(ray.get(e.weights_crc.remote()) == want for e in engines)


def test_sleep_wake_calls_reach_the_engines(actors):
    learner, engines, tok = actors
    before_train(engines, None, Phases(engine_sleep=True))  # no offload: the learner is not touched
    after_train(engines, Phases(engine_sleep=True))
    reqs = [GenerationRequest(prompt_ids=tok.encode("hi"), n=1, max_new_tokens=4, temperature=0.0)]
    assert len(ray.get(engines[0].generate.remote(reqs, 0))[0].token_ids) >= 1


def test_broadcast_transport_full_and_delta_bit_identical(actors):
    """sync.transport=broadcast: a gloo group learner + 2 engines, one broadcast per sync."""
    learner, engines, tok = actors
    one_step(learner, engines[0], tok, 40)
    m = sync_weights(learner, engines, 40, trainer_cfg("full", transport="broadcast"))
    assert m["sync/transport"] == 1.0 and "sync/recovered" not in m
    want = ray.get(learner.weights_checksum.remote())
    assert all(ray.get(e.weights_checksum.remote()) == want for e in engines)  # exact fp32
    seen = []
    for step in range(41, 44):
        one_step(learner, engines[0], tok, step)
        seen.append(sync_weights(learner, engines, step, trainer_cfg("delta", full_every=0, transport="broadcast")))
        want = ray.get(learner.weights_crc.remote())
        assert all(ray.get(e.weights_crc.remote()) == want for e in engines)
    assert [m["sync/full"] for m in seen] == [1.0, 0.0, 0.0] and "sync/recovered" not in seen[-1]
    assert seen[-1]["sync/bytes"] < seen[0]["sync/bytes"]


def test_broadcast_recovers_when_an_engine_restarts(actors):
    """A restarted engine is in no group: that sync falls back to a full object-store sync, the next
    one rebuilds the group and broadcasts again. (Kills engine 1; keep this test last.)"""
    learner, engines, tok = actors
    sync_weights(learner, engines, 50, trainer_cfg("delta", full_every=0, transport="broadcast"))
    ray.kill(engines[1], no_restart=False)
    one_step(learner, engines[0], tok, 50)
    m = sync_weights(learner, engines, 51, trainer_cfg("delta", full_every=0, transport="broadcast"))
    assert m.get("sync/recovered") == 1.0 and m["sync/full"] == 1.0
    want = ray.get(learner.weights_crc.remote())
    assert all(ray.get(e.weights_crc.remote()) == want for e in engines)
    one_step(learner, engines[0], tok, 51)
    m = sync_weights(learner, engines, 52, trainer_cfg("delta", full_every=0, transport="broadcast"))
    assert "sync/recovered" not in m and m["sync/transport"] == 1.0 and m["sync/full"] == 0.0
    want = ray.get(learner.weights_crc.remote())
    assert all(ray.get(e.weights_crc.remote()) == want for e in engines)


def test_restarted_engine_resyncs_itself_from_the_learner(ray_local):
    """An engine given the learner's name and killed (as the OOM killer would) comes back on the
    learner's current weights, and the call in flight is retried on it instead of failing the run."""
    # num_cpus=0: the module's other actors still hold their CPU shares
    learner = LearnerActor.options(num_cpus=0, name="learner-resync-test").remote(
        "tiny-llama", "float32", 0, lr=1e-4, minibatch_samples=8, microbatch_samples=8)
    engine = RolloutWorker.options(num_cpus=0).remote("hf", "tiny-llama", "float32", 0,
                                                      learner_name="learner-resync-test")
    tok = load_tokenizer("tiny-llama")
    try:
        one_step(learner, engine, tok, 60)
        sync_weights(learner, [engine], 60, trainer_cfg("full"))
        one_step(learner, engine, tok, 61)  # the learner moves on; the engine is one step behind
        want = ray.get(learner.weights_checksum.remote())
        assert ray.get(engine.weights_checksum.remote()) != want and not ray.get(engine.was_recovered.remote())
        ray.kill(engine, no_restart=False)
        reqs = [GenerationRequest(prompt_ids=tok.encode("hi"), n=2, max_new_tokens=4, request_id=0)]
        comps = ray.get(engine.generate.remote(reqs, 0))
        assert len(comps) == 2 and all(c.weight_version == -1 for c in comps)
        assert ray.get(engine.was_recovered.remote())
        assert ray.get(engine.weights_checksum.remote()) == want
        m = sync_weights(learner, [engine], 62, trainer_cfg("delta", full_every=0))
        assert m["sync/full"] == 1.0  # this learner's first delta sync is a full bf16 one
        assert ray.get(engine.weights_crc.remote()) == ray.get(learner.weights_crc.remote())
    finally:
        for a in (learner, engine):
            ray.kill(a)
