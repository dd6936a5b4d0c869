"""Binds the recipe to objects, in one place (STYLE.md 2): names become objects here and only here
(registries -> allocators, estimators, losses, collectors, shapers, engines, rewards, actors); every
function below this module gets explicit arguments, never the config.

Example: allocator = allocator_from(cfg, task); state = allocator_state(allocator)
"""
from __future__ import annotations

import uuid
from functools import partial

from algorithms.advantages import ADVANTAGE_ESTIMATORS
from allocation import ALLOCATORS
from allocation.curriculum import linear_budget, n_drop_budget, step_exponential_budget
from allocation.knapsack import KnapsackState
from allocation.v0_allocation import V0Allocator
from envs.sources import prompt_text
from envs.tasks import build_task
from rl.config import Config, ConfigError
from rl.startup import check_cpus
from rl.startup import check_startup as check_names  # noqa: F401 - drivers call build.check_names
from rl.data.prompts import PromptEncoder
from rl.drivers.estimators import CriticEstimator, GroupEstimator
from rl.drivers.evaluation import Evaluator
from rl.drivers.experience import COLLECTORS, REWARD_SHAPERS, Experience, Sampling, rollout_step
from rl.workers.critic import CriticActor, ReferenceActor
from rl.workers.learner import LearnerActor, LossSettings
from rl.workers.learner_group import ActorLearner, LearnerGroup
from rl.workers.placement import Placement, Role
from rl.workers.ray_setup import local_threads
from rl.workers.reward_model import RewardModelActor, RewardModels
from rl.workers.rollout_worker import RolloutWorker
from rl.workers.weight_sync import Phases


def _lookup(registry, key: str, name: str):
    try:
        return registry.get(name)
    except KeyError as e:
        raise ConfigError(f"{key}: {e}") from None


def task_from(cfg: Config, tokenizer=None):
    """The recipe's task; with `task.max_prompt_tokens`, prompts longer than that (after the chat
    template) are dropped and the count is printed."""
    t = cfg.task
    try:
        task = build_task(t.name, digits=t.digits, operations=t.operations, train_size=t.train_size,
                          eval_size=t.eval_size, seed=cfg.run.seed, prompt_template=t.prompt_template,
                          system_prompt=t.system_prompt, path=t.path, eval_path=t.eval_path, split=t.split,
                          eval_split=t.eval_split, prompt_column=t.prompt_column, answer_column=t.answer_column)
        if t.max_prompt_tokens is not None:
            from rl.workers.models import load_tokenizer
            encode = PromptEncoder(tokenizer or load_tokenizer(cfg.model.name), t.system_prompt)
            train, held = task.drop_long(lambda ex: len(encode(ex)), t.max_prompt_tokens)
            if train or held:
                print(f"task.max_prompt_tokens={t.max_prompt_tokens}: dropped {train} train and {held} held-out "
                      f"prompts ({len(task.train)} train, {len(task.eval)} held-out left)", flush=True)
        return task
    except KeyError as e:
        raise ConfigError(f"task.name: {e}") from None
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(str(e)) from None


# -- allocation ----------------------------------------------------------------------------------
def allocator_from(cfg: Config, task=None):
    """`allocation.name` from the ALLOCATORS registry; with `allocation.v0_predictor`, V0 wraps it."""
    a, n = cfg.allocation, cfg.rollout.samples_per_prompt
    cls = _lookup(ALLOCATORS, "allocation.name", a.name)
    knapsack = partial(ALLOCATORS.get("knapsack"), n, a.min_samples_per_prompt, a.max_samples_per_prompt)
    try:
        if a.name == "knapsack":
            allocator = knapsack()
        elif a.name == "curriculum":
            inner = knapsack() if a.curriculum_samples == "knapsack" else None
            allocator = cls(length_schedule(cfg), n, samples_allocator=inner)
        else:
            allocator = cls(n)
    except ValueError as e:
        raise ConfigError(f"allocation: {e}") from None
    if a.v0_predictor and task is not None:
        prompt_of = {e.key: prompt_text(e.prompt) for e in task.train}
        allocator = V0Allocator(allocator, partial(_v0_predict, a.v0_predictor, prompt_of), a.v0_context_size)
    return allocator


