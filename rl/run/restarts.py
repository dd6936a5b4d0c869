"""Restart a run whose actor died (an OOM-killed learner, a lost node) from its last checkpoint."""
from __future__ import annotations

import gc
import sys

from rl.config import ConfigError
from rl.run.deaths import explain
from rl.run.run import RESTARTS, checkpointer, run_dir
from rl.workers.placement import release_all


def run_with_restarts(driver, cfg, resume: bool = False, address: str | None = None, callbacks: list = ()) -> dict:
    """Runs `driver(cfg, resume=, address=, callbacks=)`; if one of its actors dies, starts again from the
    run's last checkpoint, at most `run.max_restarts` times. -> the driver's summary with `restarts`."""
    import ray.exceptions

    ckpts = checkpointer(cfg)
    for restarts in range(cfg.run.max_restarts + 1):
        if restarts:
            gc.collect()  # the dead attempt's actor handles go, so Ray frees their CPUs for this one
            release_all()  # ... and its placement group
        try:
            summary = driver(cfg, resume=resume, address=address, callbacks=callbacks)
            return {**(summary or {}), "restarts": restarts}
        except ray.exceptions.RayActorError as e:
            death = explain(e)
            if death.cause == "constructor":  # deterministic: the same arguments fail again
                raise ConfigError(f"start-up: {death.message()}") from None
            if restarts == cfg.run.max_restarts:
                print(f"rl: {death.message()} No restarts left (run.max_restarts={cfg.run.max_restarts}); "
                      "`--resume` continues from the last checkpoint.", file=sys.stderr, flush=True)
                raise
            latest = ckpts.latest_intact()
            where = f"its last checkpoint ({latest.name})" if latest else "step 0 (no checkpoint yet)"
            print(f"rl: {death.message()}\nrl: restarting from {where}, restart {restarts + 1} of "
                  f"run.max_restarts={cfg.run.max_restarts}", file=sys.stderr, flush=True)
            resume = latest is not None
            path = run_dir(cfg) / RESTARTS
            previous = int(path.read_text()) if path.exists() and resume else 0
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(str(previous + 1))
