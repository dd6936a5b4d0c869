"""Binds the recipe to objects, in one place (STYLE.md 2): functions below get explicit arguments."""
from __future__ import annotations

import uuid
from functools import partial

from algorithms.advantages import ADVANTAGE_ESTIMATORS
from allocation.curriculum import CurriculumAllocator, linear_budget, n_drop_budget, step_exponential_budget
from allocation.knapsack import KnapsackAllocator, UniformAllocator
from envs.tasks import build_task
from rl.config import Config, ConfigError
from rl.workers.learner import LearnerActor, LossSettings
from rl.workers.ray_setup import local_threads
from rl.workers.rollout_worker import RolloutWorker


def task_from(cfg: Config):
    t = cfg.task
    try:
        return build_task(t.name, digits=t.digits, operations=t.operations, train_size=t.train_size,
                          eval_size=t.eval_size, seed=cfg.run.seed, prompt_template=t.prompt_template,
                          system_prompt=t.system_prompt, path=t.path, eval_path=t.eval_path,
                          prompt_column=t.prompt_column, answer_column=t.answer_column)
    except KeyError as e:
        raise ConfigError(f"task.name: {e}") from None
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(str(e)) from None


def advantage_fn(cfg: Config):
    try:
        return ADVANTAGE_ESTIMATORS.get(cfg.algorithm.advantage)
    except KeyError as e:
        raise ConfigError(f"algorithm.advantage: {e}") from None


def allocator_from(cfg: Config):
    a, n = cfg.allocation, cfg.rollout.samples_per_prompt
    if a.name == "uniform":
        return UniformAllocator(n)
    if a.name == "knapsack":
        return KnapsackAllocator(n, a.n_low, a.n_up)
    if a.name == "curriculum":
        inner = KnapsackAllocator(n, a.n_low, a.n_up) if a.curriculum_samples == "knapsack" else None
        return CurriculumAllocator(length_schedule(cfg), n, samples_allocator=inner)
    raise ConfigError(f"allocation.name: unknown allocator {a.name!r}; valid: curriculum, knapsack, uniform")


def length_schedule(cfg: Config):
    a, steps = cfg.allocation, cfg.trainer.steps
    if a.schedule == "step_exponential":
        return partial(step_exponential_budget, b0=a.budget_start_tokens, gamma=a.budget_gamma,
                       period=a.budget_period_steps)
    if a.schedule == "n_drop":
        return partial(n_drop_budget, total_steps=steps, b_start=a.budget_start_tokens,
                       b_end=a.budget_end_tokens, n_drops=a.budget_drops)
    return partial(linear_budget, total_steps=steps, b_start=a.budget_start_tokens, b_end=a.budget_end_tokens)


def loss_settings(cfg: Config) -> LossSettings:
    al = cfg.algorithm
    return LossSettings(eps_low=al.eps_low, eps_high=al.eps_high, dual_clip_c=al.dual_clip_c,
                        loss_aggregation=al.loss_aggregation, kl_coef=al.kl_coef, kl_estimator=al.kl_estimator,
                        temperature=cfg.rollout.temperature, max_new_tokens=cfg.rollout.max_new_tokens)


def start_workers(cfg: Config, pad_id: int):
    """-> (engines, learner). Engines know the learner's name so a restarted one re-syncs itself."""
    t, name = cfg.trainer, f"learner-{uuid.uuid4().hex[:12]}"
    learner = LearnerActor.options(name=name).remote(
        cfg.model.name, cfg.model.dtype, cfg.run.seed, lr=t.lr, weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm, warmup_steps=t.warmup_steps, minibatch_samples=t.minibatch_samples,
        microbatch_samples=t.microbatch_samples, updates_per_batch=cfg.algorithm.updates_per_batch,
        loss=loss_settings(cfg), num_threads=local_threads(), pad_id=pad_id)
    engines = [RolloutWorker.remote(cfg.rollout.engine, cfg.model.name, cfg.model.dtype, cfg.run.seed,
                                    cfg.rollout.share_prefill, engine_kwargs=engine_kwargs(cfg), learner_name=name)
               for _ in range(cfg.rollout.num_workers)]
    return engines, learner


def engine_kwargs(cfg: Config) -> dict:
    """Engine-specific settings; the hf engine ignores those it has no use for."""
    r = cfg.rollout
    return {"gpu_memory_utilization": r.gpu_memory_utilization, "tensor_parallel_size": r.tensor_parallel_size,
            "max_model_len": r.max_model_len,
            "kv_cache_memory_bytes": None if r.kv_cache_mb is None else int(r.kv_cache_mb * 2**20)}


def check_names(cfg: Config) -> None:
    """Fails fast, before any actor starts, on names a registry does not know."""
    from algorithms.aggregation import LOSS_AGGREGATIONS
    from algorithms.kl import KL_ESTIMATORS
    from rollout.engines import ENGINES
    for key, reg, name in [("algorithm.loss_aggregation", LOSS_AGGREGATIONS, cfg.algorithm.loss_aggregation),
                           ("algorithm.kl_estimator", KL_ESTIMATORS, cfg.algorithm.kl_estimator),
                           ("rollout.engine", ENGINES, cfg.rollout.engine)]:
        try:
            reg.get(name)
        except KeyError as e:
            raise ConfigError(f"{key}: {e}") from None
    advantage_fn(cfg)
    allocator_from(cfg)

