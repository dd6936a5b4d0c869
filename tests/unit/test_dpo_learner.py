"""The DPO learner in-process on the tiny model: summed completion log-probs match a plain full-sequence
forward, the first step's loss is log 2, micro-batching does not change the update, and steps raise
the margin."""
import math

import pytest
import torch

from rl.data.prefs import PreferencePair, encode_pairs
from rl.workers.dpo_learner import DPOLearner
from rl.workers.models import load_tokenizer

PAIRS = [PreferencePair(f"What is {a} + {b}? Reply with only the final number.", str(a + b), r)
         for a, b, r in [(1, 2, "4"), (10, 5, "The answer is 14."), (7, 7, "77"), (3, 9, "11")]]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny-llama")


@pytest.fixture(scope="module")
def enc(tok):
    return encode_pairs(tok, PAIRS, max_length_tokens=128)


def learner(tok, **kw):
    return DPOLearner("tiny-llama", seed=0, lr=kw.pop("lr", 1e-3), num_threads=1, pad_id=tok.pad_token_id, **kw)


def full_forward_logp(model, prompt: list[int], completion: list[int]) -> float:
    ids = torch.tensor([prompt + completion])
    logits = model(input_ids=ids).logits[0].float()
    logp = torch.log_softmax(logits[len(prompt) - 1:-1], -1)
    return float(logp.gather(1, torch.tensor(completion).unsqueeze(1)).sum())


def test_sequence_logps_match_a_full_forward(tok, enc):
    lrn = learner(tok)
    with torch.no_grad():
        chosen, rejected = lrn.sequence_logps(enc)
        for i in range(len(enc)):
            assert chosen[i].item() == pytest.approx(full_forward_logp(lrn.model, enc.prompt_ids[i], enc.chosen_ids[i]), abs=1e-3)
            assert rejected[i].item() == pytest.approx(full_forward_logp(lrn.model, enc.prompt_ids[i], enc.rejected_ids[i]), abs=1e-3)


def test_first_step_loss_is_log2_and_microbatching_does_not_change_the_update(tok, enc):
    a, b = learner(tok, microbatch_pairs=1), learner(tok, microbatch_pairs=4)
    ref = a.reference_logps(enc)
    assert ref[0] == pytest.approx(b.reference_logps(enc)[0], abs=1e-5)
    ma, mb = a.dpo_step(enc, *ref), b.dpo_step(enc, *ref)
    assert ma["loss"] == pytest.approx(math.log(2), abs=1e-6) and ma["margin"] == pytest.approx(0, abs=1e-6)
    assert ma["reward_accuracy"] == 0.0 and ma["grad_norm"] > 0
    assert ma["grad_norm"] == pytest.approx(mb["grad_norm"], rel=1e-4)
    # The invariance itself: the accumulated gradient (what AdamW stepped on; .grad outlives the step)
    # is the same for 4 x 1 and 1 x 4 pairs up to float32 rounding (the two splits pad differently).
    # In float64 the two agree to 1e-17 and the parameters to 1e-14: no accumulation error.
    group = a.opt.param_groups[0]
    lr, eps, f32 = group["lr"], group["eps"], torch.finfo(torch.float32).eps
    for (name, pa), pb in zip(a.model.named_parameters(), b.model.parameters()):
        ga, gb = pa.grad, pb.grad
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-7, msg=name)
        # Parameters: AdamW's first step is theta -= lr * g / (|g| + eps) (m_hat = g, v_hat = g^2),
        # whose slope in g is lr * eps / (|g| + eps)^2 <= lr / eps = 1e5: a rounding difference
        # |ga - gb| ~ 4e-11 on an entry with |g| ~ eps moves it by ~1e-6. So bound each entry by
        # lr * |ga - gb| / eps plus the float32 rounding of the update itself, not by a flat atol.
        bound = lr * (ga - gb).abs() / eps + 4 * f32 * (pa.detach().abs() + lr)
        assert ((pa - pb).abs() <= bound).all(), name


def test_steps_raise_the_margin_and_the_held_out_metrics_read_them(tok, enc):
    lrn = learner(tok, microbatch_pairs=2)
    ref = lrn.reference_logps(enc)
    before = lrn.eval_pairs(enc, *ref)
    assert before["eval_pairs/loss"] == pytest.approx(math.log(2), abs=1e-6)
    for _ in range(5):
        m = lrn.dpo_step(enc, *ref)
    after = lrn.eval_pairs(enc, *ref)
    assert m["reward_accuracy"] == 1.0 and m["margin"] > 0
    assert after["eval_pairs/loss"] < before["eval_pairs/loss"] and after["eval_pairs/reward_accuracy"] == 1.0
    assert after["eval_pairs/margin"] > 0 and after["eval_pairs/reward/chosen"] > after["eval_pairs/reward/rejected"]
