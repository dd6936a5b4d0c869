"""Ray actors: thin adapters around the engine and the learner.

Actors ask for a fraction of a CPU so an engine, a learner and reward tasks fit on a 2-core laptop;
generation and training alternate, so each sets torch to use all local cores.
"""
from __future__ import annotations

import os

import ray
import torch

from rl.learner import Learner
from rl.models import load_policy
from rollout.engines import ENGINES
from rollout.types import Completion, GenerationRequest


def local_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@ray.remote(num_cpus=0.5, max_restarts=1)
class RolloutWorker:
    def __init__(self, engine: str, model_name: str, dtype: str = "float32", seed: int = 0,
                 share_prefill: bool = True, max_batch_samples: int = 256, engine_kwargs: dict | None = None):
        torch.set_num_threads(local_threads())
        model, tok = load_policy(model_name, dtype, seed=seed)
        self.engine = ENGINES.get(engine)(model, tok, share_prefill=share_prefill,
                                          max_batch_samples=max_batch_samples)

    def generate(self, requests: list[GenerationRequest], seed: int | None = None) -> list[Completion]:
        return self.engine.generate(requests, seed=seed)

    def update_weights(self, buckets: list, version: int) -> int:
        self.engine.update_weights(buckets, version)
        return version

    def weights_checksum(self) -> int:
        from rollout.weight_sync import params_checksum
        return params_checksum(self.engine.model.named_parameters())

    def sleep(self) -> None:
        self.engine.sleep()

    def wake(self) -> None:
        self.engine.wake()


LearnerActor = ray.remote(num_cpus=0.5, max_restarts=0)(Learner)


class LearnerWorker:
    """Marker for typing; the actor class is LearnerActor."""


def init_ray(address: str | None = None) -> None:
    if ray.is_initialized():
        return
    # workers import reward plug-ins and the toolkit from the driver's cwd and sys.path
    pythonpath = os.pathsep.join([os.getcwd(), *[p for p in os.sys.path if p]])
    env = {"env_vars": {"PYTHONPATH": pythonpath, "TOKENIZERS_PARALLELISM": "false"}}
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=True)
    else:
        ray.init(num_cpus=max(2, local_threads()), include_dashboard=False, runtime_env=env,
                 log_to_driver=True, configure_logging=False)
