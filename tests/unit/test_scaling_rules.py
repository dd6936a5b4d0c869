"""The two minibatch rules of `rl bench scaling`, its verdict on final returns, and the mid-run
evaluations (`control.eval_every_env_steps`) its curves are read from."""
from __future__ import annotations

import dataclasses
import json

import pytest

from rl.bench.scaling import curve, minibatch_samples, verdict


def test_co_scaling_keeps_the_minibatch_and_grows_the_count():
    # T = 2, 4 minibatches at N_min = 1024: minibatch 512 at every N under co-scaling
    assert minibatch_samples("co_scaling", 1024, 1024, 2, 4) == 512
    assert minibatch_samples("co_scaling", 1 << 20, 1024, 2, 4) == 512      # 4096 minibatches per epoch
    assert minibatch_samples("minibatch_grows", 1024, 1024, 2, 4) == 512    # the rules agree at N_min
    assert minibatch_samples("minibatch_grows", 1 << 20, 1024, 2, 4) == 524288
    with pytest.raises(ValueError, match="unknown minibatch rule"):
        minibatch_samples("sqrt", 1024, 1024, 2, 4)


def test_verdict_stalls_only_beyond_the_seed_spread():
    keeps = verdict({1024: [100.0, 120.0], 32768: [110.0, 130.0], 1 << 20: [105.0, 115.0]})
    assert keeps["trend"] == "keeps improving" and keeps["seed_spread"] == pytest.approx(50 / 3)
    assert keeps["final_eval_return"]["32768"] == {"mean": 120.0, "min": 110.0, "max": 130.0}
    stalls = verdict({1024: [500.0, 500.0], 32768: [300.0, 320.0], 1 << 20: [40.0, 50.0]})
    assert stalls["trend"] == "stalls" and stalls["falls_at"] == [32768, 1 << 20]


def test_curve_takes_the_eval_rows_and_leaves_eval_time_out():
    rows = [{"env_steps": 10.0, "time/wall_s": 2.0, "time/eval_s": 0.0},
            {"env_steps": 20.0, "time/wall_s": 5.0, "time/eval_s": 1.5, "eval/mean_return": 30.0}]
    assert curve(rows) == [(20.0, 3.5, 30.0)]


def test_mid_run_evaluations_every_env_steps(tmp_path):
    from rl.config import ControlConfig
    from rl.drivers.control_ppo import train_control
    from rl.run.logging import read_metrics
    control = dataclasses.replace(ControlConfig(), num_envs=16, num_steps=4, minibatch_samples=32, epochs=1,
                                  total_env_steps=640, eval_every_env_steps=256, eval_episodes=4,
                                  progress_bar=False, backend="numpy")
    final = train_control(control, 0, tmp_path / "run", wandb_mode="disabled")
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    evals = [r["env_steps"] for r in rows if "eval/mean_return" in r and "updates" not in r]
    assert evals == [256.0, 512.0]          # 64 samples per update: crossed after updates 4 and 8
    assert rows[-2]["time/eval_s"] > 0 and final["time/eval_s"] >= rows[-2]["time/eval_s"]
    json.dumps(final)
