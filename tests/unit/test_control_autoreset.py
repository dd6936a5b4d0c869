"""The three Gymnasium 1.x autoreset modes on the native envs, on every backend."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from envs.control import ControlVectorEnv

BACKENDS = ["numpy", "numba", "torch"]


def _np(x):
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _run(backend, mode, steps=120, n=16, name="CartPole-v1", max_steps=None, seed=3):
    env = ControlVectorEnv(n, backend=backend, autoreset_mode=mode, model=name,
                           max_episode_steps=max_steps)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(0)
    out = []
    for _ in range(steps):
        a = rng.integers(0, 2, n) if name != "Pendulum-v1" else rng.uniform(-2, 2, (n, 1))
        o, r, te, tr, info = env.step(a)
        out.append((_np(o), _np(r), _np(te), _np(tr), {k: v if isinstance(v, dict) else _np(v)
                                                        for k, v in info.items()}))
    return env, _np(obs), out


@pytest.mark.parametrize("backend", BACKENDS)
def test_next_step_resets_on_following_step(backend):
    env, _, out = _run(backend, AutoresetMode.NEXT_STEP)
    seen = 0
    for t in range(len(out) - 1):
        done = out[t][2] | out[t][3]
        if done.any():
            obs, rew, term, trunc, _ = out[t + 1]
            assert (rew[done] == 0).all() and not term[done].any() and not trunc[done].any()
            assert (np.abs(obs[done]) <= 0.05).all()   # a fresh reset state
            seen += done.sum()
    assert seen > 5


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_step_keeps_true_final_obs(backend):
    """SAME_STEP at t == NEXT_STEP at t (final obs) and at t+1 (reset obs): the counter-based RNG
    gives both modes the same reset states."""
    _, o_next0, nxt = _run(backend, AutoresetMode.NEXT_STEP, steps=200)
    env, o_same0, same = _run(backend, AutoresetMode.SAME_STEP, steps=200)
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    np.testing.assert_array_equal(o_next0, o_same0)
    t_next, checked = 0, 0
    # align: NEXT_STEP spends one extra step per episode on the reset
    for obs, rew, term, trunc, info in same[:60]:
        n_obs, n_rew, n_term, n_trunc, _ = nxt[t_next]
        done = term | trunc
        if done.any():
            assert info["_final_obs"].tolist() == done.tolist()
            assert info["_final_info"].tolist() == done.tolist()
            np.testing.assert_allclose(info["final_obs"][done], n_obs[done], atol=1e-6)
            assert (np.abs(obs[done]) <= 0.05).all()
            checked += done.sum()
            break
        np.testing.assert_allclose(obs, n_obs, atol=1e-6)
        np.testing.assert_array_equal(rew, n_rew)
        t_next += 1
    assert checked > 0
    n_obs_after = nxt[t_next + 1][0]
    np.testing.assert_allclose(obs[done], n_obs_after[done], atol=1e-6)  # same reset state
    assert not any("final_obs" in s[4] for s in same[:3]) or backend == "torch"


@pytest.mark.parametrize("backend", BACKENDS)
def test_disabled_needs_reset_mask(backend):
    env = ControlVectorEnv(8, backend=backend, autoreset_mode="disabled")
    obs, _ = env.reset(seed=0)
    done = np.zeros(8, bool)
    last = None
    for _ in range(300):
        last, _, term, trunc, info = env.step(np.ones(8, np.int64))  # always push right: falls fast
        done |= _np(term) | _np(trunc)
        assert info == {} or backend == "torch" and "final_obs" not in info
        if done.all():
            break
    assert done.all()
    before = _np(last).copy()
    mask = np.zeros(8, bool)
    mask[[1, 5]] = True
    m = torch.as_tensor(mask) if backend == "torch" else mask
    obs, _ = env.reset(options={"reset_mask": m})
    obs = _np(obs)
    assert (np.abs(obs[mask]) <= 0.05).all()
    np.testing.assert_allclose(obs[~mask], before[~mask])
    assert (_np(env.steps)[mask] == 0).all() and (_np(env.steps)[~mask] > 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_time_limit_truncates(backend):
    _, _, out = _run(backend, "same_step", steps=12, n=4, name="Pendulum-v1", max_steps=5)
    truncs = np.stack([o[3] for o in out])
    terms = np.stack([o[2] for o in out])
    assert truncs[4].all() and truncs[9].all() and truncs.sum() == 8 and not terms.any()
    assert "final_obs" in out[4][4] and out[4][4]["_final_obs"].all()


def test_pendulum_actions_clipped_reward_bounds():
    env = ControlVectorEnv(32, backend="numba", model="Pendulum-v1")
    env.reset(seed=0)
    for _ in range(50):
        _, rew, term, _, _ = env.step(np.full((32, 1), 5.0, np.float32))
        assert (rew <= 0).all() and (rew >= -(np.pi ** 2 + 0.1 * 64 + 0.001 * 4) - 1e-4).all()
        assert not term.any()
