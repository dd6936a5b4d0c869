"""trainer.gradient_checkpointing: the learner recomputes each layer in backward and, since a
checkpointed model keeps no KV cache, runs prompt + completion per sample instead of sharing the
prefill. Same log-probs, metrics and updated weights as the default path (float32 tolerance)."""
import pytest
import torch

from learners import make_batch

from algorithms.advantages import grpo_advantages
from rl.workers.learner import Learner, LossSettings, completion_logprobs

SETTINGS = dict(seed=0, lr=1e-3, minibatch_samples=4, microbatch_samples=2, loss=LossSettings(max_new_tokens=6))


def test_checkpointed_learner_trains_like_the_default(tiny):
    model, tok = tiny
    batch, _ = make_batch(model, tok)
    adv = grpo_advantages(batch.rewards, batch.group_ids)
    plain, ckpt = Learner("tiny-llama", **SETTINGS), Learner("tiny-llama", gradient_checkpointing=True, **SETTINGS)
    assert ckpt.model.is_gradient_checkpointing and not plain.model.is_gradient_checkpointing
    args = (batch.prompt_ids, batch.completion_ids, batch.completion_mask, batch.group_ids, 1.0, tok.pad_token_id)
    torch.testing.assert_close(completion_logprobs(ckpt.model, *args) * batch.completion_mask,
                               completion_logprobs(plain.model, *args) * batch.completion_mask, rtol=1e-5, atol=1e-5)
    for _ in range(2):
        a, b = plain.train_step(batch, adv), ckpt.train_step(batch, adv)
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6), k
    for (name, p), q in zip(plain.model.named_parameters(), ckpt.model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=name)
    assert any(not torch.equal(p, q) for p, q in zip(plain.model.parameters(), Learner("tiny-llama", **SETTINGS).model.parameters()))
