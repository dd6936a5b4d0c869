"""Native control envs: step-by-step parity with Gymnasium's single envs, gymnasium's env checker,
registration, counter-based RNG."""
from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch

import envs.control as ec
from envs.control import ControlVectorEnv
from envs.control.rng import mix32, seed_key, uniform01, uniform_scalar

NAMES = ["CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1"]
BACKENDS = ["numpy", "numba", "torch"]
K = 3  # envs compared side by side


def _gym_state(env) -> np.ndarray:
    return np.asarray(env.unwrapped.state, dtype=np.float64)


def _set_state(ours: ControlVectorEnv, i: int, state: np.ndarray) -> None:
    if ours.backend == "torch":
        ours.state[i] = torch.as_tensor(state, dtype=torch.float32)
    else:
        ours.state[i] = state


def _sample(name: str, rng: np.random.Generator):
    if name == "Pendulum-v1":
        return rng.uniform(-2.5, 2.5, size=(1,)).astype(np.float32)  # beyond the bounds: clipped
    return int(rng.integers(0, 2 if name == "CartPole-v1" else 3))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_step_parity_with_gymnasium(name, backend):
    """Same state + same action -> same obs / reward / termination as Gymnasium (float32 tol);
    our state is re-synced from Gymnasium's float64 state each step (the dynamics are chaotic)."""
    singles = [gymnasium.make(name).unwrapped for _ in range(K)]
    ours = ControlVectorEnv(K, backend=backend, model=name, autoreset_mode="disabled",
                            max_episode_steps=10 ** 9)
    ours.reset(seed=0)
    for i, env in enumerate(singles):
        env.reset(seed=100 + i)
        _set_state(ours, i, _gym_state(env))
    rng = np.random.default_rng(0)
    for _ in range(150):
        acts = [_sample(name, rng) for _ in range(K)]
        obs, rew, term, _, _ = ours.step(np.stack([np.asarray(a) for a in acts]))
        obs, rew, term = (np.asarray(x.cpu() if backend == "torch" else x) for x in (obs, rew, term))
        for i, env in enumerate(singles):
            g_obs, g_rew, g_term, _, _ = env.step(acts[i])
            np.testing.assert_allclose(obs[i], g_obs, rtol=1e-4, atol=1e-4)
            assert rew[i] == pytest.approx(g_rew, rel=1e-4, abs=1e-4)
            assert bool(term[i]) == bool(g_term)
            if g_term:
                env.reset(seed=int(rng.integers(1 << 30)))
            _set_state(ours, i, _gym_state(env))


@pytest.mark.parametrize("name", NAMES)
def test_registered_vector_entry_point(name):
    env = gymnasium.make_vec(f"rl/{name}", num_envs=5, vectorization_mode="vector_entry_point",
                             backend="numpy")
    assert isinstance(env.unwrapped, ControlVectorEnv)
    ref = gymnasium.make(name)
    assert env.single_observation_space == ref.observation_space
    assert env.single_action_space == ref.action_space
    assert env.observation_space.shape == (5, *ref.observation_space.shape)
    assert env.max_episode_steps == ref.spec.max_episode_steps
    assert env.metadata["autoreset_mode"] == gymnasium.vector.AutoresetMode.NEXT_STEP
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs) and info == {}
    for _ in range(30):
        obs, rew, term, trunc, _ = env.step(env.action_space.sample())
        assert obs.dtype == np.float32 and rew.dtype == np.float32 and term.dtype == bool
        assert env.observation_space.contains(obs) or name == "Pendulum-v1"


class _SingleView(gymnasium.Env):
    """One env of a ControlVectorEnv as a gymnasium.Env, to run gymnasium's env checker on it."""

    def __init__(self, name: str, backend: str):
        self.vec = ControlVectorEnv(1, backend=backend, model=name, autoreset_mode="disabled")
        self.observation_space = self.vec.single_observation_space
        self.action_space = self.vec.single_action_space

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is None and self.vec._key is None:
            seed = int(self.np_random.integers(1 << 31))
        obs, _ = self.vec.reset(seed=seed)
        return np.asarray(obs[0]), {}

    def step(self, action):
        obs, rew, term, trunc, _ = self.vec.step(np.asarray(action)[None])
        return np.asarray(obs[0]), float(rew[0]), bool(term[0]), bool(trunc[0]), {}


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name", NAMES)
def test_gymnasium_env_checker(name, backend):
    from gymnasium.utils.env_checker import check_env
    check_env(_SingleView(name, backend), skip_render_check=True)


def test_rng_identical_across_numpy_torch_python():
    ids = np.arange(1000, dtype=np.int64)
    counters = np.arange(1000, dtype=np.int64) % 7
    key = seed_key(12345)
    u_np = uniform01(np, key, ids, counters, 2)
    u_t = uniform01(torch, key, torch.as_tensor(ids), torch.as_tensor(counters), 2).numpy()
    np.testing.assert_array_equal(u_np, u_t)
    assert u_np[17] == np.float32(uniform_scalar(key, 17, int(counters[17]), 2))
    assert 0.0 <= u_np.min() and u_np.max() < 1.0 and abs(u_np.mean() - 0.5) < 0.05
    assert mix32(np.int64(0)) == 0 and 0 < int(mix32(np.int64(1))) < 2 ** 32


