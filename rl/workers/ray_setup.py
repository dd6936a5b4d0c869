"""Ray start-up for every driver and tool: a local instance by default, `--address` joins a cluster.

Actors ask for a fraction of a CPU so an engine, a learner and reward tasks fit on a 2-core laptop;
generation and training alternate, so each sets torch to use all local cores (`local_threads`).
"""
from __future__ import annotations

import os

import ray


def local_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def init_ray(address: str | None = None) -> None:
    if ray.is_initialized():
        return
    # workers import reward plug-ins and the toolkit from the driver's cwd and sys.path
    pythonpath = os.pathsep.join([os.getcwd(), *[p for p in os.sys.path if p]])
    env = {"env_vars": {"PYTHONPATH": pythonpath, "TOKENIZERS_PARALLELISM": "false"}}
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=True)
    else:
        # address="local": always a fresh local instance, never a cluster some `ray start` left recorded
        ray.init(address="local", num_cpus=max(2, local_threads()), include_dashboard=False, runtime_env=env,
                 log_to_driver=True, configure_logging=False)
