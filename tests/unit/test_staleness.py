"""The async pipeline's pure pieces: dropping stale groups, the idle-time model, and the start-up checks
of trainer.max_staleness_steps / algorithm.rollout_correction."""
import importlib
import warnings

import pytest
import torch

from envs.tasks import Example
from rl.config import ConfigError, load_config
from rl.drivers.experience import StepData
from rl.drivers.pipeline import drop_stale
from rl.startup import check_correction
from rl.types import RolloutBatch


def _data(versions, groups):
    n = len(versions)
    batch = RolloutBatch.from_sequences([[1], [2], [3]], [[5]] * n, [[-0.5]] * n, groups, [1.0] * n, 0,
                                        weight_versions=versions)
    examples = [Example(f"k{g}", f"p{g}", "a") for g in range(3)]
    return StepData(batch, examples, [[1.0] * groups.count(g) for g in range(3)],
                    texts_per_prompt=[["t"] * groups.count(g) for g in range(3)])


def test_drop_stale_keeps_fresh_groups_and_counts_the_rest():
    # step 5, k = 2: versions >= 3 are fresh; group 1 has one sample of version 2 -> whole group dropped
    data, m = drop_stale(_data([5, 4, 3, 2, 4, 3], [0, 0, 1, 1, 2, 2]), step=5, max_staleness_steps=2)
    assert m == {"staleness/mean": pytest.approx((0 + 1 + 2 + 3 + 1 + 2) / 6), "staleness/max": 3,
                 "staleness/dropped_samples": 2}
    assert [e.key for e in data.examples] == ["k0", "k2"]
    assert data.batch.weight_versions.tolist() == [5, 4, 4, 3]
    assert data.batch.group_ids.tolist() == [0, 0, 1, 1]


def test_drop_stale_with_nothing_stale_returns_the_same_batch():
    src = _data([3, 3, 2, 2, 3, 3], [0, 0, 1, 1, 2, 2])
    data, m = drop_stale(src, step=3, max_staleness_steps=1)
    assert data is src and m["staleness/dropped_samples"] == 0 and m["staleness/max"] == 1


def test_drop_stale_needs_versions():
    src = _data([0] * 3, [0, 1, 2])
    src.batch.weight_versions = None
    with pytest.raises(ValueError, match="weight versions"):
        drop_stale(src, 0, 1)


def test_idle_time_model_hand_computed():
    predicted = importlib.import_module("rl.bench.async").predicted_speedup
    assert predicted(6.0, 4.0, 1.0) == pytest.approx(11 / 7)
    assert predicted(5.0, 5.0, 0.0) == pytest.approx(2.0)  # balanced phases, nothing else: 2x
    assert predicted(9.0, 1.0, 0.0) == pytest.approx(10 / 9)


def _cfg(*overrides):
    return load_config("recipes/tiny.yaml", list(overrides))


def test_correction_params_that_do_not_bind_name_the_key():
    with pytest.raises(ConfigError, match="algorithm.rollout_correction_params: icepop"):
        check_correction(_cfg("algorithm.rollout_correction=icepop", "algorithm.rollout_correction_params.cap=2"))
    with pytest.raises(ConfigError, match="algorithm.rollout_correction_params: tis: tis cap must be > 0"):
        check_correction(_cfg("algorithm.rollout_correction=tis", "algorithm.rollout_correction_params.cap=0"))
    with pytest.raises(ConfigError, match="algorithm.rollout_correction: .*icepop"):
        check_correction(_cfg("algorithm.rollout_correction=icepops"))


def test_async_without_correction_warns_and_colocated_async_is_refused():
    with pytest.warns(UserWarning, match="max_staleness_steps: 2 with algorithm.rollout_correction: none"):
        check_correction(_cfg("trainer.max_staleness_steps=2"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_correction(_cfg("trainer.max_staleness_steps=2", "algorithm.rollout_correction=tis"))
    with pytest.raises(ConfigError, match="placement.mode: colocated"):
        check_correction(_cfg("trainer.max_staleness_steps=1", "algorithm.rollout_correction=tis",
                              "placement.mode=colocated"))


def test_staleness_range_is_checked():
    with pytest.raises(ConfigError, match="trainer.max_staleness_steps"):
        _cfg("trainer.max_staleness_steps=-1")


def test_rollout_batch_carries_the_correction_fields_through_select_and_concat():
    b = RolloutBatch.from_sequences([[1], [2]], [[5], [6, 7]], [[-.1], [-.2, -.3]], [0, 1], [1., 0.], 0)
    b.old_logprobs, b.loss_weights = torch.ones(2, 2), torch.full((2, 2), 0.5)
    sel = b.select_groups([1])
    assert sel.old_logprobs.shape == (1, 2) and sel.loss_weights.tolist() == [[0.5, 0.5]]
    cat = RolloutBatch.concat([b, b], 0)
    assert cat.loss_weights.shape == (4, 2)


def test_async_bench_leaves_the_warmup_steps_out_of_the_timings():
    summarize = importlib.import_module("rl.bench.async").summarize_arm
    rows = [{"time/step_s": s, "time/generate_s": g, "time/reward_s": 0.5, "time/train_s": t,
             "tokens_generated": 64 * 10, "response_length/mean": 10.0, "reward/mean": 0.1}
            for s, g, t in [(100.0, 50.0, 40.0), (10.0, 4.5, 4.0), (10.0, 5.5, 4.0)]]
    out = summarize(rows, k=0, warmup_steps=1)
    assert out["timed_steps"] == 2 and out["samples_timed"] == 128
    assert out["samples_per_s"] == pytest.approx(128 / 20)
    assert out["learner_idle_frac"] == pytest.approx(1 - 8 / 20)
    assert out["engine_idle_frac"] == pytest.approx(1 - 11 / 20)
    assert out["phase_s_per_step"] == {"generate_and_reward": 5.5, "train": 4.0, "other": 0.5}
