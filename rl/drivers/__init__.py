"""Training drivers by `algorithm.name`. Each is `fn(cfg, resume=False, address=None)`."""
from __future__ import annotations

import gc
import sys
from pathlib import Path

from algorithms.registry import Registry

DRIVERS: Registry = Registry("algorithm")


@DRIVERS.register("grpo")
def grpo(cfg, resume: bool = False, address: str | None = None):
    from rl.drivers.grpo import train
    return train(cfg, resume=resume, address=address)


@DRIVERS.register("ppo")
def ppo(cfg, resume: bool = False, address: str | None = None):
    from rl.drivers.ppo import train_ppo
    return train_ppo(cfg, resume=resume, address=address)


@DRIVERS.register("dpo")
def dpo(cfg, resume: bool = False, address: str | None = None):
    from rl.drivers.dpo import train_dpo
    return train_dpo(cfg, resume=resume, address=address)


@DRIVERS.register("coding_grpo")
def coding_grpo(cfg, resume: bool = False, address: str | None = None):
    from rl.drivers.coding_grpo import train_coding
    return train_coding(cfg, resume=resume, address=address)


@DRIVERS.register("control_ppo")
def control_ppo(cfg, resume: bool = False, address: str | None = None):
    from pathlib import Path

    from rl.drivers.control_ppo import train_control
    if resume:
        print("rl: control_ppo runs are short and restart from scratch; --resume is ignored")
    if cfg.control.num_shards > 1:
        from rl.workers.ray_setup import init_ray
        init_ray(address)
    return train_control(cfg.control, cfg.run.seed, Path(cfg.run.output_dir) / cfg.run.name, cfg.run.wandb_mode)


def run_with_restarts(driver, cfg, resume: bool = False, address: str | None = None) -> dict:
    """Run `driver`; if one of its actors dies (an OOM-killed learner, a lost node), start again from
    the run's last checkpoint, at most `run.max_restarts` times. Returns the driver's summary with
    `restarts` added."""
    import ray.exceptions

    from rl.run.checkpoint import Checkpointer

    ckpts = Checkpointer(Path(cfg.run.output_dir) / cfg.run.name / "checkpoints")
    for restarts in range(cfg.run.max_restarts + 1):
        if restarts:
            gc.collect()  # the dead attempt's actor handles go, so Ray frees their CPUs for this one
        try:
            summary = driver(cfg, resume=resume, address=address)
            return {**(summary or {}), "restarts": restarts}
        except ray.exceptions.RayActorError as e:
            if restarts == cfg.run.max_restarts:
                raise
            latest = ckpts.latest()
            where = f"its last checkpoint ({latest.name})" if latest else "step 0 (no checkpoint yet)"
            print(f"rl: an actor of the run died ({type(e).__name__}); restarting from {where}, "
                  f"restart {restarts + 1} of run.max_restarts={cfg.run.max_restarts}", file=sys.stderr, flush=True)
            resume = latest is not None
