"""Control PPO end to end on tiny budgets: parameters move, returns rise, logs are written, the
co-scaling rule sets the minibatch count, continuous actions and PPO-EWMA run, the scaling study
writes its plot."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from rl.config import ControlConfig, load_config
from rl.control.buffer import EpisodeTracker, RolloutBuffer, collect
from rl.control.ppo import explained_variance, ppo_update
from rl.drivers.control_ppo import build_agent, make_env, train_control

FAST = dict(progress_bar=False, eval_episodes=8, torch_threads=1)


def test_co_scaling_rule():
    c = ControlConfig(num_envs=1 << 20, num_steps=8, minibatch_samples=65536)
    assert c.num_minibatches == 128
    assert dataclasses.replace(c, num_envs=1 << 10).num_minibatches == 1
    assert ControlConfig(total_env_steps=10_000, num_envs=64, num_steps=32).num_updates == 4
    assert ControlConfig(max_updates=3, total_env_steps=10 ** 9).num_updates == 3


def test_recipes_load():
    for name in ("ppo_cartpole", "ppo_cartpole_1m", "ppo_cartpole_scaling"):
        cfg = load_config(f"recipes/{name}.yaml")
        assert cfg.run.name == name and cfg.run.seed == 1 and cfg.algorithm.name == "control_ppo"
    assert load_config("recipes/ppo_cartpole_1m.yaml").control.num_envs == 1_048_576
    assert load_config("recipes/ppo_cartpole_scaling.yaml").control.sweep_num_envs[-1] == 1 << 20


def test_explained_variance_hand_computed():
    t = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(t, t) == 1.0
    assert explained_variance(torch.zeros(4), t) == pytest.approx(1 - t.var().item() / t.var().item())
    assert np.isnan(explained_variance(t, torch.ones(4)))


def test_truncation_bootstraps_from_final_obs():
    cfg = ControlConfig(env_id="Pendulum-v1", num_envs=4, num_steps=6)
    env = make_env(cfg, 4)
    env.max_episode_steps = 3
    agent = build_agent(env, cfg)
    buf = RolloutBuffer(6, 4, 3, (1,), False)
    obs, _ = env.reset(seed=0)
    collect(env, agent, buf, obs, EpisodeTracker(4))
    assert buf.ended[2].all() and not buf.terminated.any()
    # at the truncation the bootstrap is V(final obs), not V(reset obs) = values[3]
    assert not torch.allclose(buf.next_values[2], buf.values[3])
    torch.testing.assert_close(buf.next_values[0], buf.values[1])


def test_ppo_update_moves_params_and_reports():
    torch.manual_seed(0)
    cfg = ControlConfig(num_envs=16, num_steps=16)
    env = make_env(cfg, 16)
    agent = build_agent(env, cfg)
    opt = torch.optim.Adam(agent.parameters(), lr=1e-3)
    buf = RolloutBuffer(16, 16, 4, (), True)
    obs, _ = env.reset(seed=0)
    collect(env, agent, buf, obs, EpisodeTracker(16))
    before = [p.detach().clone() for p in agent.parameters()]
    m = ppo_update(agent, opt, buf, gamma=0.99, lam=0.95, epochs=2, minibatch_samples=64,
                   clip=0.2, value_clip=0.2, ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5)
    assert m["ppo/num_minibatches"] == 4 and m["ppo/minibatch_samples"] == 64
    assert all(np.isfinite(v) for v in m.values())
    assert 0 <= m["ppo/clip_fraction"] <= 1 and m["ppo/approx_kl"] >= 0
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.parameters()))


def test_cartpole_learns_and_logs(tmp_path):
    cfg = ControlConfig(num_envs=32, num_steps=32, minibatch_samples=256, total_env_steps=40_960,
                        **FAST)
    out = train_control(cfg, seed=0, run_dir=tmp_path, wandb_mode="disabled")
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == cfg.num_updates + 1 and (tmp_path / "curves.png").exists()
    first = next(r["return/mean_100"] for r in rows if r.get("return/mean_100") is not None)
    assert out["return/mean_100"] > first + 20  # random policy: ~22
    for key in ("ppo/approx_kl", "ppo/clip_fraction", "ppo/explained_variance", "sps/env",
                "sps/inference", "sps/train", "eval/mean_return"):
        assert key in out


def test_pendulum_continuous_and_ewma_run(tmp_path):
    cfg = ControlConfig(env_id="Pendulum-v1", num_envs=16, num_steps=16, minibatch_samples=128,
                        total_env_steps=512, ewma_decay=0.9, backend="torch", **FAST)
    out = train_control(cfg, seed=0, run_dir=tmp_path, wandb_mode="disabled")
    assert out["updates"] == 2 and np.isfinite(out["eval/mean_return"])


def test_scaling_study_writes_plot(tmp_path):
    cfg = ControlConfig(sweep_num_envs=[16, 64], num_steps=8, minibatch_samples=128,
                        total_env_steps=1024, epochs=1, **FAST)
    out = train_control(cfg, seed=0, run_dir=tmp_path, wandb_mode="disabled")
    assert (tmp_path / "scaling.png").exists() and (tmp_path / "n64" / "metrics.jsonl").exists()
    assert out["n16/ppo/num_minibatches"] == 1 and out["n64/ppo/num_minibatches"] == 4
