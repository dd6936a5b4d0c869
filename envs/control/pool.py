"""A sharded vector env: contiguous env slices stepped by Ray actors (across cores, or across
nodes when Ray joins a cluster), results gathered into one batch with Gymnasium's VectorEnv API.

Shard k holds global env ids [offset_k, offset_k + n_k). Native envs (ids in `dynamics.MODELS`,
with or without the "rl/" namespace) take `env_id_offset`, so their counter-based resets make the
batch identical whatever `num_shards` is. Any other Gymnasium env runs in a `SyncVectorEnv` built
inside the actor from its registered id or from a "package.module:function" factory path (no
closures cross process boundaries); env j is seeded with seed + global id.

Shapes: obs [num_envs, *obs_shape]; rewards, terminations, truncations [num_envs]; info arrays are
concatenated along the env axis with `_key` masks (absent in a shard -> False).
Example: pool = ShardedVectorEnv("CartPole-v1", num_envs=8192, num_shards=2)
         obs, _ = pool.reset(seed=0); obs, r, term, trunc, info = pool.step(actions)
"""
from __future__ import annotations

import importlib
from typing import Any

import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.control.dynamics import MODELS
from envs.control.vector import ControlVectorEnv, parse_autoreset_mode


def shard_sizes(num_envs: int, num_shards: int) -> list[int]:
    """Near-equal contiguous split. Example: shard_sizes(10, 3) -> [4, 3, 3]."""
    base, extra = divmod(num_envs, num_shards)
    return [base + (1 if k < extra else 0) for k in range(num_shards)]


def _native_name(env_id: str) -> str | None:
    name = env_id.split("/", 1)[1] if env_id.startswith("rl/") else env_id
    return name if name in MODELS else None


def _load_factory(path: str):
    module, _, fn = path.partition(":")
    return getattr(importlib.import_module(module), fn)


class EnvShard:
    """One slice of the pool; runs inside a Ray actor (or in-process for tests)."""

    def __init__(self, env_id: str | None, factory: str | None, num_envs: int, env_id_offset: int,
                 autoreset_mode: str, backend: str, env_kwargs: dict[str, Any]):
        self.offset, self.num_envs = env_id_offset, num_envs
        name = _native_name(env_id) if (env_id and factory is None) else None
        mode = parse_autoreset_mode(autoreset_mode)
        if name is not None:
            self.env = ControlVectorEnv(num_envs, backend=backend, autoreset_mode=mode,
                                        env_id_offset=env_id_offset, model=name, **env_kwargs)
        else:
            make = _load_factory(factory) if factory else (
                lambda: gymnasium.make(env_id, **env_kwargs))
            self.env = gymnasium.vector.SyncVectorEnv([make] * num_envs, autoreset_mode=mode)
        self.native = name is not None

    def spaces(self):
        return self.env.single_observation_space, self.env.single_action_space

    def reset(self, seed: int | None, mask: np.ndarray | None):
        options = None if mask is None else {"reset_mask": mask}
        if seed is not None and not self.native:
            seed = [seed + self.offset + j for j in range(self.num_envs)]
        return self.env.reset(seed=seed, options=options)

    def step(self, actions: np.ndarray):
        return self.env.step(actions)


def merge_infos(infos: list[dict[str, Any]], sizes: list[int]) -> dict[str, Any]:
    """Concatenate per-shard vector infos along the env axis; keys missing in a shard are
    filled with zeros (masks with False). Example: merge_infos([{}, {"x": a, "_x": m}], [2, 2])."""
    keys = [k for info in infos for k in info]
    out: dict[str, Any] = {}
    for key in dict.fromkeys(keys):
        vals = [info.get(key) for info in infos]
        if any(isinstance(v, dict) for v in vals):
            out[key] = merge_infos([v if isinstance(v, dict) else {} for v in vals], sizes)
            continue
        like = next(v for v in vals if v is not None)
        parts = [v if v is not None else np.zeros((n, *like.shape[1:]), like.dtype)
                 for v, n in zip(vals, sizes)]
        if like.dtype == object:
            for p, v in zip(parts, vals):
                if v is None:
                    p[...] = None
        out[key] = np.concatenate(parts)
    return out


