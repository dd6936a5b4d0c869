"""Native vectorised classic-control envs behind Gymnasium 1.x's `VectorEnv` API.

One class, `ControlVectorEnv`, steps N copies of a `ControlModel` (dynamics.py) with one of three
backends: "numpy" (array ops), "numba" (fused parallel kernel, kernels.py; the CPU fast path) or
"torch" (device tensors, masked resets with `torch.where`, no host sync inside `step`).
All three autoreset modes of Gymnasium 1.x are supported:

    NEXT_STEP  an env that ended is reset by the following `step` (reward 0, not done there)
    SAME_STEP  reset inside the same `step`; the true final observation is in
               info["final_obs"] [N, obs_dim] with mask info["_final_obs"] [N]
    DISABLED   never reset; call `reset(options={"reset_mask": mask})`

Reset states come from a counter-based hash of (seed, global env id, reset count) (rng.py), so
env i's trajectory under given actions is the same whatever the batch, thread or shard layout;
`env_id_offset` gives a shard's first global id.

State is [N, state_dim] float32. Where the observation is the state (CartPole, MountainCar) the
state buffer is the observation buffer: with `copy=False` the returned obs IS `env.state`, and every
other returned array (reward, term, trunc, info["final_obs"], ...) is a reused buffer too: fastest,
the caller must copy what it keeps past the next `step`/`reset`. With `copy=True` (Gymnasium's
default) each call returns fresh arrays. numba backend threads: `num_threads=None` runs batches
under PARALLEL_MIN_ENVS on the calling thread and larger ones on all numba threads; an int fixes
the count (1 = never wake worker threads).

Example: env = CartPoleVectorEnv(num_envs=1024, backend="numba"); obs, _ = env.reset(seed=0)
         obs, rew, term, trunc, info = env.step(env.action_space.sample())
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.control.dynamics import ACROBOT, CARTPOLE, MODELS, MOUNTAINCAR, PENDULUM, ControlModel
from envs.control.rng import seed_key, uniform01

BACKENDS = ("numpy", "numba", "torch")
_MODE_CODE = {AutoresetMode.NEXT_STEP: 0, AutoresetMode.SAME_STEP: 1, AutoresetMode.DISABLED: 2}


def parse_autoreset_mode(mode: str | AutoresetMode) -> AutoresetMode:
    """AutoresetMode, its value ("SameStep") or a snake-case name ("same_step") -> AutoresetMode."""
    if isinstance(mode, AutoresetMode):
        return mode
    for m in AutoresetMode:
        if mode in (m.value, m.name, m.name.lower()):
            return m
    raise ValueError(f"unknown autoreset mode {mode!r}; valid: {[m.name.lower() for m in AutoresetMode]}")


def numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


PARALLEL_MIN_ENVS = 32768  # below this, waking worker threads costs more than the step


def resolve_threads(num_envs: int, num_threads: int | None) -> int:
    """Threads the numba kernel uses: num_threads capped at numba's pool size, or (None) 1 below
    PARALLEL_MIN_ENVS envs and the whole pool from there."""
    import numba
    pool = numba.config.NUMBA_NUM_THREADS
    if num_threads is None:
        return 1 if num_envs < PARALLEL_MIN_ENVS else pool
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1 or None, got {num_threads}")
    return min(int(num_threads), pool)


@contextmanager
def _numba_threads(threads: int):
    import numba
    before = numba.get_num_threads()
    if before != threads:
        numba.set_num_threads(threads)
    try:
        yield
    finally:
        if before != threads:
            numba.set_num_threads(before)


class ControlVectorEnv(VectorEnv):
    model: ControlModel = CARTPOLE
    metadata: dict[str, Any] = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 1, backend: str = "numpy",
                 autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
                 max_episode_steps: int | None = None, device: str = "cpu",
                 env_id_offset: int = 0, copy: bool = True, model: str | None = None,
                 render_mode: str | None = None, num_threads: int | None = None):
        if model is not None:
            self.model = MODELS[model]
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; valid: {list(BACKENDS)}")
        if backend == "numba" and not numba_available():
            backend = "numpy"
        m = self.model
        self.num_envs, self.backend, self.copy = int(num_envs), backend, copy
        self.autoreset_mode = parse_autoreset_mode(autoreset_mode)
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.render_mode = render_mode
        self.max_episode_steps = int(max_episode_steps or m.max_episode_steps)
        self.env_id_offset = int(env_id_offset)
        self.single_observation_space = m.single_observation_space
        self.single_action_space = m.single_action_space
        self.observation_space = batch_space(m.single_observation_space, self.num_envs)
        self.action_space = batch_space(m.single_action_space, self.num_envs)
        self._discrete = not m.name.startswith("Pendulum")
        self._key = None
        self.num_threads = resolve_threads(self.num_envs, num_threads) \
            if backend == "numba" else None
        self._alloc(device)

    # ---------------------------------------------------------------- buffers
    def _alloc(self, device: str) -> None:
        m, n = self.model, self.num_envs
        low = np.array(m.reset_low, np.float64)
        span = np.array(m.reset_high, np.float64) - low
        if self.backend == "torch":
            import torch
            self._xp, kw = torch, {"device": device}
            self._low32 = torch.tensor(low, dtype=torch.float32, **kw)
            self._span32 = torch.tensor(span, dtype=torch.float32, **kw)
            z = torch.zeros
            self.state = z((n, m.state_dim), dtype=torch.float32, **kw)
            self.steps = z(n, dtype=torch.int64, **kw)
            self.episodes = z(n, dtype=torch.int64, **kw)
            self.prev_done = z(n, dtype=torch.bool, **kw)
            self._ids = torch.arange(n, dtype=torch.int64, **kw) + self.env_id_offset
            self._obs = self.state if m.obs_is_state else z((n, m.obs_dim), dtype=torch.float32,
                                                            **kw)
            return
        self._xp = np
        self._low32, self._span32 = low.astype(np.float32), span.astype(np.float32)
        self.state = np.zeros((n, m.state_dim), np.float32)
        self.steps = np.zeros(n, np.int64)
        self.episodes = np.zeros(n, np.int64)
        self.prev_done = np.zeros(n, np.bool_)
        self._obs = self.state if m.obs_is_state else np.zeros((n, m.obs_dim), np.float32)
        if self.backend == "numba":
            self._reward = np.zeros(n, np.float32)
            self._term = np.zeros(n, np.bool_)
            self._trunc = np.zeros(n, np.bool_)
            self._final_obs = np.zeros((n, m.obs_dim), np.float32)
            self._has_final = np.zeros(n, np.bool_)
            self._dummy_i = np.zeros(n, np.int64)
            self._dummy_f = np.zeros(n, np.float32)

    def _out(self, x):
        """A reused buffer at the API boundary: itself (copy=False) or a fresh copy."""
        if not self.copy:
            return x
        return x.clone() if self.backend == "torch" else x.copy()

    # ---------------------------------------------------------------- reset
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset all envs, or only options["reset_mask"] ([N] bool). A seed restarts every
        env's reset counter, so the same seed reproduces the same initial states."""
        super().reset(seed=seed)
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if seed is not None:
            self._key = seed_key(seed)
            self.episodes[...] = 0
        elif self._key is None:
            self._key = seed_key(int(np.random.SeedSequence().entropy) & ((1 << 63) - 1))
        if mask is None:
            mask = self._xp.ones(self.num_envs, dtype=self._xp.bool) if self.backend == "torch" \
                else np.ones(self.num_envs, np.bool_)
        elif self.backend != "torch":
            mask = np.asarray(mask, dtype=np.bool_)
            if mask.shape != (self.num_envs,):
                raise ValueError(f"reset_mask must have shape ({self.num_envs},), got {mask.shape}")
        if self.backend == "numba":
            from envs.control.kernels import reset_kernel
            with _numba_threads(self.num_threads):
                reset_kernel(self.model.kind, self.state, self.steps, self.episodes,
                             self.prev_done, mask, self._obs, self.model.obs_is_state, self._key,
                             self.env_id_offset, self._low32, self._span32)
        else:
            self._reset_where(mask)
            self.prev_done = self.prev_done & ~mask
            self._write_obs()
        return self._out(self._obs), {}

    def _reset_where(self, mask) -> None:
        xp, m = self._xp, self.model
        if xp is np:
            idx = np.flatnonzero(mask)
            if idx.size == 0:
                return
            ids, counters = idx.astype(np.int64) + self.env_id_offset, self.episodes[idx]
            for k in range(m.state_dim):
                u = uniform01(np, self._key, ids, counters, k)
                self.state[idx, k] = self._low32[k] + self._span32[k] * u
            self.episodes[idx] += 1
            self.steps[idx] = 0
            return
        for k in range(m.state_dim):  # torch: compute for all, select: no data-dependent shapes
            u = uniform01(xp, self._key, self._ids, self.episodes, k)
            self.state[:, k] = xp.where(mask, self._low32[k] + self._span32[k] * u,
                                        self.state[:, k])
        self.episodes += mask.to(xp.int64)
        self.steps.masked_fill_(mask, 0)

    def _observe(self):
        """Observation [N, obs_dim] of the current state (a fresh array)."""
        cols = self.model.observe([self.state[:, k] for k in range(self.model.state_dim)],
                                  self._xp)
        return self._xp.stack(cols, 1)

    def _write_obs(self) -> None:
        if not self.model.obs_is_state:  # else self._obs is self.state, already current
            self._obs = self._observe()

    # ---------------------------------------------------------------- step
    def step(self, actions):
        if self._key is None:
            raise RuntimeError("call reset() before step()")
        if self.backend == "numba":
            return self._numba_step(actions)
        return self._array_step(actions)

    def _numba_step(self, actions):
        from envs.control.kernels import step_kernels
        a = np.asarray(actions)
        if self._discrete:
            if a.dtype.kind != "i":  # signed integer actions pass as they are (no conversion)
                a = a.astype(np.int64)
            act_i, act_f = a.reshape(-1), self._dummy_f
        else:
            act_i, act_f = self._dummy_i, a.astype(np.float32, copy=False).reshape(-1)
        if act_i.shape[0] != self.num_envs or act_f.shape[0] != self.num_envs:
            raise ValueError(f"expected {self.num_envs} actions, got shape {a.shape}")
        mode = _MODE_CODE[self.autoreset_mode]
        args = (self.model.kind, self.state, self.steps, self.episodes, self.prev_done, act_i,
                act_f, self._obs, self.model.obs_is_state, self._reward, self._term, self._trunc,
                self._final_obs, self._has_final, mode, self.max_episode_steps, self._key,
                self.env_id_offset, self._low32, self._span32)
        parallel, serial = step_kernels(self.model.kind)
        if self.num_threads == 1:
            serial(*args)
        else:
            with _numba_threads(self.num_threads):
                parallel(*args)
        info: dict[str, Any] = {}
        if mode == 1 and self._has_final.any():
            has = self._out(self._has_final)
            info = {"final_obs": self._out(self._final_obs), "_final_obs": has,
                    "final_info": {}, "_final_info": has}
        return (self._out(self._obs), self._out(self._reward), self._out(self._term),
                self._out(self._trunc), info)

    def _array_step(self, actions):
        xp, m = self._xp, self.model
        if xp is np:
            a = np.asarray(actions).astype(np.float32)
        else:
            a = xp.as_tensor(actions, device=self.state.device).to(xp.float32)
        new, reward, term = m.physics([self.state[:, k] for k in range(m.state_dim)], a, xp)
        for k in range(m.state_dim):
            self.state[:, k] = new[k]
        self.steps += 1
        trunc = self.steps >= self.max_episode_steps
        reward = reward.astype(np.float32) if xp is np else reward.to(xp.float32)
        info: dict[str, Any] = {}
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            was = self.prev_done
            reward = xp.where(was, xp.zeros_like(reward), reward)
            term, trunc = term & ~was, trunc & ~was
            self._reset_where(was)
        done = term | trunc
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            final = self._observe()
            if xp is not np or done.any():
                info = {"final_obs": final * done[:, None], "_final_obs": done,
                        "final_info": {}, "_final_info": done}
            self._reset_where(done)
        self.prev_done = done
        self._write_obs()
        obs = self._out(self._obs) if m.obs_is_state else self._obs  # else already fresh
        return obs, reward, term, trunc, info


class CartPoleVectorEnv(ControlVectorEnv):
    model = CARTPOLE


class AcrobotVectorEnv(ControlVectorEnv):
    model = ACROBOT


class MountainCarVectorEnv(ControlVectorEnv):
    model = MOUNTAINCAR


class PendulumVectorEnv(ControlVectorEnv):
    model = PENDULUM


VECTOR_CLASSES: dict[str, type[ControlVectorEnv]] = {
    c.model.name: c for c in (CartPoleVectorEnv, AcrobotVectorEnv, MountainCarVectorEnv,
                              PendulumVectorEnv)}
