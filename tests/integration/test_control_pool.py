"""Sharded pool over Ray actors: same batch as one native env whatever the shard count; wraps
arbitrary Gymnasium envs; info merging with `_key` masks."""
from __future__ import annotations

import numpy as np
import pytest

from envs.control import ControlVectorEnv
from envs.control.pool import ShardedVectorEnv, merge_infos, shard_sizes


@pytest.fixture(scope="session")
def control_ray(ray_local):
    """The suite's one local Ray instance (tests/conftest.py)."""
    yield ray_local


def test_shard_sizes_and_merge_infos():
    assert shard_sizes(10, 3) == [4, 3, 3] and sum(shard_sizes(7, 7)) == 7
    a = {"final_obs": np.ones((2, 3), np.float32), "_final_obs": np.array([True, False]),
         "final_info": {}, "_final_info": np.array([True, False])}
    out = merge_infos([{}, a], [3, 2])
    assert out["final_obs"].shape == (5, 3) and out["_final_obs"].tolist() == [0, 0, 0, 1, 0]
    assert out["final_info"] == {}


@pytest.mark.parametrize("local", [True, False])
def test_pool_matches_single_native_env(local, request):
    if not local:
        request.getfixturevalue("control_ray")
    n, steps = 12, 150
    pool = ShardedVectorEnv("rl/CartPole-v1", num_envs=n, num_shards=3, autoreset_mode="same_step",
                            backend="numpy", local=local, num_cpus_per_shard=0.5)
    ref = ControlVectorEnv(n, backend="numba", autoreset_mode="same_step")
    np.testing.assert_array_equal(pool.reset(seed=4)[0], ref.reset(seed=4)[0])
    rng = np.random.default_rng(0)
    finals = 0
    for _ in range(steps):
        a = rng.integers(0, 2, n)
        o1, r1, te1, tr1, i1 = pool.step(a)
        o2, r2, te2, tr2, i2 = ref.step(a)
        np.testing.assert_allclose(o1, o2, atol=1e-5)
        np.testing.assert_array_equal(te1, te2)
        if "_final_obs" in i2:
            np.testing.assert_array_equal(i1["_final_obs"], i2["_final_obs"])
            finals += int(i2["_final_obs"].sum())
    assert finals > 0
    mask = np.zeros(n, bool)
    mask[[0, 11]] = True
    pool_obs, _ = pool.reset(options={"reset_mask": mask})
    assert (np.abs(pool_obs[mask]) <= 0.05).all()
    np.testing.assert_allclose(pool_obs[~mask], o1[~mask])
    pool.close()


def test_pool_wraps_any_gymnasium_env(control_ray):
    pool = ShardedVectorEnv("MountainCarContinuous-v0", num_envs=4, num_shards=2,
                            autoreset_mode="same_step", num_cpus_per_shard=0.5,
                            env_kwargs={"max_episode_steps": 5})
    obs, _ = pool.reset(seed=0)
    assert obs.shape == (4, 2) and pool.action_space.shape == (4, 1)
    for t in range(5):
        obs, rew, term, trunc, info = pool.step(np.zeros((4, 1), np.float32))
    assert trunc.all() and info["_final_obs"].all() and len(info["final_obs"]) == 4
    # seeding is per global env id: the same whatever the shard count
    one = ShardedVectorEnv("MountainCarContinuous-v0", num_envs=4, num_shards=1, local=True)
    np.testing.assert_array_equal(one.reset(seed=0)[0], pool.reset(seed=0)[0])
    pool.close()


def test_pool_from_factory_path():
    pool = ShardedVectorEnv(factory="tests.integration.test_control_pool:make_acrobot",
                            num_envs=3, num_shards=2, local=True)
    obs, _ = pool.reset(seed=1)
    assert obs.shape == (3, 6)


def make_acrobot():
    import gymnasium
    return gymnasium.make("Acrobot-v1")
