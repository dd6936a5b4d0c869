"""Micro-batch invariance: splitting a step's samples (or DPO pairs) into micro-batches of any size
gives the same gradient as one pass, because the loss normalisers are the step's global counts."""
import math

import pytest
import torch

from learners import learner, make_batch

from rl.workers.learner import Learner, LossSettings


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
