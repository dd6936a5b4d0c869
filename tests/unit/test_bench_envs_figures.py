"""Pure helpers of `rl bench envs`: per-update rates from wall clocks, update counts, MLP FLOPs."""
import pytest

from rl.bench.envs import measured_updates, mlp_fwd_bwd_flops, steady_rates


def test_steady_rates_drop_warmup_and_use_deltas():
    # updates end at 5.0 (warm-up: compilation), 6.0, 6.5, 7.5 s; 100 samples each
    r = steady_rates([5.0, 6.0, 6.5, 7.5], 100, warmup=1)
    assert r == {"median": 100.0, "min": 100.0, "max": 200.0, "updates": 3}
    r2 = steady_rates([5.0, 6.0, 6.5, 7.5], 100, warmup=2)
    assert r2["updates"] == 2 and r2["min"] == 100.0 and r2["max"] == 200.0


def test_steady_rates_refuse_nothing_to_measure():
    with pytest.raises(ValueError, match="warmup must be >= 1"):
        steady_rates([1.0, 2.0], 10, warmup=0)
    with pytest.raises(ValueError, match="none to measure"):
        steady_rates([1.0], 10, warmup=1)


def test_measured_updates_clamped():
    assert measured_updates(4096) == 50
    assert measured_updates(1 << 18) == 16
    assert measured_updates(1 << 22) == 3
    assert measured_updates(100, target_samples=250, lo=1, hi=10) == 3


def test_mlp_fwd_bwd_flops_by_hand():
    assert mlp_fwd_bwd_flops([4, 64, 2]) == 6 * (4 * 64 + 64 * 2) == 2304
    assert mlp_fwd_bwd_flops([4, 64, 64, 1]) == 6 * (256 + 4096 + 64)


def test_anchor_ppo_and_roofline_run_tiny():
    from rl.bench.envs import bench_anchor_ppo, bench_fwd_bwd
    anchor = bench_anchor_ppo(16, warmup=1, measured=2)
    assert anchor["sps"]["updates"] == 2 and anchor["sps"]["min"] > 0
    roof = bench_fwd_bwd(64, min_s=0.0)
    assert roof["minibatch_samples"] == 64 and roof["sps"] > 0
    assert roof["flops_per_sample"] == mlp_fwd_bwd_flops([4, 64, 64, 2]) + mlp_fwd_bwd_flops([4, 64, 64, 1])
