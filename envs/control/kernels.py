"""Fused numba kernels: physics + time limit + autoreset + observation write for every env, block
by block (no temporaries, no per-step allocation).

Same equations as `dynamics.py` (which documents the sources). The batch is cut into blocks of
`BLOCK` envs; each block makes these passes while it sits in L1/L2 cache:

    pass 1   physics. CartPole is written branch-free on the flat state with a polynomial
             sin/cos (`_sincos`) so LLVM vectorises it (8 float32 lanes with AVX2); libm's scalar
             sinf/cosf calls would keep it scalar. The other tasks run per env on scalars.
    pass 2a  NEXT_STEP: reset the envs that ended last step (their pass-1 result is dropped).
    pass 2b  bookkeeping, branch-free (vectorises): step counter, reward, termination,
             truncation, done flag.
    pass 2c  SAME_STEP: final obs of the envs that just ended, then their reset; observation
             write (skipped where the observation is the state itself).
Resets touch ~1/20 of the envs under random CartPole actions, so 2a and 2c stay scalar.

`kind` selects the task (ControlModel.kind); `mode` the autoreset mode: 0 NEXT_STEP,
1 SAME_STEP, 2 DISABLED. `step_kernel` spreads blocks over numba's threads; `step_kernel_serial`
runs them on the calling thread (no thread wake-up: the right choice for small batches).

Shapes: state [N, D] float32 C-contiguous; steps, episodes [N] int64; prev_done, term, trunc,
has_final [N] bool; act_i [N] int (discrete) or act_f [N] float32 (Pendulum); reward [N] float32;
obs, final_obs [N, obs_dim] float32 (obs may be `state` itself: obs_is_state=True).
Example: step_kernel(0, state, ..., mode=0, ...) advances N CartPoles by one step in place.
"""
from __future__ import annotations

import math
import os

import numba
import numpy as np
from numba import njit, prange

# Numba's OpenMP layer leaves its workers spinning after each kernel; on a few cores they starve the
# torch inference that runs between env steps (measured 40x slower policy forward). The workqueue
# layer sleeps instead. A user's explicit NUMBA_THREADING_LAYER wins.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

MASK32 = 0xFFFFFFFF
PI = math.pi
TH_LIM = 12 * 2 * PI / 360
BLOCK = 512  # envs per block: state + actions + outputs of a block stay in L1/L2 between passes
# fast-math without 'contract': no FMA fusion, so reset states keep the exact bits of the numpy
# and torch paths (rng.py). error_model="numpy": a division is a plain division (no zero check,
# whose early exit would stop LLVM from vectorising the loop).
FAST = {"nnan", "ninf", "nsz"}
OPTS = {"fastmath": FAST, "error_model": "numpy", "cache": True}


@njit(inline="always")
def _mix32(x):
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & MASK32
    x = x ^ (x >> 15)
    x = (x * 0x2C1B3C6D) & MASK32
    return x ^ (x >> 16)


@njit(inline="always")
def _reset_env(state, i, key, env_id, counter, low32, span32):
    for k in range(state.shape[1]):
        h = _mix32((env_id ^ key) & MASK32)
        h = _mix32(h ^ (counter & MASK32))
        h = _mix32(h ^ k)
        u = np.float32(h >> 8) * np.float32(1.0 / (1 << 24))
        state[i, k] = low32[k] + span32[k] * u


F = np.float32  # CartPole runs in float32: the hot path of the benchmarks and of PPO
C_TAU, C_G, C_F, C_PML = F(0.02), F(9.8), F(10.0), F(0.05)
C_43, C_MP, C_HALF, C_X, C_TH = F(4.0 / 3.0), F(0.1), F(0.5), F(2.4), F(TH_LIM)
C_INV_TM = F(1.0 / 1.1)  # x / total_mass as x * (1 / total_mass): two fewer vector divisions
# Minimax polynomials of sin and cos on [-pi/4, pi/4] (Cephes sinf/cosf coefficients).
S1, S2, S3 = F(-1.6666654611e-1), F(8.3321608736e-3), F(-1.9515295891e-4)
K1, K2, K3 = F(4.166664568298827e-2), F(-1.388731625493765e-3), F(2.443315711809948e-5)
TWO_OVER_PI, HALF_PI = 2.0 / PI, PI / 2.0


