"""Fused numba kernels: physics + time limit + autoreset + observation write for every env in one
parallel pass over the batch (no temporaries, no per-step allocation).

Same equations as `dynamics.py` (which documents the sources), written per env on scalars so the
whole step of one env stays in registers. `kind` selects the task (ControlModel.kind); `mode` the
autoreset mode: 0 NEXT_STEP, 1 SAME_STEP, 2 DISABLED.

Shapes: state [D, N] float32; steps, episodes [N] int64; prev_done, term, trunc, has_final [N]
bool; act_i [N] int64 (discrete) or act_f [N] float32 (Pendulum); obs, final_obs [N, obs_dim].
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
# fast-math without 'contract': no FMA fusion, so reset states keep the exact bits of the numpy
# and torch paths (rng.py); 'afn' lets LLVM use fast float32 sin/cos.
FAST = {"nnan", "ninf", "nsz", "arcp", "afn", "reassoc"}


@njit(inline="always")
def _mix32(x):
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & MASK32
    x = x ^ (x >> 15)
    x = (x * 0x2C1B3C6D) & MASK32
    return x ^ (x >> 16)


@njit(inline="always")
def _reset_env(state, i, key, env_id, counter, low32, span32):
    for k in range(state.shape[0]):
        h = _mix32((env_id ^ key) & MASK32)
        h = _mix32(h ^ (counter & MASK32))
        h = _mix32(h ^ k)
        u = np.float32(h >> 8) * np.float32(1.0 / (1 << 24))
        state[k, i] = low32[k] + span32[k] * u


F = np.float32  # CartPole runs in float32: the hot path of the benchmarks and of PPO
C_TAU, C_G, C_F, C_PML, C_TM = F(0.02), F(9.8), F(10.0), F(0.05), F(1.1)
C_43, C_MP, C_HALF, C_X, C_TH = F(4.0 / 3.0), F(0.1), F(0.5), F(2.4), F(TH_LIM)


@njit(inline="always")
def _cartpole(state, i, a):
    x, x_dot, th, th_dot = state[0, i], state[1, i], state[2, i], state[3, i]
    force = C_F if a == 1 else -C_F
    c, s = math.cos(th), math.sin(th)
    temp = (force + C_PML * th_dot * th_dot * s) / C_TM
    th_acc = (C_G * s - c * temp) / (C_HALF * (C_43 - C_MP * c * c / C_TM))
    x_acc = temp - C_PML * th_acc * c / C_TM
    x = x + C_TAU * x_dot
    th = th + C_TAU * th_dot
    state[0, i] = x
    state[1, i] = x_dot + C_TAU * x_acc
    state[2, i] = th
    state[3, i] = th_dot + C_TAU * th_acc
    term = (x < -C_X) | (x > C_X) | (th < -C_TH) | (th > C_TH)
    return F(1.0), term


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
    y0, y1, y2, y3 = state[0, i], state[1, i], state[2, i], state[3, i]
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
    state[0, i], state[1, i], state[2, i], state[3, i] = n0, n1, n2, n3
    term = -math.cos(n0) - math.cos(n1 + n0) > 1.0
    return (0.0 if term else -1.0), term


@njit(inline="always")
def _mountaincar(state, i, a):
    pos, vel = state[0, i], state[1, i]
    vel = min(max(vel + (a - 1) * 0.001 + math.cos(3 * pos) * (-0.0025), -0.07), 0.07)
    vel32 = np.float32(vel)
    pos32 = np.float32(min(max(pos + vel32, -1.2), 0.6))
    if pos32 <= np.float32(-1.2) and vel32 < 0:
        vel32 = np.float32(0.0)
    state[0, i], state[1, i] = pos32, vel32
    return -1.0, (pos32 >= np.float32(0.5) and vel32 >= 0)


@njit(inline="always")
def _pendulum(state, i, u):
    th, thdot = state[0, i], state[1, i]
    u = min(max(u, -2.0), 2.0)
    ang = ((th + PI) % (2 * PI)) - PI
    cost = ang * ang + 0.1 * thdot * thdot + 0.001 * u * u
    new_thdot = min(max(thdot + (15.0 * math.sin(th) + 3.0 * u) * 0.05, -8.0), 8.0)
    state[0, i] = th + new_thdot * 0.05
    state[1, i] = new_thdot
    return -cost, False


@njit(inline="always")
def _physics(kind, state, i, ai, af):
    if kind == 0:
        return _cartpole(state, i, ai)
    if kind == 1:
        return _acrobot(state, i, ai)
    if kind == 2:
        return _mountaincar(state, i, ai)
    return _pendulum(state, i, af)


@njit(inline="always")
def _observe(kind, state, i, out):
    if kind == 1:
        th1, th2 = state[0, i], state[1, i]
        out[i, 0], out[i, 1] = math.cos(th1), math.sin(th1)
        out[i, 2], out[i, 3] = math.cos(th2), math.sin(th2)
        out[i, 4], out[i, 5] = state[2, i], state[3, i]
    elif kind == 3:
        out[i, 0], out[i, 1], out[i, 2] = math.cos(state[0, i]), math.sin(state[0, i]), state[1, i]
    else:
        for k in range(state.shape[0]):
            out[i, k] = state[k, i]


@njit(parallel=True, cache=True, fastmath=FAST)
def step_kernel(kind, state, steps, episodes, prev_done, act_i, act_f, obs, reward, term, trunc,
                final_obs, has_final, mode, max_steps, key, id_offset, low32, span32):
    for i in prange(state.shape[1]):
        if mode == 0 and prev_done[i]:
            _reset_env(state, i, key, id_offset + i, episodes[i], low32, span32)
            episodes[i] += 1
            steps[i] = 0
            _observe(kind, state, i, obs)
            reward[i] = 0.0
            term[i] = False
            trunc[i] = False
            prev_done[i] = False
            continue
        r, t = _physics(kind, state, i, act_i[i], act_f[i])
        steps[i] += 1
        tr = steps[i] >= max_steps
        reward[i] = r
        term[i] = t
        trunc[i] = tr
        done = t or tr
        if mode == 1:
            has_final[i] = done
            if done:
                _observe(kind, state, i, final_obs)
                _reset_env(state, i, key, id_offset + i, episodes[i], low32, span32)
                episodes[i] += 1
                steps[i] = 0
        _observe(kind, state, i, obs)
        prev_done[i] = done


@njit(parallel=True, cache=True)
def reset_kernel(kind, state, steps, episodes, prev_done, mask, obs, key, id_offset, low32,
                 span32):
    for i in prange(state.shape[1]):
        if mask[i]:
            _reset_env(state, i, key, id_offset + i, episodes[i], low32, span32)
            episodes[i] += 1
            steps[i] = 0
            prev_done[i] = False
            _observe(kind, state, i, obs)
