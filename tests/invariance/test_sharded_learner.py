"""Sharded learners == one learner: 2 ranks (FSDP2 or DDP over gloo, real Ray actors) and an in-process
`Learner` take 3 optimizer steps on the same GRPO batch; every gathered parameter and every metric
(grad_norm included: an averaged instead of summed gradient would halve it, and AdamW alone would
hide that) agree to float32 tolerance. Then a checkpoint round trip and the HF folder."""
import pytest
import torch

from learners import make_batch

from algorithms.advantages import grpo_advantages
from rl.types import RolloutBatch
from rl.workers.learner import Learner, LossSettings
from rollout.weight_sync import bucket_tensors

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

# minibatch_samples=5 cuts the 13 samples (groups of 3, 1, 4, 2, 2, 1) into 3 minibatches:
# [3, 1] -> one group per rank; [4] -> rank 1 idle (a dummy pass); [2, 2, 1] -> two groups and one
SETTINGS = dict(seed=0, lr=1e-4, warmup_steps=2, minibatch_samples=5, loss=LossSettings(max_new_tokens=6))
TOL = dict(rtol=1e-5, atol=1e-6)
BUCKET_BYTES = 1 << 20


@pytest.fixture(scope="module")
def batch_adv(tiny):
    model, tok = tiny
    a, _ = make_batch(model, tok)
    b, _ = make_batch(model, tok, n_per_group=(2, 2, 1))
    batch = RolloutBatch.concat([a, b], tok.pad_token_id)
    return batch, grpo_advantages(batch.rewards, batch.group_ids)


def params(learner) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in learner.model.named_parameters()}


@pytest.fixture(scope="module")
def reference(batch_adv):
    """The single learner: weights before and after each of 3 train_step calls, and their metrics."""
    batch, adv = batch_adv
    out = {}
    for name, settings, calls in (("3 minibatches", SETTINGS, 1),
                                  ("1 minibatch x 3 calls", {**SETTINGS, "minibatch_samples": 64}, 3)):
        learner = Learner("tiny-llama", **settings)
        weights, metrics = [params(learner)], []
        for _ in range(calls):
            metrics.append(learner.train_step(batch, adv))
            weights.append(params(learner))
        out[name] = weights, metrics
    return out


def gathered(buckets) -> dict[str, torch.Tensor]:
    return {n: t.clone() for b in buckets for n, t in bucket_tensors(b)}


def assert_same_weights(got: dict, want: dict, start: dict) -> str:
    """Every parameter within TOL; training moved them far beyond it. -> the differences, in words."""
    assert got.keys() == want.keys()
    abs_diff = rel_diff = used = 0.0
    for name in want:
        torch.testing.assert_close(got[name], want[name], **TOL, msg=name)
        d, w = (got[name] - want[name]).abs(), want[name].abs()
        abs_diff = max(abs_diff, float(d.max()))
        rel_diff = max(rel_diff, float((d / w)[w >= 1e-2].max()))
        used = max(used, float((d / (TOL["atol"] + TOL["rtol"] * w)).max()))
    moved = max(float((want[n] - start[n]).abs().max()) for n in want)
    assert moved > 100 * TOL["atol"]
    return f"max |diff| {abs_diff:.1e}, max |diff|/|w| (|w| >= 1e-2) {rel_diff:.1e}, {used:.0%} of the tolerance"


def assert_same_metrics(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-5, abs=1e-7), k


def group(strategy="fsdp", **kw):
    from rl.workers.learner_group import LearnerGroup
    return LearnerGroup("tiny-llama", world_size=2, strategy=strategy, num_cpus=0.5, timeout_s=120,
                        num_threads=1, **{**SETTINGS, **kw})


@pytest.mark.parametrize("strategy, microbatch_samples", [("fsdp", 16), ("fsdp", 1), ("ddp", 16)])
def test_two_ranks_equal_one_learner(ray_local, batch_adv, reference, strategy, microbatch_samples):
    batch, adv = batch_adv
    (start, want), [want_metrics] = reference["3 minibatches"]
    with group(strategy, microbatch_samples=microbatch_samples) as g:
        metrics = g.train_step(batch, adv)
        got = gathered(g.export_full(BUCKET_BYTES))
    assert metrics["optimizer_steps"] == 3
    assert_same_metrics(metrics, want_metrics)
    worst = assert_same_weights(got, want, start)
    print(f"\n{strategy} microbatch {microbatch_samples}: {worst}")


def test_checkpoint_round_trip_and_hf_folder(ray_local, batch_adv, reference, tmp_path):
    from transformers import AutoModelForCausalLM

    batch, adv = batch_adv
    weights, metrics = reference["1 minibatch x 3 calls"]
    ckpt = str(tmp_path / "ckpt")
    with group(minibatch_samples=64) as g:
        for _ in range(2):
            g.train_step(batch, adv)
        (tmp_path / "ckpt").mkdir()
        g.save(ckpt)  # dcp/, rank{r}.pt and hf/
        after_two = gathered(g.export_full(BUCKET_BYTES))
        assert_same_metrics(g.train_step(batch, adv), metrics[2])
        uninterrupted = gathered(g.export_full(BUCKET_BYTES))
    with group(minibatch_samples=64) as g:
        g.load(ckpt)
        resumed_metrics = g.train_step(batch, adv)
        resumed = gathered(g.export_full(BUCKET_BYTES))
    assert_same_metrics(resumed_metrics, metrics[2])  # lr included: the warmup schedule came back
    for name in uninterrupted:  # same shards, same collectives, same restored state: bit for bit
        assert torch.equal(resumed[name], uninterrupted[name]), name
    worst = assert_same_weights(resumed, weights[3], weights[0])
    single = Learner("tiny-llama", **{**SETTINGS, "minibatch_samples": 64})  # 2 ranks -> 1 process: DCP reshards
    with pytest.warns(UserWarning, match="saved by 2 learner ranks and is loaded by 1"):
        single.load(ckpt)
    assert_same_metrics(single.train_step(batch, adv), metrics[2])
    assert_same_weights(params(single), weights[3], weights[0])
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path / "ckpt" / "hf"), dtype=torch.float32)
    hf_params = {n: p.detach() for n, p in hf.named_parameters()}
    assert hf_params.keys() == after_two.keys()
    for name, t in after_two.items():
        assert torch.equal(hf_params[name], t), name
    worst_hf = assert_same_weights(hf_params, weights[2], weights[0])
    print(f"\ncheckpoint resume: {worst}; hf folder: {worst_hf}")