def _v0_predict(path: str, prompt_of: dict, keys, context) -> list[float]:
    from rl.v0.predictor import predict_success
    return predict_success(path, [prompt_of[k] for k in keys], [(prompt_of[k], p) for k, p in context])


def allocator_state(allocator):
    """The allocator's own state, or a plain success history (kept for metrics and rollout logs)."""
    state = allocator.new_state()
    return state if state is not None else KnapsackState()


def length_schedule(cfg: Config):
    a, steps = cfg.allocation, cfg.trainer.steps
    if a.schedule == "step_exponential":
        return partial(step_exponential_budget, b0=a.budget_start_tokens, gamma=a.budget_gamma,
                       period=a.budget_period_steps)
    if a.schedule == "n_drop":
        return partial(n_drop_budget, total_steps=steps, b_start=a.budget_start_tokens,
                       b_end=a.budget_end_tokens, n_drops=a.budget_drops)
    return partial(linear_budget, total_steps=steps, b_start=a.budget_start_tokens, b_end=a.budget_end_tokens)


# -- experience ----------------------------------------------------------------------------------
def sampling(cfg: Config) -> Sampling:
    r = cfg.rollout
    return Sampling(max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p, stop=list(r.stop))


def reward_shapers(cfg: Config) -> list:
    al = cfg.algorithm
    if not al.overlong_max_tokens:
        return []
    return [partial(REWARD_SHAPERS.get("overlong"), max_tokens=al.overlong_max_tokens,
                    cache_tokens=al.overlong_cache_tokens)]


def reward_models_from(cfg: Config) -> RewardModels:
    """One actor per `rewards:` entry with `model:` (1 GPU each by default where the cluster has GPUs, else
    CPU), loaded before any rollout; the driver's Run owns them and kills them by handle at the end."""
    import ray
    has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    actors, refs = {}, {}
    for i, r in enumerate(cfg.rewards):
        if r.kind != "model":
            continue
        gpus = r.num_gpus if r.num_gpus is not None else (1.0 if has_gpus else 0.0)
        actors[i] = RewardModelActor.options(num_cpus=r.num_cpus, num_gpus=gpus).remote(
            r.model, label_index=r.label_index, output=r.output, batch_size=r.batch_size,
            max_length_tokens=r.max_length_tokens, dtype=r.dtype, num_threads=local_threads())
        refs[i] = actors[i].info.remote()
    models = RewardModels(actors)
    for i, ref in refs.items():
        try:
            ray.get(ref, timeout=cfg.resources.ready_timeout_s)
        except ray.exceptions.GetTimeoutError:
            models.close()
            raise ConfigError(f"rewards.{i}.model: its actor was not ready within resources.ready_timeout_s="
                              f"{cfg.resources.ready_timeout_s} s (it asks for {cfg.rewards[i].num_cpus} CPUs; "
                              f"the cluster has {ray.available_resources()} free)") from None
        except ray.exceptions.RayError as e:
            models.close()
            raise ConfigError(f"rewards.{i}.model: {cfg.rewards[i].model!r} did not load: {_root_cause(e)}") from None
    return models


def _root_cause(e: BaseException) -> str:
    """The last line of a Ray error that names the exception (the actor's own error, not Ray's wrapping)."""
    lines = [ln.strip() for ln in str(e).splitlines() if "Error" in ln or "Exception" in ln]
    return lines[-1] if lines else str(e).strip().splitlines()[-1]