@pytest.mark.parametrize("name", NAMES)
def test_reset_states_bitwise_equal_across_backends(name):
    """Reset states carry the same bits on every backend (observations of Acrobot/Pendulum pass
    them through each backend's own cos/sin, so those are compared with a tolerance)."""
    envs = [ControlVectorEnv(64, backend=b, model=name) for b in BACKENDS]
    obs = [np.asarray(e.reset(seed=9)[0]) for e in envs]
    states = [np.asarray(e.state) for e in envs]
    np.testing.assert_array_equal(states[0], states[1])
    np.testing.assert_array_equal(states[0], states[2])
    np.testing.assert_allclose(obs[0], obs[1], atol=1e-6)
    np.testing.assert_allclose(obs[0], obs[2], atol=1e-6)
    m = ec.MODELS[name]
    lo, hi = np.array(m.reset_low, np.float32)[None], np.array(m.reset_high, np.float32)[None]
    assert (states[0] >= lo).all() and (states[0] <= hi).all()
    other = ControlVectorEnv(64, model=name)
    other.reset(seed=10)
    assert not np.array_equal(states[0], other.state)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_trajectories_independent_of_sharding(backend):
    """Env i's trajectory depends on (seed, global id, its reset count) only: one env of 8 ==
    two shards of 4 with env_id_offset, through many autoresets."""
    rng = np.random.default_rng(1)
    actions = rng.integers(0, 2, size=(400, 8))
    whole = ControlVectorEnv(8, backend=backend, autoreset_mode="same_step")
    parts = [ControlVectorEnv(4, backend=backend, autoreset_mode="same_step", env_id_offset=o)
             for o in (0, 4)]
    o1 = whole.reset(seed=5)[0]
    o2 = np.concatenate([p.reset(seed=5)[0] for p in parts])
    np.testing.assert_array_equal(o1, o2)
    for a in actions:
        o1 = whole.step(a)[0]
        o2 = np.concatenate([p.step(a[4 * k:4 * k + 4])[0] for k, p in enumerate(parts)])
        np.testing.assert_array_equal(o1, o2)
    assert whole.episodes.sum() > 16  # many resets happened


@pytest.mark.parametrize("mode", ["next_step", "same_step"])
@pytest.mark.parametrize("name", NAMES)
def test_numba_bitwise_across_blocks_shards_threads(name, mode):
    """The numba kernel's vectorised body, its scalar remainder, block edges and thread count give
    the same bits: 1100 envs on 2 threads == 1100 on 1 thread == shards of 301 + 799."""
    n, cut = 1100, 301
    rng = np.random.default_rng(2)
    acts = [rng.uniform(-2, 2, (n, 1)).astype(np.float32) if name == "Pendulum-v1"
            else rng.integers(0, 3 if name in ("Acrobot-v1", "MountainCar-v0") else 2, n)
            for _ in range(120)]
    kw = {"backend": "numba", "autoreset_mode": mode, "model": name, "max_episode_steps": 50}
    envs = [ControlVectorEnv(n, num_threads=2, **kw), ControlVectorEnv(n, num_threads=1, **kw)]
    parts = [ControlVectorEnv(cut, **kw), ControlVectorEnv(n - cut, env_id_offset=cut, **kw)]
    for e in envs + parts:
        e.reset(seed=11)
    for a in acts:
        outs = [e.step(a) for e in envs]
        p0, p1 = parts[0].step(a[:cut]), parts[1].step(a[cut:])
        for k in range(4):
            joined = np.concatenate([p0[k], p1[k]])
            np.testing.assert_array_equal(outs[0][k], outs[1][k])
            np.testing.assert_array_equal(outs[0][k], joined)
        if mode == "same_step" and "final_obs" in outs[0][4]:
            has = outs[0][4]["_final_obs"]
            np.testing.assert_array_equal(outs[0][4]["final_obs"][has],
                                          outs[1][4]["final_obs"][has])
    assert envs[0].episodes.sum() > n  # every env went through resets


def test_no_copy_returns_reused_buffers():
    env = ControlVectorEnv(4, backend="numba", copy=False)
    a, _ = env.reset(seed=0)
    b = env.step(np.zeros(4, np.int64))[0]
    assert a is b and b is env.state  # CartPole's observation is its state buffer
    env2 = ControlVectorEnv(4, backend="numba", copy=True)
    a, _ = env2.reset(seed=0)
    assert a is not env2.step(np.zeros(4, np.int64))[0]


def test_numba_thread_count():
    from envs.control.vector import PARALLEL_MIN_ENVS, resolve_threads
    assert resolve_threads(PARALLEL_MIN_ENVS - 1, None) == 1
    assert resolve_threads(PARALLEL_MIN_ENVS, None) >= 1
    assert resolve_threads(10, 1) == 1 and resolve_threads(10, 10 ** 6) >= 1
    with pytest.raises(ValueError, match="num_threads"):
        resolve_threads(10, 0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="backend"):
        ControlVectorEnv(2, backend="jax")
    with pytest.raises(ValueError, match="autoreset"):
        ControlVectorEnv(2, autoreset_mode="sometimes")
    with pytest.raises(RuntimeError, match="reset"):
        ControlVectorEnv(2).step(np.zeros(2, np.int64))
