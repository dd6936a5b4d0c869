"""Training drivers by `algorithm.name`: each is `fn(cfg, resume=False, address=None, callbacks=()) -> summary`.

A driver is the algorithm, one page: the plumbing is rl/run's `Run`, the objects come from rl/build.py.
"""
from __future__ import annotations

import importlib

from algorithms.registry import Registry

DRIVERS: Registry = Registry("algorithm")

for _name, _target in {"grpo": "rl.drivers.grpo:train", "ppo": "rl.drivers.ppo:train_ppo", "opd": "rl.drivers.opd:train_opd",
                       "dpo": "rl.drivers.dpo:train_dpo", "sft": "rl.drivers.sft:train_sft", "coding_grpo": "rl.drivers.coding_grpo:train_coding",
                       "control_ppo": "rl.drivers.control_ppo:train"}.items():
    def _lazy(cfg, resume: bool = False, address: str | None = None, callbacks: list = (), _target=_target):
        module, fn = _target.split(":")
        return getattr(importlib.import_module(module), fn)(cfg, resume=resume, address=address, callbacks=callbacks)
    DRIVERS.register(_name)(_lazy)