def experience_from(cfg: Config, engines: list, tok, task, reward_models: RewardModels | None = None) -> Experience:
    allocator = allocator_from(cfg, task)
    rollout = partial(rollout_step, sampling=sampling(cfg), rewards=cfg.rewards, shapers=reward_shapers(cfg),
                      pad_id=tok.pad_token_id, success_threshold=cfg.allocation.success_threshold,
                      reward_models=reward_models)
    return Experience(engines, PromptEncoder(tok, cfg.task.system_prompt), task.sampler(cfg.run.seed), allocator,
                      allocator_state(allocator), rollout, prompts_per_step=cfg.trainer.prompts_per_step,
                      seed=cfg.run.seed, success_threshold=cfg.allocation.success_threshold)


def collector_from(cfg: Config):
    """-> collect(experience, step) -> StepData: DAPO dynamic sampling or a single draw."""
    if cfg.algorithm.dynamic_sampling:
        return partial(COLLECTORS.get("dapo_dynamic_sampling"), max_generation_rounds=cfg.algorithm.max_generation_rounds)
    return COLLECTORS.get("single_draw")


def evaluator_from(cfg: Config, engine, tok, task, reward_models: RewardModels | None = None) -> Evaluator:
    e = cfg.eval
    return Evaluator(engine, PromptEncoder(tok, cfg.task.system_prompt), task.eval[: e.num_prompts], cfg.rewards[0],
                     max_new_tokens=e.max_new_tokens, pass_k=e.pass_k, seed=cfg.run.seed,
                     threshold=cfg.allocation.success_threshold, reward_models=reward_models)


# -- actors --------------------------------------------------------------------------------------
def loss_settings(cfg: Config) -> LossSettings:
    al = cfg.algorithm
    return LossSettings(eps_low=al.eps_low, eps_high=al.eps_high, dual_clip_c=al.dual_clip_c,
                        loss_aggregation=al.loss_aggregation, kl_coef=al.kl_coef, kl_estimator=al.kl_estimator,
                        temperature=cfg.rollout.temperature, max_new_tokens=cfg.rollout.max_new_tokens,
                        policy_loss=al.policy_loss, rollout_correction=al.rollout_correction,
                        correction_params=dict(al.rollout_correction_params))


def roles_from(cfg: Config, kind: str = "group", engines: int | None = None) -> dict:
    """The run's actors by role from `resources:` (GPUs default to 1 per learner and
    `tensor_parallel_size` per engine when the cluster has GPUs, else 0)."""
    import ray
    res, has_gpus = cfg.resources, ray.cluster_resources().get("GPU", 0) > 0
    gpus = lambda r, default: r.num_gpus if r.num_gpus is not None else (default if has_gpus else 0.0)  # noqa: E731
    n_engines = cfg.rollout.num_workers if engines is None else engines
    host = "learner" if kind == "critic" and cfg.critic.placement == "colocated" else None
    together = cfg.placement.mode == "colocated"  # engine i in learner rank i's bundle: one device, two phases
    roles = {"learner": Role(res.learner.num_actors, res.learner.num_cpus,
                             gpus(res.learner, 0.5 if host or together else 1.0), None, res.learner.custom),
             "engine": Role(n_engines, res.engine.num_cpus,
                            gpus(res.engine, 0.5 if together else float(cfg.rollout.tensor_parallel_size)),
                            "learner" if together else None, res.engine.custom)}
    if kind == "critic":  # colocated: one GPU shared (learner 0.5, critic and reference 0.25), the learner's CPUs
        cpus = lambda r: 0.0 if host else r.num_cpus  # noqa: E731
        roles["critic"] = Role(res.critic.num_actors, cpus(res.critic), gpus(res.critic, 0.25 if host else 1.0), host, res.critic.custom)
        if cfg.critic.kl_penalty_coef > 0:
            roles["reference"] = Role(1, cpus(res.reference), gpus(res.reference, 0.25 if host else 1.0), host,
                                      res.reference.custom)
    return roles


def phases_from(cfg: Config) -> Phases:
    """What colocated roles hand over between phases (rl/workers/weight_sync.py: Phases)."""
    p, together = cfg.placement, cfg.placement.mode == "colocated"
    return Phases(engine_sleep=cfg.rollout.sleep_between_phases or (together and p.engine_sleep),
                  offload_optimizer=together and p.offload_optimizer, offload_params=together and p.offload_params)