@njit(inline="always")
def _sincos(x):
    """(sin x, cos x) of a float32, branch-free so it vectorises; |error| < 1e-7 for |x| < 1e6.
    Reduction x = q pi/2 + r in float64 (exact enough: no Cody-Waite split needed), then the
    quadrant q mod 4 picks and signs the two polynomials."""
    q = math.floor(np.float64(x) * TWO_OVER_PI + 0.5)
    r = np.float32(np.float64(x) - q * HALF_PI)
    z = r * r
    s = r + r * z * (S1 + z * (S2 + z * S3))
    c = F(1.0) - F(0.5) * z + z * z * (K1 + z * (K2 + z * K3))
    quad = np.int64(q) & 3
    odd = (quad & 1) == 1
    sn = c if odd else s
    cs = s if odd else c
    sn = -sn if (quad & 2) == 2 else sn
    cs = -cs if ((quad + 1) & 2) == 2 else cs
    return sn, cs


@njit(inline="always")
def _cartpole_block(state, act, lo, hi):
    """CartPole physics for envs [lo, hi) in place; branch-free so LLVM vectorises it."""
    sf = state[lo:hi].reshape(-1)  # flat [(hi-lo)*4] view: constant stride 4, no bounds unknowns
    a = act[lo:hi]
    for j in range(hi - lo):
        b = 4 * j
        x, x_dot, th, th_dot = sf[b], sf[b + 1], sf[b + 2], sf[b + 3]
        force = C_F if a[j] == 1 else -C_F
        s, c = _sincos(th)
        temp = (force + C_PML * th_dot * th_dot * s) * C_INV_TM
        th_acc = (C_G * s - c * temp) / (C_HALF * (C_43 - C_MP * c * c * C_INV_TM))
        x_acc = temp - C_PML * th_acc * c * C_INV_TM
        sf[b] = x + C_TAU * x_dot
        sf[b + 1] = x_dot + C_TAU * x_acc
        sf[b + 2] = th + C_TAU * th_dot
        sf[b + 3] = th_dot + C_TAU * th_acc


@njit(inline="always")
def _cartpole_done(state, i):
    x, th = state[i, 0], state[i, 2]
    return (x < -C_X) | (x > C_X) | (th < -C_TH) | (th > C_TH)


@njit(inline="always")
def _acro_derivs(th1, th2, dth1, dth2, torque):
    d1 = 0.25 + (1.0 + 0.25 + math.cos(th2)) + 2.0
    d2 = (0.25 + 0.5 * math.cos(th2)) + 1.0
    phi2 = 4.9 * math.cos(th1 + th2 - PI / 2.0)
    s2 = math.sin(th2)
    phi1 = -0.5 * dth2 * dth2 * s2 - dth2 * dth1 * s2 + 14.7 * math.cos(th1 - PI / 2) + phi2
    ddth2 = (torque + d2 / d1 * phi1 - 0.5 * dth1 * dth1 * s2 - phi2) / (1.25 - d2 * d2 / d1)
    return dth1, dth2, -(d2 * ddth2 + phi1) / d1, ddth2


@njit(inline="always")
def _wrap(x):
    return x - 2 * PI * math.floor((x + PI) / (2 * PI))


@njit(inline="always")
def _acrobot(state, i, a):
    y0, y1, y2, y3 = state[i, 0], state[i, 1], state[i, 2], state[i, 3]
    t = float(a - 1)
    a0, a1, a2, a3 = _acro_derivs(y0, y1, y2, y3, t)
    b0, b1, b2, b3 = _acro_derivs(y0 + 0.1 * a0, y1 + 0.1 * a1, y2 + 0.1 * a2, y3 + 0.1 * a3, t)
    c0, c1, c2, c3 = _acro_derivs(y0 + 0.1 * b0, y1 + 0.1 * b1, y2 + 0.1 * b2, y3 + 0.1 * b3, t)
    d0, d1, d2, d3 = _acro_derivs(y0 + 0.2 * c0, y1 + 0.2 * c1, y2 + 0.2 * c2, y3 + 0.2 * c3, t)
    h = 0.2 / 6.0
    n0 = _wrap(y0 + h * (a0 + 2 * b0 + 2 * c0 + d0))
    n1 = _wrap(y1 + h * (a1 + 2 * b1 + 2 * c1 + d1))
    n2 = min(max(y2 + h * (a2 + 2 * b2 + 2 * c2 + d2), -4 * PI), 4 * PI)
    n3 = min(max(y3 + h * (a3 + 2 * b3 + 2 * c3 + d3), -9 * PI), 9 * PI)
    state[i, 0], state[i, 1], state[i, 2], state[i, 3] = n0, n1, n2, n3
    term = -math.cos(n0) - math.cos(n1 + n0) > 1.0
    return (0.0 if term else -1.0), term


