"""Array-generic dynamics of the four classic-control tasks (numpy arrays or torch tensors).

Each model matches Gymnasium 1.x's single env (same constants, integrator, reward, termination,
time limit, reset ranges and spaces); state is kept float32 in a [num_envs, state_dim] layout
(one env's state contiguous, updated in place); where the observation is the state itself
(CartPole, MountainCar: `obs_is_state`) the state buffer is the observation, with no copy.

    CartPole-v1    Barto, Sutton & Anderson 1983; Euler, tau 0.02, reward 1, 500 steps
    Acrobot-v1     Sutton 1996 ("book" dynamics); one RK4 step of dt 0.2, reward -1, 500 steps
    MountainCar-v0 Moore 1990; reward -1, 200 steps
    Pendulum-v1    reward -(angle^2 + 0.1 thdot^2 + 0.001 u^2), 200 steps, never terminates

`physics(s, action, xp) -> (new_s, reward, terminated)` takes the D state columns (list of [N])
and the batched action as float32 ([N], or [N, 1] for Pendulum);
`observe(s, xp) -> list of obs columns`.
Example: s, r, d = CARTPOLE.physics([np.zeros(3, np.float32)] * 4, np.ones(3, np.float32), np)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from gymnasium import spaces

PI = math.pi


@dataclass(frozen=True)
class ControlModel:
    name: str                    # gymnasium id of the matching single env, e.g. "CartPole-v1"
    kind: int                    # index used by the fused numba kernel
    state_dim: int
    obs_dim: int
    max_episode_steps: int
    reset_low: tuple[float, ...]  # per state component, U[low, high) at reset
    reset_high: tuple[float, ...]
    physics: Callable
    observe: Callable
    single_observation_space: spaces.Space
    single_action_space: spaces.Space

    @property
    def obs_is_state(self) -> bool:
        """True where the observation is the raw state (then obs [N, D] can alias the state)."""
        return self.observe is _identity


def _cartpole_physics(s, action, xp):
    x, x_dot, theta, theta_dot = s
    force = (action * 2 - 1) * 10.0          # 0 -> -10 N, 1 -> +10 N
    cos_t, sin_t = xp.cos(theta), xp.sin(theta)
    temp = (force + 0.05 * theta_dot * theta_dot * sin_t) / 1.1
    theta_acc = (9.8 * sin_t - cos_t * temp) / (0.5 * (4.0 / 3.0 - 0.1 * cos_t * cos_t / 1.1))
    x_acc = temp - 0.05 * theta_acc * cos_t / 1.1
    new = [x + 0.02 * x_dot, x_dot + 0.02 * x_acc, theta + 0.02 * theta_dot,
           theta_dot + 0.02 * theta_acc]
    th_lim = 12 * 2 * PI / 360
    term = (new[0] < -2.4) | (new[0] > 2.4) | (new[2] < -th_lim) | (new[2] > th_lim)
    return new, xp.ones_like(x), term


def _acrobot_derivs(th1, th2, dth1, dth2, torque, xp):
    # masses, lengths, inertia all 1, centres of mass at 0.5, g 9.8 ("book" variant)
    d1 = 0.25 + (1.0 + 0.25 + 2 * 0.5 * xp.cos(th2)) + 2.0
    d2 = (0.25 + 0.5 * xp.cos(th2)) + 1.0
    phi2 = 0.5 * 9.8 * xp.cos(th1 + th2 - PI / 2.0)
    phi1 = (-0.5 * dth2 * dth2 * xp.sin(th2) - 2 * 0.5 * dth2 * dth1 * xp.sin(th2)
            + 1.5 * 9.8 * xp.cos(th1 - PI / 2) + phi2)
    ddth2 = ((torque + d2 / d1 * phi1 - 0.5 * dth1 * dth1 * xp.sin(th2) - phi2)
             / (0.25 + 1.0 - d2 * d2 / d1))
    ddth1 = -(d2 * ddth2 + phi1) / d1
    return dth1, dth2, ddth1, ddth2


def _wrap_pi(x, xp):
    return x - (2 * PI) * xp.floor((x + PI) / (2 * PI))


def _acrobot_physics(s, action, xp):
    torque = action - 1                        # 0, 1, 2 -> -1, 0, +1
    k1 = _acrobot_derivs(*s, torque, xp)
    k2 = _acrobot_derivs(*[y + 0.1 * k for y, k in zip(s, k1)], torque, xp)
    k3 = _acrobot_derivs(*[y + 0.1 * k for y, k in zip(s, k2)], torque, xp)
    k4 = _acrobot_derivs(*[y + 0.2 * k for y, k in zip(s, k3)], torque, xp)
    ns = [y + 0.2 / 6.0 * (a + 2 * b + 2 * c + d) for y, a, b, c, d in zip(s, k1, k2, k3, k4)]
    ns = [_wrap_pi(ns[0], xp), _wrap_pi(ns[1], xp), ns[2].clip(-4 * PI, 4 * PI),
          ns[3].clip(-9 * PI, 9 * PI)]
    term = -xp.cos(ns[0]) - xp.cos(ns[1] + ns[0]) > 1.0
    reward = xp.where(term, xp.zeros_like(ns[0]), -xp.ones_like(ns[0]))
    return ns, reward, term


def _acrobot_observe(s, xp):
    return [xp.cos(s[0]), xp.sin(s[0]), xp.cos(s[1]), xp.sin(s[1]), s[2], s[3]]


def _mountaincar_physics(s, action, xp):
    pos, vel = s
    vel = vel + (action - 1) * 0.001 + xp.cos(3 * pos) * (-0.0025)
    vel = vel.clip(-0.07, 0.07)
    pos = (pos + vel).clip(-1.2, 0.6)
    vel = xp.where((pos <= -1.2) & (vel < 0), xp.zeros_like(vel), vel)
    term = (pos >= 0.5) & (vel >= 0.0)
    return [pos, vel], -xp.ones_like(pos), term


def _pendulum_physics(s, action, xp):
    th, thdot = s
    u = action.reshape(-1).clip(-2.0, 2.0)
    angle = ((th + PI) % (2 * PI)) - PI
    cost = angle * angle + 0.1 * thdot * thdot + 0.001 * (u * u)
    new_thdot = (thdot + (3 * 10.0 / 2 * xp.sin(th) + 3.0 * u) * 0.05).clip(-8.0, 8.0)
    new_th = th + new_thdot * 0.05
    return [new_th, new_thdot], -cost, xp.zeros_like(th, dtype=bool)


def _identity(s, xp):
    return list(s)


def _pendulum_observe(s, xp):
    return [xp.cos(s[0]), xp.sin(s[0]), s[1]]


def _box(high) -> spaces.Box:
    high = np.array(high, dtype=np.float32)
    return spaces.Box(-high, high, dtype=np.float32)


_TH = 12 * 2 * PI / 360
CARTPOLE = ControlModel(
    "CartPole-v1", 0, 4, 4, 500, (-0.05,) * 4, (0.05,) * 4, _cartpole_physics, _identity,
    _box([4.8, np.inf, _TH * 2, np.inf]), spaces.Discrete(2))
ACROBOT = ControlModel(
    "Acrobot-v1", 1, 4, 6, 500, (-0.1,) * 4, (0.1,) * 4, _acrobot_physics, _acrobot_observe,
    _box([1.0, 1.0, 1.0, 1.0, 4 * PI, 9 * PI]), spaces.Discrete(3))
MOUNTAINCAR = ControlModel(
    "MountainCar-v0", 2, 2, 2, 200, (-0.6, 0.0), (-0.4, 0.0), _mountaincar_physics, _identity,
    spaces.Box(np.array([-1.2, -0.07], np.float32), np.array([0.6, 0.07], np.float32),
               dtype=np.float32), spaces.Discrete(3))
PENDULUM = ControlModel(
    "Pendulum-v1", 3, 2, 3, 200, (-PI, -1.0), (PI, 1.0), _pendulum_physics, _pendulum_observe,
    _box([1.0, 1.0, 8.0]), spaces.Box(-2.0, 2.0, shape=(1,), dtype=np.float32))

MODELS: dict[str, ControlModel] = {m.name: m for m in (CARTPOLE, ACROBOT, MOUNTAINCAR, PENDULUM)}