def placement_from(cfg: Config, kind: str = "group", engines: int | None = None) -> Placement:
    """The run's placement group, placed (or an error naming what the cluster lacks)."""
    try:
        roles = roles_from(cfg, kind, engines)
        check_cpus(cfg, roles)
        if cfg.placement.preflight:  # memory per bundle, before any actor starts (rl/workers/preflight.py)
            from rl.workers import preflight
            preflight.check(cfg, roles)
        return Placement.create(roles, cfg.resources.strategy, cfg.resources.ready_timeout_s)
    except (ValueError, RuntimeError) as e:
        raise ConfigError(str(e)) from None


def start_workers(cfg: Config, pad_id: int, place: Placement):
    """-> (engines, learner): the learner an ActorLearner, or a LearnerGroup of `resources.learner.num_actors`
    sharded ranks. A single learner is named, so a restarted engine re-syncs itself from it."""
    t, n = cfg.trainer, cfg.resources.learner.num_actors
    kwargs = dict(dtype=cfg.model.dtype, seed=cfg.run.seed, lr=t.lr, weight_decay=t.weight_decay,
                  max_grad_norm=t.max_grad_norm, warmup_steps=t.warmup_steps, minibatch_samples=t.minibatch_samples,
                  microbatch_samples=t.microbatch_samples, updates_per_batch=cfg.algorithm.updates_per_batch,
                  loss=loss_settings(cfg), num_threads=local_threads(), pad_id=pad_id, master_dtype=cfg.model.master_dtype,
                  gradient_checkpointing=t.gradient_checkpointing)
    name = f"learner-{uuid.uuid4().hex[:12]}" if n == 1 else None
    actor_class = LearnerActor
    if cfg.model.lora is not None:  # adapters only (rl/workers/lora.py); validated to one learner
        from rl.workers.lora import LoraLearnerActor, LoraSettings
        lo = cfg.model.lora
        actor_class, kwargs["lora"] = LoraLearnerActor, LoraSettings(lo.r, lo.alpha, lo.dropout, tuple(lo.target_modules))
    if n == 1:
        learner = ActorLearner(actor_class.options(name=name, **place.options("learner")).remote(cfg.model.name, **kwargs))
    else:
        r = place.roles["learner"]
        opts = rank_options(place, "learner", n)
        learner = LearnerGroup(cfg.model.name, n, strategy=cfg.resources.learner.sharding, num_cpus=r.cpus,
                               num_gpus=r.gpus, timeout_s=cfg.sync.timeout_s, actor_options=opts, **kwargs)
    engines = [engine_from(cfg, learner_name=name, **place.options("engine", i)) for i in range(place.roles["engine"].count)]
    return engines, learner


def rank_options(place: Placement, role: str, n: int) -> list[dict]:
    """Each sharded rank's Ray options (its bundle) without the resources the group passes itself."""
    return [{k: v for k, v in place.options(role, i).items() if k not in ("num_cpus", "num_gpus")} for i in range(n)]


def engine_from(cfg: Config, learner_name: str | None = None, **options):
    r = cfg.rollout
    kwargs = {"gpu_memory_utilization": r.gpu_memory_utilization, "tensor_parallel_size": r.tensor_parallel_size,
              "max_model_len": r.max_model_len,
              "kv_cache_memory_bytes": None if r.kv_cache_mb is None else int(r.kv_cache_mb * 2**20),
              "weight_transfer": "vllm" if cfg.sync.transport == "vllm" else "actor"}
    return RolloutWorker.options(**options).remote(r.engine, cfg.model.name, cfg.model.dtype, cfg.run.seed,
                                                   r.share_prefill, engine_kwargs=kwargs, learner_name=learner_name)


