"""On-policy distillation (`algorithm.name: opd`, SPECS §11): the GRPO driver loop with the teacher estimator.

    for step:
        data     = collect(experience, step)            the student samples (engines), rewards as usual
        adv      = teacher.logprobs(batch) - batch.logprobs    per token, reverse KL (TeacherEstimator)
                   (+ opd.reward_weight x algorithm.advantage of the task reward)
        metrics  = learner.train_step(batch, adv)       algorithm.policy_loss with [S, T] advantages
        sync, log, eval, checkpoint                     as GRPO (trainer.max_staleness_steps k >= 0)

The teacher (`opd.teacher`: an HF folder with the student's tokenizer, checked at start-up) runs in its
own Ray actor outside the placement group, like the reward models (rl/workers/teacher.py).
`teacher_estimator_from` is this driver's builder (rl/build.py holds the other estimators' builders).
Example: rl train recipes/opd_smollm2.yaml
"""
from __future__ import annotations

from algorithms.advantages import ADVANTAGE_ESTIMATORS
from rl.config import Config, ConfigError
from rl.drivers.estimators import TeacherEstimator
from rl.drivers.grpo import train
from rl.workers.ray_setup import local_threads
from rl.workers.teacher import TeacherActor


def teacher_estimator_from(cfg: Config, kind: str, pad_id: int, place=None) -> TeacherEstimator:
    """The teacher actor (1 GPU where the cluster has GPUs unless `opd.num_gpus` says otherwise), loaded
    before any rollout; a load failure or a timeout is a ConfigError naming `opd.teacher`."""
    import ray
    o = cfg.opd
    gpus = o.num_gpus if o.num_gpus is not None else (1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0)
    teacher = TeacherActor.options(num_cpus=o.num_cpus, num_gpus=gpus).remote(
        o.teacher, o.dtype, microbatch_samples=o.microbatch_samples, num_threads=local_threads(), pad_id=pad_id,
        seed=cfg.run.seed)
    try:
        ray.get(teacher.info.remote(), timeout=cfg.resources.ready_timeout_s)
    except ray.exceptions.GetTimeoutError:
        ray.kill(teacher)
        raise ConfigError(f"opd.teacher: its actor was not ready within resources.ready_timeout_s="
                          f"{cfg.resources.ready_timeout_s} s (it asks for {o.num_cpus} CPUs, {gpus} GPUs; "
                          f"the cluster has {ray.available_resources()} free)") from None
    except ray.exceptions.RayError as e:
        ray.kill(teacher)
        lines = [ln.strip() for ln in str(e).splitlines() if "Error" in ln] or [str(e).strip()]
        raise ConfigError(f"opd.teacher: {o.teacher!r} did not load: {lines[-1]}") from None
    task_adv = ADVANTAGE_ESTIMATORS.get(cfg.algorithm.advantage)  # the task reward's share, when mixed in
    return TeacherEstimator(teacher, task_adv, o.reward_weight, o.advantage_clip)


def train_opd(cfg: Config, resume: bool = False, address: str | None = None, callbacks: list = ()) -> dict:
    return train(cfg, resume=resume, address=address, callbacks=callbacks, estimator="opd",
                 make_estimator=teacher_estimator_from)
