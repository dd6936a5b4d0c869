"""Sharded DPO == one DPO learner: 2 FSDP2 ranks over gloo (real Ray actors) and an in-process
`DPOLearner` take 3 optimizer steps on the same pairs; reference log-probs, every metric (grad_norm
included) and every gathered parameter agree to float32 tolerance. 3 pairs with 1 pair per
micro-batch leave one rank a micro-batch short every step (its dummy pass keeps the collectives in
step); 4 pairs in one micro-batch per rank is the plain split."""
import pytest
import torch
from learners import learner

from rollout.weight_sync import bucket_tensors

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]
SETTINGS = dict(seed=0, lr=1e-3, warmup_steps=2, beta=0.1)


@pytest.mark.parametrize("num_pairs, microbatch_pairs", [(3, 1), (4, 8)])
def test_two_fsdp_ranks_equal_one_dpo_learner(ray_local, tok, enc, num_pairs, microbatch_pairs):
    from rl.workers.learner_group import DPOGroup
    pairs = enc.select(list(range(num_pairs)))
    single = learner(tok, microbatch_pairs=microbatch_pairs, **{k: v for k, v in SETTINGS.items() if k != "seed"})
    start = {n: p.detach().clone() for n, p in single.model.named_parameters()}
    ref = single.reference_logps(pairs)
    want = [single.dpo_step(pairs, *ref) for _ in range(3)]
    want_eval = single.eval_pairs(pairs, *ref)
    with DPOGroup("tiny-llama", world_size=2, num_cpus=0.5, timeout_s=120, num_threads=1,
                  microbatch_pairs=microbatch_pairs, pad_id=tok.pad_token_id, **SETTINGS) as g:
        got_ref = g.reference_logps(pairs)
        got = [g.dpo_step(pairs, *ref) for _ in range(3)]
        got_eval = g.eval_pairs(pairs, *ref)
        weights = {n: t.clone() for b in g.export_weights(1 << 20) for n, t in bucket_tensors(b)}
    assert got_ref[0] == pytest.approx(ref[0], rel=1e-5) and got_ref[1] == pytest.approx(ref[1], rel=1e-5)
    for w, m in zip(want, got):
        assert m.keys() == w.keys()
        for k in w:
            assert m[k] == pytest.approx(w[k], rel=1e-4, abs=1e-6), k
    for k in want_eval:
        assert got_eval[k] == pytest.approx(want_eval[k], rel=1e-4, abs=1e-6), k
    moved = 0.0
    for name, p in single.model.named_parameters():
        torch.testing.assert_close(weights[name], p.detach(), rtol=1e-5, atol=1e-6, msg=name)
        moved = max(moved, float((p.detach() - start[name]).abs().max()))
    assert moved > 1e-4  # training moved the weights far beyond the tolerance
