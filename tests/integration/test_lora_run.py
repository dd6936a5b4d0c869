"""LoRA end to end on the tiny model and local Ray: a LoRA learner actor trains only its adapters, the
weight sync ships only the adapters (>= 20x fewer bytes than a full sync) and the hf engine ends up
holding exactly the learner's merged weights (verified checksums, per-weight CRCs, generations);
a checkpoint resumes bit-identically and `rl export` writes a plain HF folder transformers loads
without peft."""
import pytest
import ray
import torch
import yaml

from rl.config import SyncConfig
from rl.types import RolloutBatch
from rl.workers.learner import LossSettings
from rl.workers.lora import LoraLearnerActor, LoraSettings
from rl.workers.models import load_tokenizer
from rl.workers.rollout_worker import RolloutWorker
from rl.workers.weight_sync import sync_weights
from rollout.types import GenerationRequest
from rollout.weight_sync import bucket_tensors

LORA = LoraSettings(r=4, alpha=8.0, target_modules=("q_proj", "v_proj", "o_proj", "down_proj"))


def _learner(pad_id: int):
    return LoraLearnerActor.options(num_cpus=0.25).remote(
        "tiny-llama", lora=LORA, lr=5e-2, minibatch_samples=8, microbatch_samples=4, num_threads=1,
        pad_id=pad_id, loss=LossSettings(kl_coef=0.05, max_new_tokens=8))


def _batch(engine, tok) -> tuple[RolloutBatch, torch.Tensor]:
    prompts = [tok.encode("What is 1 + 2?"), tok.encode("What is 3 + 4?")]
    reqs = [GenerationRequest(prompt_ids=p, n=4, max_new_tokens=8, request_id=i) for i, p in enumerate(prompts)]
    done = ray.get(engine.generate.remote(reqs, seed=0))
    groups = [int(c.request_id) for c in done]
    batch = RolloutBatch.from_sequences(prompts, [c.token_ids for c in done], [c.logprobs for c in done], groups,
                                        [0.0] * len(done), tok.pad_token_id)
    return batch, torch.tensor([1.0, -1.0] * (len(done) // 2))


def _named(buckets) -> dict[str, torch.Tensor]:
    return {n: t.clone() for b in buckets for n, t in bucket_tensors(b)}


@pytest.fixture(scope="module")
def world(ray_local):
    tok = load_tokenizer("tiny-llama")
    learner = _learner(tok.pad_token_id)
    engine = RolloutWorker.options(num_cpus=0.25).remote("hf", "tiny-llama", "float32", 0)
    yield tok, learner, engine
    for a in (learner, engine):
        ray.kill(a)


def test_only_adapters_train_and_sync(world):
    tok, learner, engine = world
    sync = SyncConfig(bucket_mb=1.0)
    sync_weights(learner, [engine], 0, sync)
    frozen0, before = ray.get([learner.frozen_checksum.remote(), learner.trainable_state.remote()])
    assert before and all(".lora_A." in n or ".lora_B." in n for n in before)  # the optimizer's whole world
    batch, adv = _batch(engine, tok)
    for _ in range(2):  # step 1 moves B (B = 0 at the start, so A has no gradient); step 2 moves A too
        metrics = ray.get(learner.train_step.remote(batch, adv))
    assert metrics["grad_norm"] > 0 and "kl_ref" in metrics  # the reference: the base, adapters disabled
    frozen1, after = ray.get([learner.frozen_checksum.remote(), learner.trainable_state.remote()])
    assert frozen1 == frozen0  # the base did not move
    assert all(not torch.equal(before[n], after[n]) for n in before)  # every adapter did

    m = sync_weights(learner, [engine], 1, sync)
    assert m["sync/verified"] == 1.0 and m["sync/resyncs"] == 0.0
    assert m["sync/checksum"] == m["sync/checksum_engine0"]
    assert m["sync/full_bytes"] >= 20 * m["sync/bytes"], m  # adapters only
    assert m["sync/bytes_ratio_vs_full"] == m["sync/bytes"] / m["sync/full_bytes"]
    assert ray.get(engine.weights_crc.remote()) == ray.get(learner.weights_crc.remote())  # every weight, by name
    assert ray.get(engine.weights_checksum.remote("float32")) == ray.get(learner.weights_checksum.remote("float32"))


def test_checkpoint_resume_and_export_round_trip(world, tmp_path):
    from transformers import AutoModelForCausalLM

    from rl.tools.export import export
    tok, learner, engine = world
    ckpt = tmp_path / "run" / "checkpoints" / "step-000001"
    ckpt.mkdir(parents=True)
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(
        {"model": {"name": "tiny-llama", "dtype": "float32"}, "run": {"seed": 0}}))
    ray.get(learner.save.remote(str(ckpt)))
    assert (ckpt / "adapter" / "adapter_config.json").exists() and not (ckpt / "hf").exists()
    assert (ckpt / "learner.pt").stat().st_size < 1 << 20  # adapters + their AdamW state, no model

    resumed = _learner(tok.pad_token_id)
    ray.get(resumed.load.remote(str(ckpt)))
    assert ray.get(resumed.weights_checksum.remote()) == ray.get(learner.weights_checksum.remote())
    batch, adv = _batch(engine, tok)
    ray.get([learner.train_step.remote(batch, adv), resumed.train_step.remote(batch, adv)])
    a, b = ray.get([learner.trainable_state.remote(), resumed.trainable_state.remote()])
    assert all(torch.equal(a[n], b[n]) for n in a)  # adapters, AdamW moments and schedule all came back
    ray.kill(resumed)

    out = export(ckpt, tmp_path / "exported")
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)  # plain transformers, no peft
    assert not any("lora" in n for n, _ in model.named_parameters())
    ray.get(learner.load.remote(str(ckpt)))  # back to the checkpoint's adapters
    merged = _named(ray.get(learner.export_weights.remote(1 << 40)))
    ours = dict(model.named_parameters())
    assert sorted(merged) == sorted(ours) and all(torch.equal(merged[n], ours[n].detach()) for n in merged)
    sync_weights(learner, [engine], 2, SyncConfig(bucket_mb=1.0))  # the engine serves the same merged model
    prompt = tok.encode("What is 2 + 2?")
    greedy = ray.get(engine.generate.remote([GenerationRequest(prompt_ids=prompt, n=1, max_new_tokens=6,
                                                                temperature=0.0)], seed=0))[0]
    with torch.no_grad():
        ids = model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False,
                             eos_token_id=None, pad_token_id=tok.pad_token_id)[0, len(prompt):].tolist()
    k = min(len(ids), len(greedy.token_ids))
    assert k > 0 and greedy.token_ids[:k] == ids[:k]