class ShardedVectorEnv(VectorEnv):
    def __init__(self, env_id: str | None = None, num_envs: int = 1, num_shards: int = 2,
                 autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
                 backend: str = "numba", factory: str | None = None,
                 env_kwargs: dict[str, Any] | None = None, num_cpus_per_shard: float = 1.0,
                 local: bool = False):
        """local=True builds the shards in this process (no Ray): the same code path for tests."""
        if (env_id is None) == (factory is None):
            raise ValueError("give exactly one of env_id or factory")
        self.num_envs, self.num_shards = num_envs, num_shards
        self.autoreset_mode = parse_autoreset_mode(autoreset_mode)
        self.metadata = {"autoreset_mode": self.autoreset_mode}
        self.sizes = shard_sizes(num_envs, num_shards)
        offsets = np.cumsum([0] + self.sizes[:-1]).tolist()
        args = [(env_id, factory, n, off, self.autoreset_mode.value, backend, env_kwargs or {})
                for n, off in zip(self.sizes, offsets)]
        self._local = local
        if local:
            self.shards = [EnvShard(*a) for a in args]
            obs_space, act_space = self.shards[0].spaces()
        else:
            import ray
            actor = ray.remote(num_cpus=num_cpus_per_shard)(EnvShard)
            self.shards = [actor.remote(*a) for a in args]
            obs_space, act_space = ray.get(self.shards[0].spaces.remote())
        self.single_observation_space, self.single_action_space = obs_space, act_space
        self.observation_space = batch_space(obs_space, num_envs)
        self.action_space = batch_space(act_space, num_envs)
        self._bounds = np.cumsum([0] + self.sizes).tolist()
        self._obs: np.ndarray | None = None

    def _call(self, method: str, per_shard_args: list[tuple]) -> list:
        if self._local:
            return [getattr(s, method)(*a) for s, a in zip(self.shards, per_shard_args)]
        import ray
        return ray.get([getattr(s, method).remote(*a) for s, a in zip(self.shards, per_shard_args)])

    def _slices(self):
        return [slice(a, b) for a, b in zip(self._bounds[:-1], self._bounds[1:])]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        mask = (options or {}).get("reset_mask")
        sl = self._slices()
        if mask is None:
            out = self._call("reset", [(seed, None)] * self.num_shards)
            self._obs = np.concatenate([np.asarray(o) for o, _ in out])
            return self._obs.copy(), merge_infos([i for _, i in out], self.sizes)
        mask = np.asarray(mask, dtype=np.bool_)
        active = [k for k, s in enumerate(sl) if mask[s].any()]
        out = self._call_subset("reset", active, [(seed, mask[sl[k]]) for k in active])
        infos = [{} for _ in sl]
        for k, (o, i) in zip(active, out):
            self._obs[sl[k]] = o
            infos[k] = i
        return self._obs.copy(), merge_infos(infos, self.sizes)

    def _call_subset(self, method: str, ks: list[int], args: list[tuple]) -> list:
        if self._local:
            return [getattr(self.shards[k], method)(*a) for k, a in zip(ks, args)]
        import ray
        return ray.get([getattr(self.shards[k], method).remote(*a) for k, a in zip(ks, args)])

    def step(self, actions):
        actions = np.asarray(actions)
        out = self._call("step", [(actions[s],) for s in self._slices()])
        obs, rew, term, trunc, infos = zip(*out)
        self._obs = np.concatenate([np.asarray(o) for o in obs])
        return (self._obs.copy(), np.concatenate(rew), np.concatenate(term),
                np.concatenate(trunc), merge_infos(list(infos), self.sizes))

    def close_extras(self, **kwargs: Any) -> None:
        if not self._local:
            import ray
            for s in self.shards:
                ray.kill(s)
        self.shards = []
