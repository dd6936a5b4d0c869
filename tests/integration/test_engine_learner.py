"""HF engine and learner on the tiny random Llama (SmolLM2 tokenizer), in-process."""
import copy

import pytest
import torch

from learners import make_batch, prompt_ids

from algorithms.registry import UnknownNameError
from rl.workers.learner import Learner, LossSettings, completion_logprobs
from rollout.hf_engine import HFEngine
from rollout.types import GenerationRequest
from rollout.weight_sync import apply_bucket, pack_buckets, weights_checksum


def test_per_request_n_and_max_new_tokens(tiny):
    model, tok = tiny
    eng = HFEngine(model, tok)
    reqs = [GenerationRequest(prompt_ids=prompt_ids(tok, "1+1?"), n=3, max_new_tokens=5, request_id=7),
            GenerationRequest(prompt_ids=prompt_ids(tok, "What is 12 + 30?"), n=1, max_new_tokens=9, request_id=8)]
    out = eng.generate(reqs, seed=0)
    assert [c.request_id for c in out] == [7, 7, 7, 8]
    assert all(len(c.token_ids) <= 5 for c in out[:3]) and len(out[3].token_ids) <= 9
    for c in out:
        assert len(c.logprobs) == len(c.token_ids) and all(lp <= 0 for lp in c.logprobs)
        assert c.finish_reason in ("stop", "length")


def test_shared_prefill_matches_replicated_prompts(tiny):
    model, tok = tiny
    reqs = [GenerationRequest(prompt_ids=prompt_ids(tok, t), n=2, max_new_tokens=6, temperature=0.0, request_id=i)
            for i, t in enumerate(["a", "What is 3 + 4? Reply with a number."])]
    shared = HFEngine(model, tok, share_prefill=True).generate(reqs, seed=0)
    plain = HFEngine(model, tok, share_prefill=False).generate(reqs, seed=0)
    assert [c.token_ids for c in shared] == [c.token_ids for c in plain]
    for a, b in zip(shared, plain):
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4)


def test_same_seed_same_samples(tiny):
    model, tok = tiny
    reqs = [GenerationRequest(prompt_ids=prompt_ids(tok, "hi"), n=4, max_new_tokens=6)]
    eng = HFEngine(model, tok)
    assert [c.token_ids for c in eng.generate(reqs, seed=3)] == [c.token_ids for c in eng.generate(reqs, seed=3)]
    assert [c.token_ids for c in eng.generate(reqs, seed=3)] != [c.token_ids for c in eng.generate(reqs, seed=4)]