def estimator_from(cfg: Config, kind: str, pad_id: int, place: Placement | None = None):
    """"group": a GRPO-family baseline by `algorithm.advantage`; "critic": LLM PPO's critic (+ reference)."""
    if kind == "group":
        return GroupEstimator(_lookup(ADVANTAGE_ESTIMATORS, "algorithm.advantage", cfg.algorithm.advantage))
    from rl.workers.learner_group import ActorCritic, CriticGroup
    c, t, n = cfg.critic, cfg.trainer, cfg.resources.critic.num_actors
    kwargs = dict(dtype=cfg.model.dtype, seed=cfg.run.seed, lr=c.lr, weight_decay=t.weight_decay,
                  max_grad_norm=t.max_grad_norm, value_clip=c.value_clip, value_loss_coef=c.value_loss_coef,
                  minibatch_samples=t.minibatch_samples, microbatch_samples=t.microbatch_samples,
                  updates_per_batch=cfg.algorithm.updates_per_batch, loss_aggregation=cfg.algorithm.loss_aggregation,
                  max_new_tokens=cfg.rollout.max_new_tokens, num_threads=local_threads(), pad_id=pad_id)
    if n == 1:
        critic = ActorCritic(CriticActor.options(**place.options("critic")).remote(c.model or cfg.model.name, **kwargs))
    else:  # sharded like the policy, each rank in its own bundle
        r = place.roles["critic"]
        opts = rank_options(place, "critic", n)
        critic = CriticGroup(c.model or cfg.model.name, n, strategy=cfg.resources.critic.sharding, num_cpus=r.cpus,
                             num_gpus=r.gpus, timeout_s=cfg.sync.timeout_s, actor_options=opts, **kwargs)
    reference = None
    if c.kl_penalty_coef > 0:
        reference = ReferenceActor.options(**place.options("reference")).remote(
            cfg.model.name, cfg.model.dtype, cfg.run.seed, temperature=cfg.rollout.temperature,
            microbatch_samples=t.microbatch_samples, num_threads=local_threads(), pad_id=pad_id)
    return CriticEstimator(critic, reference, c.gamma, c.lam, c.kl_penalty_coef, c.whiten_advantages)


# -- coding agents -------------------------------------------------------------------------------
def coding_tasks(cfg: Config) -> list:
    from envs.coding.sources import load_task_source
    try:
        return load_task_source(cfg.coding.tasks, cfg.run.seed, workers=1)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"coding.tasks: {e}") from None


def turn_policy(cfg: Config):
    from allocation.turn_control import parse_turn_control
    try:
        return parse_turn_control(cfg.coding.turn_control)
    except ValueError as e:
        raise ConfigError(f"coding.turn_control: {e}") from None


def episodes_from(cfg: Config, tok):
    """-> run(tasks, samples_per_task, engine) -> (trajectories, group ids), sandboxed, the turn budget bound."""
    from envs.coding.sandbox import LocalSandbox, detect_local_backend
    from rl.drivers.episodes import episodes
    c = cfg.coding
    sandbox = partial(_sandbox, LocalSandbox, c.command_timeout_s, detect_local_backend())
    return partial(episodes, tok=tok, policy=turn_policy(cfg), make_sandbox=sandbox,
                   max_new_tokens_per_turn=c.max_new_tokens_per_turn, temperature=cfg.rollout.temperature,
                   hard_turn_limit=c.hard_turn_limit, command_timeout_s=c.command_timeout_s, agent_format=c.agent)


def _sandbox(cls, timeout_s: float, backend: str, task):
    return cls.create(timeout_s=timeout_s, backend=backend)


# -- DPO -----------------------------------------------------------------------------------------
def preference_data(cfg: Config, tok):
    """-> (train, held-out) EncodedPairs and counts {pairs/train, pairs/held_out, pairs/dropped_too_long}."""
    from rl.data.prefs import encode_pairs, load_pairs, pairs_from_rollouts, split_pairs
    d = cfg.dpo
    pairs = load_pairs(d.pairs_path) if d.pairs_path else pairs_from_rollouts(d.from_rollouts)
    train, held = [encode_pairs(tok, ps, cfg.task.system_prompt, d.max_length_tokens, d.append_eos)
                   for ps in split_pairs(pairs, d.eval_fraction, cfg.run.seed)]
    if len(train) == 0:
        raise ConfigError(f"dpo.max_length_tokens: every training prompt is longer than {d.max_length_tokens} tokens")
    return train, held, {"pairs/train": len(train), "pairs/held_out": len(held),
                         "pairs/dropped_too_long": train.dropped + held.dropped}