@njit(inline="always")
def _mountaincar(state, i, a):
    pos, vel = state[i, 0], state[i, 1]
    vel = min(max(vel + (a - 1) * 0.001 + math.cos(3 * pos) * (-0.0025), -0.07), 0.07)
    vel32 = np.float32(vel)
    pos32 = np.float32(min(max(pos + vel32, -1.2), 0.6))
    if pos32 <= np.float32(-1.2) and vel32 < 0:
        vel32 = np.float32(0.0)
    state[i, 0], state[i, 1] = pos32, vel32
    return -1.0, (pos32 >= np.float32(0.5) and vel32 >= 0)


@njit(inline="always")
def _pendulum(state, i, u):
    th, thdot = state[i, 0], state[i, 1]
    u = min(max(u, -2.0), 2.0)
    ang = ((th + PI) % (2 * PI)) - PI
    cost = ang * ang + 0.1 * thdot * thdot + 0.001 * u * u
    new_thdot = min(max(thdot + (15.0 * math.sin(th) + 3.0 * u) * 0.05, -8.0), 8.0)
    state[i, 0] = th + new_thdot * 0.05
    state[i, 1] = new_thdot
    return -cost, False


@njit(inline="always")
def _physics_block(kind, state, lo, hi, act_i, act_f, reward, term, prev_done, mode):
    """Pass 1 over envs [lo, hi): new state, and (except CartPole, done in pass 2) reward and
    termination. Under NEXT_STEP the envs that ended last step are reset in pass 2: the scalar
    tasks skip them, CartPole steps them too (branch-free) and pass 2 overwrites the result."""
    if kind == 0:
        _cartpole_block(state, act_i, lo, hi)
        return
    for i in range(lo, hi):
        if mode == 0 and prev_done[i]:
            continue
        if kind == 1:
            r, t = _acrobot(state, i, act_i[i])
        elif kind == 2:
            r, t = _mountaincar(state, i, act_i[i])
        else:
            r, t = _pendulum(state, i, act_f[i])
        reward[i] = r
        term[i] = t


@njit(inline="always")
def _observe(kind, state, i, out):
    if kind == 1:
        th1, th2 = state[i, 0], state[i, 1]
        out[i, 0], out[i, 1] = math.cos(th1), math.sin(th1)
        out[i, 2], out[i, 3] = math.cos(th2), math.sin(th2)
        out[i, 4], out[i, 5] = state[i, 2], state[i, 3]
    elif kind == 3:
        out[i, 0], out[i, 1], out[i, 2] = math.cos(state[i, 0]), math.sin(state[i, 0]), state[i, 1]
    else:
        for k in range(state.shape[1]):
            out[i, k] = state[i, k]


@njit(inline="always")
def _bookkeep(kind, state, steps, prev_done, reward, term, trunc, lo, hi, max_steps, next_step):
    """Pass 2b over envs [lo, hi), branch-free (vectorises): step counter, reward, termination,
    truncation, done flag. Under NEXT_STEP an env that ended last step gets the reset step's
    outputs (counter 0, reward 0, not done) instead."""
    s, st_, pd_ = state[lo:hi].reshape(-1), steps[lo:hi], prev_done[lo:hi]
    r_, t_, tr_ = reward[lo:hi], term[lo:hi], trunc[lo:hi]
    d = state.shape[1]
    for j in range(hi - lo):
        live = not (next_step & pd_[j])
        if kind == 0:
            x, th = s[d * j], s[d * j + 2]
            t = live & ((x < -C_X) | (x > C_X) | (th < -C_TH) | (th > C_TH))
            r = F(1.0) if live else F(0.0)
        else:
            t = live & t_[j]
            r = r_[j] if live else F(0.0)
        st = st_[j] + 1 if live else 0
        tr = live & (st >= max_steps)
        st_[j] = st
        r_[j] = r
        t_[j] = t
        tr_[j] = tr
        pd_[j] = t | tr


