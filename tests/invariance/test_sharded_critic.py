"""The PPO critic sharded like the policy == one critic: 2 ranks (FSDP2 or DDP over gloo, real Ray
actors) and an in-process `Critic` score the same batch, take 3 optimizer steps (3 minibatches, one
of them leaving a rank idle) on the same targets, and agree on values, metrics (grad_norm included)
and every gathered parameter to float32 tolerance."""
import pytest
import torch

from learners import make_batch

from rl.types import RolloutBatch
from rl.workers.critic import Critic
from rollout.weight_sync import bucket_tensors

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]
SETTINGS = dict(seed=0, lr=1e-3, minibatch_samples=5, microbatch_samples=2, max_new_tokens=6)


@pytest.mark.parametrize("strategy", ["fsdp", "ddp"])
def test_two_ranks_equal_one_critic(ray_local, tiny, strategy):
    from rl.workers.learner_group import CriticGroup
    model, tok = tiny
    a, _ = make_batch(model, tok)
    b, _ = make_batch(model, tok, n_per_group=(2, 2, 1))
    batch = RolloutBatch.concat([a, b], tok.pad_token_id)  # groups of 3, 1, 4, 2, 2, 1 samples
    single = Critic("tiny-llama", pad_id=tok.pad_token_id, **SETTINGS)
    start = {n: p.detach().clone() for n, p in single.model.named_parameters()}
    values = single.values(batch)
    returns = values + torch.linspace(-1, 1, values.shape[1]) * batch.completion_mask
    want = single.train_step(batch, values, returns)
    want_after = single.values(batch)
    with CriticGroup("tiny-llama", world_size=2, strategy=strategy, num_cpus=0.5, timeout_s=120, num_threads=1,
                     pad_id=tok.pad_token_id, **SETTINGS) as g:
        got_values = g.values_collect(g.values_pending(batch))
        import ray
        got = ray.get(g.train_pending(batch, values, returns))
        got_after = g.values_collect(g.values_pending(batch))
        weights = {n: t.clone() for bk in g.export_full(1 << 20) for n, t in bucket_tensors(bk)}
    torch.testing.assert_close(got_values, values, rtol=1e-5, atol=1e-6)
    assert got[0] == got[1]  # every rank reports the whole batch's numbers
    assert got[0].keys() == want.keys()
    for k in want:
        assert got[0][k] == pytest.approx(want[k], rel=1e-4, abs=1e-6), k
    torch.testing.assert_close(got_after, want_after, rtol=1e-4, atol=1e-5)
    moved = 0.0
    for name, p in single.model.named_parameters():
        torch.testing.assert_close(weights[name], p.detach(), rtol=1e-5, atol=1e-6, msg=name)
        moved = max(moved, float((p.detach() - start[name]).abs().max()))
    assert moved > 1e-4
