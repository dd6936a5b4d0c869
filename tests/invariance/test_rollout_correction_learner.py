"""algorithm.rollout_correction inside the learner (rl/workers/correction.py), tiny Llama in-process:
a correction with nothing to correct gives the uncorrected gradient, and IcePop's dropped sample
contributes exactly what a zero advantage would (its tokens stay in the normaliser)."""
import dataclasses

import pytest
import torch

from learners import make_batch

from algorithms.advantages import grpo_advantages
from rl.workers.learner import Learner, LossSettings


def _learner(correction="none", **params):
    lrn = Learner("tiny-llama", seed=0, lr=1e-3, minibatch_samples=64, microbatch_samples=3,
                  loss=LossSettings(max_new_tokens=6, rollout_correction=correction, correction_params=params))
    lrn.max_grad_norm = float("inf")
    lrn.opt.step = lambda: None  # keep the gradient to compare it
    return lrn


def _grads(lrn, batch, adv):
    with pytest.warns(UserWarning, match="optimizer.step"):
        metrics = lrn.train_step(batch, adv)
    return [p.grad.clone() for p in lrn.model.parameters()], metrics


def _on_policy(tiny):
    """A batch whose engine log-probs are the learner's own (pi_b = pi_old exactly)."""
    model, tok = tiny
    batch, _ = make_batch(model, tok)
    return dataclasses.replace(batch, logprobs=_learner().proximal_logprobs(batch)), tok


def test_tis_with_nothing_to_correct_gives_the_uncorrected_gradient(tiny):
    batch, _ = _on_policy(tiny)
    adv = grpo_advantages(batch.rewards, batch.group_ids)
    plain, _ = _grads(_learner(), batch, adv)
    tis, m = _grads(_learner("tis", cap=2.0), batch, adv)
    assert m["mismatch/logprob_abs_diff"] == 0.0 and m["mismatch/is_weight_mean"] == 1.0
    for a, b in zip(plain, tis):
        assert torch.allclose(a, b, atol=1e-7, rtol=1e-5)
    assert any(g.abs().sum() > 0 for g in plain)


def test_icepop_drop_equals_a_zero_advantage(tiny):
    batch, _ = _on_policy(tiny)
    adv = grpo_advantages(batch.rewards, batch.group_ids)
    victim = int(torch.nonzero(adv != 0)[0])
    engine = batch.logprobs.clone()
    engine[victim] += 3.0 * batch.train_mask[victim]  # ratio e^-3 < 0.5 on each of its tokens: out of the band
    shifted = dataclasses.replace(batch, logprobs=engine)
    dropped, m = _grads(_learner("icepop", low=0.5, high=5.0), shifted, adv)
    n_victim, n_all = int(batch.train_mask[victim].sum()), int(batch.train_mask.sum())
    assert m["mismatch/masked_frac"] == pytest.approx(n_victim / n_all)
    zeroed = adv.clone()
    zeroed[victim] = 0.0
    reference, _ = _grads(_learner(), batch, zeroed)
    for a, b in zip(dropped, reference):
        assert torch.allclose(a, b, atol=1e-7, rtol=1e-5)