@njit(inline="always")
def _step_block(kind, lo, hi, state, steps, episodes, prev_done, act_i, act_f, obs, obs_is_state,
                reward, term, trunc, final_obs, has_final, mode, max_steps, key, id_offset,
                low32, span32):
    """All passes over envs [lo, hi) (see the module docstring)."""
    _physics_block(kind, state, lo, hi, act_i, act_f, reward, term, prev_done, mode)
    if mode == 0:  # NEXT_STEP: envs that ended last step restart instead (pass-1 result dropped)
        for i in range(lo, hi):
            if prev_done[i]:
                _reset_env(state, i, key, id_offset + i, episodes[i], low32, span32)
                episodes[i] += 1
    _bookkeep(kind, state, steps, prev_done, reward, term, trunc, lo, hi, max_steps, mode == 0)
    if mode == 1:  # SAME_STEP: keep the final obs of envs that just ended, then reset them
        for i in range(lo, hi):
            done = prev_done[i]
            has_final[i] = done
            if done:
                _observe(kind, state, i, final_obs)
                _reset_env(state, i, key, id_offset + i, episodes[i], low32, span32)
                episodes[i] += 1
                steps[i] = 0
    if not obs_is_state:
        for i in range(lo, hi):
            _observe(kind, state, i, obs)


@njit(parallel=True, **OPTS)
def step_kernel(kind, state, steps, episodes, prev_done, act_i, act_f, obs, obs_is_state, reward,
                term, trunc, final_obs, has_final, mode, max_steps, key, id_offset, low32, span32):
    """One step of all N envs, blocks spread over numba's threads."""
    n = state.shape[0]
    for b in prange((n + BLOCK - 1) // BLOCK):
        lo = b * BLOCK
        _step_block(kind, lo, min(lo + BLOCK, n), state, steps, episodes, prev_done, act_i,
                    act_f, obs, obs_is_state, reward, term, trunc, final_obs, has_final, mode,
                    max_steps, key, id_offset, low32, span32)


@njit(**OPTS)
def step_kernel_serial(kind, state, steps, episodes, prev_done, act_i, act_f, obs, obs_is_state,
                       reward, term, trunc, final_obs, has_final, mode, max_steps, key, id_offset,
                       low32, span32):
    """`step_kernel` on the calling thread only."""
    n = state.shape[0]
    for lo in range(0, n, BLOCK):
        _step_block(kind, lo, min(lo + BLOCK, n), state, steps, episodes, prev_done, act_i,
                    act_f, obs, obs_is_state, reward, term, trunc, final_obs, has_final, mode,
                    max_steps, key, id_offset, low32, span32)


# CartPole, the hot path, gets its own pair: with kind and obs_is_state constants, LLVM drops the
# other tasks' branches from the per-env loop (measured +20% at N = 1M). Same arguments as
# `step_kernel`; `kind`, `obs` and `obs_is_state` are accepted and ignored (obs is the state).
@njit(parallel=True, **OPTS)
def cartpole_step_kernel(kind, state, steps, episodes, prev_done, act_i, act_f, obs,
                         obs_is_state, reward, term, trunc, final_obs, has_final, mode, max_steps,
                         key, id_offset, low32, span32):
    """`step_kernel` for CartPole."""
    n = state.shape[0]
    for b in prange((n + BLOCK - 1) // BLOCK):
        lo = b * BLOCK
        _step_block(0, lo, min(lo + BLOCK, n), state, steps, episodes, prev_done, act_i, act_f,
                    state, True, reward, term, trunc, final_obs, has_final, mode, max_steps, key,
                    id_offset, low32, span32)


@njit(**OPTS)
def cartpole_step_kernel_serial(kind, state, steps, episodes, prev_done, act_i, act_f, obs,
                                obs_is_state, reward, term, trunc, final_obs, has_final, mode,
                                max_steps, key, id_offset, low32, span32):
    """`cartpole_step_kernel` on the calling thread only."""
    n = state.shape[0]
    for lo in range(0, n, BLOCK):
        _step_block(0, lo, min(lo + BLOCK, n), state, steps, episodes, prev_done, act_i, act_f,
                    state, True, reward, term, trunc, final_obs, has_final, mode, max_steps, key,
                    id_offset, low32, span32)


def step_kernels(kind: int):
    """(parallel, serial) step kernels for a task kind."""
    if kind == 0:
        return cartpole_step_kernel, cartpole_step_kernel_serial
    return step_kernel, step_kernel_serial


@njit(parallel=True, cache=True)
def reset_kernel(kind, state, steps, episodes, prev_done, mask, obs, obs_is_state, key, id_offset,
                 low32, span32):
    """Reset the envs where mask [N] is set; write their observation."""
    for i in prange(state.shape[0]):
        if mask[i]:
            _reset_env(state, i, key, id_offset + i, episodes[i], low32, span32)
            episodes[i] += 1
            steps[i] = 0
            prev_done[i] = False
            if not obs_is_state:
                _observe(kind, state, i, obs)
