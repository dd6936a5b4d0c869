"""Training drivers by `algorithm.name`. Each is `fn(cfg, resume=False, address=None)`."""
from __future__ import annotations

from algorithms.registry import Registry

DRIVERS: Registry = Registry("algorithm")


@DRIVERS.register("grpo")
def grpo(cfg, resume: bool = False, address: str | None = None):
    from rl.trainer import train
    return train(cfg, resume=resume, address=address)


@DRIVERS.register("ppo")
def ppo(cfg, resume: bool = False, address: str | None = None):
    from rl.ppo import train_ppo
    return train_ppo(cfg, resume=resume, address=address)


@DRIVERS.register("dpo")
def dpo(cfg, resume: bool = False, address: str | None = None):
    from rl.dpo import train_dpo
    return train_dpo(cfg, resume=resume, address=address)


@DRIVERS.register("coding_grpo")
def coding_grpo(cfg, resume: bool = False, address: str | None = None):
    from rl.coding_rl import train_coding
    return train_coding(cfg, resume=resume, address=address)


@DRIVERS.register("control_ppo")
def control_ppo(cfg, resume: bool = False, address: str | None = None):
    from pathlib import Path

    from rl.control.train import train_control
    if resume:
        print("rl: control_ppo runs are short and restart from scratch; --resume is ignored")
    if cfg.control.num_shards > 1:
        from rl.workers import init_ray
        init_ray(address)
    return train_control(cfg.control, cfg.run.seed, Path(cfg.run.output_dir) / cfg.run.name, cfg.run.wandb_mode)
