"""Training drivers by `algorithm.name`. Each is `fn(cfg, resume=False, address=None)`."""
from __future__ import annotations

from algorithms.registry import Registry

DRIVERS: Registry = Registry("algorithm")


@DRIVERS.register("grpo")
def grpo(cfg, resume: bool = False, address: str | None = None):
    from rl.trainer import train
    return train(cfg, resume=resume, address=address)
