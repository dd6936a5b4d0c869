"""Native vectorised classic-control envs (CartPole-v1, Acrobot-v1, MountainCar-v0, Pendulum-v1)
with Gymnasium 1.x's VectorEnv API, and a Ray-sharded pool (pool.py).

Importing this package registers "rl/<Name>" ids whose vector entry point is ours and whose single
entry point is Gymnasium's own env:
    gymnasium.make_vec("rl/CartPole-v1", num_envs=4096, vectorization_mode="vector_entry_point",
                       backend="numba", autoreset_mode="same_step")
"""
from __future__ import annotations

import gymnasium

from envs.control.dynamics import MODELS, ControlModel
from envs.control.vector import (VECTOR_CLASSES, AcrobotVectorEnv, CartPoleVectorEnv,
                                 ControlVectorEnv, MountainCarVectorEnv, PendulumVectorEnv,
                                 parse_autoreset_mode)

NAMESPACE = "rl"
_SINGLE_ENTRY = {
    "CartPole-v1": "gymnasium.envs.classic_control.cartpole:CartPoleEnv",
    "Acrobot-v1": "gymnasium.envs.classic_control.acrobot:AcrobotEnv",
    "MountainCar-v0": "gymnasium.envs.classic_control.mountain_car:MountainCarEnv",
    "Pendulum-v1": "gymnasium.envs.classic_control.pendulum:PendulumEnv",
}


def register_envs() -> list[str]:
    """Register rl/<Name> ids (idempotent); returns them."""
    ids = []
    for name, cls in VECTOR_CLASSES.items():
        env_id = f"{NAMESPACE}/{name}"
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=_SINGLE_ENTRY[name],
                               vector_entry_point=f"{cls.__module__}:{cls.__name__}",
                               max_episode_steps=cls.model.max_episode_steps)
        ids.append(env_id)
    return ids


ENV_IDS = register_envs()

__all__ = ["ENV_IDS", "MODELS", "ControlModel", "ControlVectorEnv", "CartPoleVectorEnv",
           "AcrobotVectorEnv", "MountainCarVectorEnv", "PendulumVectorEnv", "register_envs",
           "parse_autoreset_mode"]
