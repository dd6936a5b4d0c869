"""Done-when checks of issue 3 that take real time: PPO solves CartPole-v1 from the shipped
recipe within 2 minutes, and PPO runs 3 updates with 1,048,576 envs under 12 GB peak RAM."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from rl.config import load_config
from rl.drivers.control_ppo import train_control

pytestmark = pytest.mark.slow


def test_ppo_cartpole_recipe_solves(tmp_path):
    full = load_config("recipes/ppo_cartpole.yaml")
    cfg, seed = full.control, full.run.seed
    cfg.progress_bar = False
    t0 = time.perf_counter()
    out = train_control(cfg, seed, tmp_path, wandb_mode="disabled")
    wall = time.perf_counter() - t0
    assert out["eval/episodes"] == 100
    assert out["eval/mean_return"] >= 475, out
    assert wall < 120, f"took {wall:.0f} s"


_SCRIPT = """
import json, resource, sys, pathlib
from rl.config import ControlConfig
from rl.drivers.control_ppo import train_control
cfg = ControlConfig(num_envs=1_048_576, num_steps=2, minibatch_samples=262_144, epochs=1,
                    hidden_sizes=[32, 32], max_updates=3, total_env_steps=10 ** 12,
                    eval_episodes=0, progress_bar=False, torch_threads=1)
out = train_control(cfg, 0, pathlib.Path(sys.argv[1]), "disabled")
out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
print(json.dumps(out))
"""


def test_million_envs_three_updates_under_12gb(tmp_path):
    """Fresh process so ru_maxrss is this run's peak (lean: 2 steps/env, 1 epoch, 32-32 MLP; the
    full recipes/ppo_cartpole_1m.yaml run is measured in the issue report)."""
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)], capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["updates"] == 3 and out["env_steps"] == 3 * 2 * 1_048_576
    assert out["peak_rss_gb"] <= 12.0
    assert out["ppo/num_minibatches"] == 8
