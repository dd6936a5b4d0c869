"""Typed config of classic-control PPO (the `control:` section of a recipe).

Co-scaling rule of Beukman et al. 2026 ("Preventing Learning Stagnation in PPO by Scaling to 1
Million Parallel Environments", SPECS §10): `minibatch_samples` is absolute, so the number of
minibatches per epoch = num_envs * num_steps // minibatch_samples grows with num_envs while lr,
epochs and clip stay fixed.

Example: ControlConfig(num_envs=1 << 20, num_steps=8).num_minibatches -> 128
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional


@dataclass
class ControlConfig:
    env_id: str = "CartPole-v1"          # CartPole-v1 | Acrobot-v1 | MountainCar-v0 | Pendulum-v1
    num_envs: int = 64
    num_steps: int = 32                  # rollout length per env per update
    minibatch_samples: int = 512         # absolute; the minibatch count co-scales with num_envs
    epochs: int = 4
    lr: float = 2.5e-3
    anneal_lr: bool = True
    adam_eps: float = 1e-5
    clip: float = 0.2                    # PPO ratio clip (eps_low = eps_high)
    value_clip: Optional[float] = None   # critic clip eps_v; None = unclipped 0.5 (V - R)^2
    gamma: float = 0.99
    lam: float = 0.95
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    norm_adv: bool = True
    total_env_steps: int = 300_000
    max_updates: int = 0                 # 0 = as many as total_env_steps allows
    stop_at_mean_return: Optional[float] = None  # stop when the last 100 episodes average this
    backend: Literal["numpy", "numba", "torch"] = "numba"
    num_shards: int = 1                  # > 1: env slices on Ray actors (envs/control/pool.py)
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    activation: Literal["tanh", "relu"] = "tanh"
    torch_threads: int = 1               # intra-op threads; 1 avoids spin contention on small batches, 0 = torch default
    eval_episodes: int = 100
    eval_deterministic: bool = True
    ewma_decay: float = 0.0              # PPO-EWMA: > 0 clips against an EWMA of past policies
    sweep_num_envs: list[int] = field(default_factory=list)  # non-empty: scaling study over N
    progress_bar: bool = True

    @property
    def samples_per_update(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_minibatches(self) -> int:
        return max(1, self.samples_per_update // self.minibatch_samples)

    @property
    def num_updates(self) -> int:
        n = max(1, self.total_env_steps // self.samples_per_update)
        return min(n, self.max_updates) if self.max_updates > 0 else n


def load_control_recipe(path: str) -> tuple[ControlConfig, int, str]:
    """Recipe YAML (`run: {name, seed}`, `algorithm: {name: control_ppo}`, `control: {...}`) ->
    (ControlConfig, seed, run name). A stand-in for the toolkit's generic loader, for scripts and
    tests. Example: cfg, seed, name = load_control_recipe("recipes/ppo_cartpole.yaml")"""
    import yaml

    with open(path) as fh:
        doc = yaml.safe_load(fh) or {}
    algo = (doc.get("algorithm") or {}).get("name", "control_ppo")
    if algo != "control_ppo":
        raise ValueError(f"{path}: algorithm.name is {algo!r}, expected 'control_ppo'")
    valid = set(ControlConfig.__dataclass_fields__)
    section = doc.get("control") or {}
    unknown = sorted(set(section) - valid)
    if unknown:
        raise ValueError(f"{path}: unknown control keys {unknown}")
    run = doc.get("run") or {}
    return ControlConfig(**section), int(run.get("seed", 0)), str(run.get("name", "control"))
