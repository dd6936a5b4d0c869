"""HF engine and learner on the tiny random Llama (SmolLM2 tokenizer), in-process."""
import copy

import pytest
import torch

from algorithms.registry import UnknownNameError
from rl.types import RolloutBatch, index_chunks, right_pad
from rl.workers.learner import Learner, LossSettings, completion_logprobs
from rl.workers.models import load_policy
from rollout.hf_engine import HFEngine, left_pad
from rollout.types import GenerationRequest
from rollout.weight_sync import apply_bucket, pack_buckets, params_checksum


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_policy("tiny-llama", seed=0)


def prompt_ids(tok, text):
    enc = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True)
    return list(enc["input_ids"])


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


def make_batch(model, tok, n_per_group=(3, 1, 4), T=6, temperature=1.0):
    eng = HFEngine(model, tok)
    texts = ["What is 1 + 2?", "hello there", "What is 45 + 67? Reply with only the final number."]
    reqs = [GenerationRequest(prompt_ids=prompt_ids(tok, t), n=n, max_new_tokens=T, temperature=temperature,
                              request_id=i) for i, (t, n) in enumerate(zip(texts, n_per_group))]
    comps = eng.generate(reqs, seed=1)
    from rl.drivers.experience import to_batch
    rewards = torch.arange(len(comps), dtype=torch.float32) % 3
    return to_batch(reqs, comps, [c.request_id for c in comps], rewards, tok.pad_token_id), comps


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


def _batch(group_ids: list[int]) -> RolloutBatch:
    n = len(group_ids)
    return RolloutBatch.from_sequences([[g] for g in range(max(group_ids) + 1)], [[10 + i] for i in range(n)],
                                       [[-0.1 * i] for i in range(n)], group_ids, list(range(n)), pad_id=0)


def test_chunks_pack_consecutive_whole_groups():
    batch = _batch([0, 0, 0, 1, 2, 2, 2, 2])
    chunks = batch.chunks(4)
    # groups 0 (3) + 1 (1) fill 4; group 2 (4) alone
    assert [sub.group_ids.tolist() for sub, _ in chunks] == [[0, 0, 0, 1], [0, 0, 0, 0]]
    assert [rows.tolist() for _, rows in chunks] == [[True] * 4 + [False] * 4, [False] * 4 + [True] * 4]
    sub, rows = chunks[1]
    assert sub.prompt_ids == [[2]] and sub.completion_ids[:, 0].tolist() == batch.completion_ids[rows, 0].tolist()
    # a group bigger than max_samples stays whole
    assert [rows.sum().item() for _, rows in _batch([0, 0, 1, 1]).chunks(1)] == [2, 2]


def test_index_chunks_and_right_pad():
    assert index_chunks(5, 2) == [[0, 1], [2, 3], [4]] and index_chunks(0, 3) == []
    with pytest.raises(ValueError, match=">= 1"):
        index_chunks(3, 0)
    ids, mask = right_pad([[5], [6, 7], []], 2, torch.long)
    assert ids.tolist() == [[5, 2], [6, 7], [2, 2]] and mask.tolist() == [[1, 0], [1, 1], [0, 0]]
    vals, _ = right_pad([[0.5]], 0.0, torch.float32, width=3)
    assert vals.tolist() == [[0.5, 0.0, 0.0]] and vals.dtype == torch.float32
    with pytest.raises(ValueError, match="width"):
        right_pad([[1, 2]], 0, torch.long, width=1)
    with pytest.raises(ValueError, match="logprobs"):
        RolloutBatch.from_sequences([[1]], [[5, 6]], [[-0.1]], [0], [1.0], pad_id=0)


def test_unknown_policy_loss_is_an_error_listing_the_names():
    with pytest.raises(UnknownNameError, match="valid: .*ppo"):
        Learner("tiny-llama", loss=LossSettings(policy_loss="ppo2"))


def grads_after_one_update(model_name, batch, adv, microbatch):
    learner = Learner(model_name, seed=0, lr=1e-3, minibatch_samples=64, microbatch_samples=microbatch,
                      loss=LossSettings(max_new_tokens=6))
    learner.max_grad_norm = float("inf")
    learner.opt.step = lambda: None  # keep the gradient to compare it
    with pytest.warns(UserWarning, match="optimizer.step"):  # the scheduler notices the patch
        learner.train_step(batch, adv)
    return [p.grad.clone() for p in learner.model.parameters()]


def test_microbatch_split_gives_the_same_gradient(tiny):
    model, tok = tiny
    batch, _ = make_batch(model, tok)
    from algorithms.advantages import grpo_advantages
    adv = grpo_advantages(batch.rewards, batch.group_ids)
    whole = grads_after_one_update("tiny-llama", batch, adv, microbatch=64)
    split = grads_after_one_update("tiny-llama", batch, adv, microbatch=1)
    for a, b in zip(whole, split):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
    assert any(g.abs().sum() > 0 for g in whole)


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
    assert params_checksum(other.named_parameters()) == params_checksum(model.named_parameters())
    bad = buckets[0]
    bad.flat = bad.flat.copy()
    bad.flat[0] += 1
    with pytest.raises(RuntimeError, match="checksum"):
        apply_bucket(params, bad, verify=True)


def test_left_pad():
    ids, mask = left_pad([[5, 6], [7]], pad_id=0)
    assert ids.tolist() == [[5, 6], [0, 7]] and mask.tolist() == [[1, 1], [0, 1]]


def test_inverse_cdf_sampling_matches_the_distribution():
    from rollout.hf_engine import sample
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3]]).repeat(20000, 1)
    gen = torch.Generator().manual_seed(0)
    draws = sample(probs.log(), torch.ones(20000), gen)
    freq = torch.bincount(draws, minlength=4).float() / 20000
    assert freq[1] == 0 and torch.allclose(freq, probs[0], atol=0.015)
    nucleus = sample(probs.log(), torch.full((20000,), 0.65), gen)  # keeps 0.6 and 0.3 (0.6 < 0.65)
    assert set(nucleus.tolist()) == {2, 3}
