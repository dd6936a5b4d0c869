"""The DPO learner in-process on the tiny model: summed completion log-probs match a plain full-sequence
forward, the first step's loss is log 2, micro-batching does not change the update, and steps raise
the margin (micro-batch invariance: tests/invariance/test_microbatch.py)."""
import math

import pytest
import torch
from learners import learner


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