def dpo_learner_from(cfg: Config, pad_id: int, place: Placement):
    """-> an ActorDPO (one DPO learner actor) or a DPOGroup of `resources.learner.num_actors` sharded ranks."""
    from rl.workers.dpo_learner import DPOLearnerActor
    from rl.workers.learner_group import ActorDPO, DPOGroup
    t, d, n = cfg.trainer, cfg.dpo, cfg.resources.learner.num_actors
    kwargs = dict(dtype=cfg.model.dtype, seed=cfg.run.seed, lr=t.lr, weight_decay=t.weight_decay,
                  max_grad_norm=t.max_grad_norm, warmup_steps=t.warmup_steps, beta=d.beta,
                  microbatch_pairs=d.microbatch_pairs, num_threads=local_threads(), pad_id=pad_id,
                  master_dtype=cfg.model.master_dtype, gradient_checkpointing=t.gradient_checkpointing)
    if n == 1:
        return ActorDPO(DPOLearnerActor.options(**place.options("learner")).remote(cfg.model.name, **kwargs))
    r = place.roles["learner"]
    opts = rank_options(place, "learner", n)
    return DPOGroup(cfg.model.name, n, strategy=cfg.resources.learner.sharding, num_cpus=r.cpus, num_gpus=r.gpus,
                    timeout_s=cfg.sync.timeout_s, actor_options=opts, **kwargs)


# -- SFT -----------------------------------------------------------------------------------------
def sft_data(cfg: Config, tok):
    """-> (train, held-out) TokenRows (train packed when `sft.packing`) and counts {sft/...}."""
    from rl.data.sft import encode_conversations, load_conversations, split_conversations
    s = cfg.sft
    convs = load_conversations(s.path, s.split, s.messages_column, "sft.path")
    if s.eval_path:
        train_c, held_c = convs, load_conversations(s.eval_path, s.split, s.messages_column, "sft.eval_path")
    else:
        train_c, held_c = split_conversations(convs, s.eval_fraction, cfg.run.seed)
    train = encode_conversations(tok, train_c, s.max_seq_tokens, cfg.task.system_prompt, s.packing)
    held = encode_conversations(tok, held_c, s.max_seq_tokens, cfg.task.system_prompt)
    if len(train) == 0:
        raise ConfigError(f"sft.max_seq_tokens: no training conversation has an assistant token within "
                          f"{s.max_seq_tokens} tokens")
    return train, held, {"sft/train_conversations": len(train_c) - train.dropped, "sft/train_rows": len(train),
                         "sft/held_out_conversations": len(held), "sft/dropped_too_long": train.dropped + held.dropped}


def sft_learner_from(cfg: Config, pad_id: int, place: Placement):
    """-> an ActorSFT (one SFT learner actor; sharded SFT learners are not built yet)."""
    from rl.workers.sft_learner import ActorSFT, SFTLearnerActor
    t = cfg.trainer
    kwargs = dict(dtype=cfg.model.dtype, seed=cfg.run.seed, lr=t.lr, weight_decay=t.weight_decay,
                  max_grad_norm=t.max_grad_norm, warmup_steps=t.warmup_steps,
                  microbatch_sequences=cfg.sft.microbatch_sequences, num_threads=local_threads(), pad_id=pad_id,
                  master_dtype=cfg.model.master_dtype, gradient_checkpointing=t.gradient_checkpointing)
    return ActorSFT(SFTLearnerActor.options(**place.options("learner")).remote(cfg.model.name, **kwargs))