def test_stop_string_ends_sample(tiny):
    model, tok = tiny
    eng = HFEngine(model, tok)
    req = GenerationRequest(prompt_ids=prompt_ids(tok, "x"), n=1, max_new_tokens=12, temperature=1.0)
    free = eng.generate([req], seed=0)[0]  # same seed below: the same draws up to the stop
    visible = [ch for ch in free.text if not ch.isspace()]
    assert visible, "a sampled completion of the tiny model should print something"
    stop = visible[len(visible) // 2]
    k_stop = next(k for k in range(1, len(free.token_ids) + 1)
                  if stop in tok.decode(free.token_ids[:k], skip_special_tokens=True))
    req.stop = [stop]
    stopped = eng.generate([req], seed=0)[0]
    assert stopped.finish_reason == "stop" and stopped.token_ids == free.token_ids[:k_stop]


def test_engine_logprobs_match_learner_forward(tiny):
    model, tok = tiny
    batch, _ = make_batch(model, tok, temperature=0.7)
    with torch.no_grad():
        lp = completion_logprobs(model, batch.prompt_ids, batch.completion_ids, batch.completion_mask,
                                 batch.group_ids, 0.7, tok.pad_token_id)
    m = batch.completion_mask.bool()
    assert torch.allclose(lp[m], batch.logprobs[m], atol=1e-4)


def test_shared_prefix_forward_equals_full_sequence_forward(tiny):
    model, tok = tiny
    batch, _ = make_batch(model, tok)
    with torch.no_grad():
        shared = completion_logprobs(model, batch.prompt_ids, batch.completion_ids, batch.completion_mask,
                                     batch.group_ids, 1.0, tok.pad_token_id)
        for i in range(batch.num_samples):
            p = batch.prompt_ids[int(batch.group_ids[i])]
            L = int(batch.completion_mask[i].sum())
            seq = torch.tensor([p + batch.completion_ids[i, :L].tolist()])
            logits = model(input_ids=seq).logits[0, len(p) - 1:-1]
            ref = torch.log_softmax(logits, -1).gather(1, seq[0, len(p):, None]).squeeze(1)
            assert torch.allclose(shared[i, :L], ref, atol=1e-4)


def test_unknown_policy_loss_is_an_error_listing_the_names():
    with pytest.raises(UnknownNameError, match="valid: .*ppo"):
        Learner("tiny-llama", loss=LossSettings(policy_loss="ppo2"))


def test_weight_buckets_roundtrip_bit_exact(tiny):
    model, _ = tiny
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    buckets = pack_buckets(model.named_parameters(), bucket_bytes=256 << 10)
    assert len(buckets) > 1
    params = dict(other.named_parameters())
    for b in buckets:
        apply_bucket(params, b, verify=True)
    assert weights_checksum(other.parameters()) == weights_checksum(model.parameters())
    bad = buckets[0]
    bad.flat = bad.flat.copy()
    bad.flat[0] += 1
    with pytest.raises(RuntimeError, match="checksum"):
        apply_bucket(params, bad, verify=True)




def test_bf16_compute_with_fp32_masters_keeps_small_updates(tiny):
    """model.dtype bf16 is the compute dtype; the weights and AdamW state stay fp32, so an update far
    below bf16's resolution (~|w|/256) still moves the weights. With bf16 masters it is rounded away."""
    model, tok = tiny
    batch, _ = make_batch(model, tok)
    from algorithms.advantages import grpo_advantages
    adv = grpo_advantages(batch.rewards, batch.group_ids)

    def moved_share(master):
        lrn = Learner("tiny-llama", dtype="bfloat16", master_dtype=master, seed=0, lr=1e-6, minibatch_samples=64,
                      microbatch_samples=64, loss=LossSettings(max_new_tokens=6))
        before = [p.detach().clone() for p in lrn.model.parameters()]
        assert {p.dtype for p in lrn.model.parameters()} == {getattr(torch, master)}
        metrics = lrn.train_step(batch, adv)
        assert metrics["grad_norm"] > 0
        changed = sum(int((p.detach() != b).sum()) for p, b in zip(lrn.model.parameters(), before))
        return changed / sum(b.numel() for b in before)
    assert moved_share("float32") > 0.5  # AdamW moves (almost) every weight by ~lr
    assert moved_share("bfloat16") < 0.05  # lr 1e-6 on weights ~1e-2: below bf16's spacing


def test_checkpoint_hf_folder_loads_and_generates_like_the_learner(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    from rl.tools.export import export
    model, tok = tiny
    batch, _ = make_batch(model, tok)
    lrn = Learner("tiny-llama", seed=0, lr=1e-2, minibatch_samples=64, microbatch_samples=64)
    lrn.train_step(batch, batch.rewards - batch.rewards.mean())
    lrn.save(str(tmp_path))  # learner.pt + hf/
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    for (name, a), b in zip(lrn.model.named_parameters(), loaded.parameters()):
        assert torch.equal(a.detach(), b.detach()), name
    reqs = [GenerationRequest(prompt_ids=prompt_ids(tok, t), n=1, max_new_tokens=8, temperature=0.0, request_id=i)
            for i, t in enumerate(["What is 2 + 3?", "hello"])]
    ours = HFEngine(lrn.model, tok).generate(reqs, seed=0)
    theirs = HFEngine(loaded, tok).generate(reqs, seed=0)
    assert [c.token_ids for c in ours] == [c.token_ids for c in theirs]
    assert (export(tmp_path, tmp_path / "exported") / "model.safetensors").exists()
