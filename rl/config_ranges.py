"""The allowed range of every numeric key, declared once, in interval notation; `check_ranges` walks the
built config and names the first value outside its range (or any NaN / infinity anywhere).

Bounds say what makes sense, not only what does not crash: a learning rate of 5 or a temperature of
1e6 are typos with a valid type. Huge values are bounded too (steps, sizes, timeouts). `rewards.*`
applies to every list item. A key not listed is still checked for finiteness.

Example: check_ranges(cfg) raises ConfigError("trainer.lr: must be in (0, 1], got 5.0")
(rl/config.py's validate runs it after the cross-field checks, whose messages say more where they apply.)
"""
from __future__ import annotations

import dataclasses
import math
import re

from rl.data.mapping import ConfigError

BIG = 10 ** 9  # counts of steps / envs / samples beyond which a value is a typo
TOKENS = 1 << 20  # token lengths
SECONDS = 7 * 24 * 3600.0  # timeouts: a week

RANGES: dict[str, str] = {
    # run
    "run.seed": f"[0, {2 ** 32 - 1}]", "run.checkpoint_every_steps": f"[0, {BIG}]", "run.keep_checkpoints": "[1, 1000]",
    "run.max_restarts": "[0, 100]", "run.log_generations_every_steps": f"[0, {BIG}]",
    # model
    "model.lora.r": "[1, 4096]", "model.lora.alpha": "(0, 1e6]", "model.lora.dropout": "[0, 1)",
    # task
    "task.digits.*": "[1, 9]", "task.train_size": f"[1, {BIG}]", "task.eval_size": f"[0, {BIG}]",
    "task.max_prompt_tokens": f"[1, {TOKENS}]",
    # rewards
    "rewards.*.weight": "[-1e6, 1e6]", "rewards.*.timeout_s": f"(0, {SECONDS}]", "rewards.*.on_error": "[-1e6, 1e6]",
    "rewards.*.max_error_fraction": "[0, 1]", "rewards.*.batch_size": "[1, 65536]", "rewards.*.label_index": "[0, 65536]",
    "rewards.*.max_length_tokens": f"[1, {TOKENS}]", "rewards.*.num_gpus": "[0, 64]", "rewards.*.num_cpus": "[0, 1024]",
    "rewards.*.judge.timeout_s": f"(0, {SECONDS}]", "rewards.*.judge.max_retries": "[0, 100]",
    "rewards.*.judge.backoff_s": "[0, 3600]", "rewards.*.judge.max_concurrency": "[1, 4096]",
    "rewards.*.judge.max_tokens": f"[1, {TOKENS}]", "rewards.*.judge.temperature": "[0, 10]",
    # rollout
    "rollout.num_workers": "[1, 4096]", "rollout.samples_per_prompt": "[1, 65536]",
    "rollout.max_new_tokens": f"[1, {TOKENS}]", "rollout.temperature": "(0, 100]", "rollout.top_p": "(0, 1]",
    "rollout.gpu_memory_utilization": "(0, 1]", "rollout.tensor_parallel_size": "[1, 1024]",
    "rollout.max_model_len": f"[1, {TOKENS}]", "rollout.kv_cache_mb": "[1, 1e8]",
    # algorithm
    "algorithm.eps_low": "[0, 1]", "algorithm.eps_high": "[0, 100]", "algorithm.dual_clip_c": "(1, 1e6]",
    "algorithm.kl_coef": "[0, 1e6]", "algorithm.max_generation_rounds": "[1, 1000]",
    "algorithm.overlong_max_tokens": f"[1, {TOKENS}]", "algorithm.overlong_cache_tokens": f"[0, {TOKENS}]",
    "algorithm.updates_per_batch": "[1, 1000]", "algorithm.rollout_correction_params.*": "[0, 1e6]",
    # trainer
    "trainer.steps": f"[1, {BIG}]", "trainer.prompts_per_step": "[1, 1e6]", "trainer.minibatch_samples": "[1, 1e7]",
    "trainer.microbatch_samples": "[1, 1e7]", "trainer.lr": "(0, 1]", "trainer.weight_decay": "[0, 10]",
    "trainer.max_grad_norm": "(0, 1e12]", "trainer.warmup_steps": f"[0, {BIG}]",
    "trainer.max_staleness_steps": "[0, 64]",
    # sync, resources, placement
    "sync.bucket_mb": "(0, 65536]", "sync.full_every_steps": f"[1, {BIG}]", "sync.dense_threshold": "[0, 1]",
    "sync.timeout_s": f"(0, {SECONDS}]", "sync.verify_every_steps": f"[1, {BIG}]",
    "resources.*.num_cpus": "[0, 1024]", "resources.*.num_gpus": "[0, 64]", "resources.*.num_actors": "[1, 4096]",
    "resources.*.custom.*": "[0, 1e6]", "resources.ready_timeout_s": f"(0, {SECONDS}]",
    "placement.memory_budget_mb": "(0, 1e9]",
    # allocation
    "allocation.min_samples_per_prompt": "[0, 65536]", "allocation.max_samples_per_prompt": "[1, 65536]",
    "allocation.success_threshold": "[-1e6, 1e6]", "allocation.budget_start_tokens": f"[1, {TOKENS}]",
    "allocation.budget_end_tokens": f"[1, {TOKENS}]", "allocation.budget_gamma": "(0, 1]",
    "allocation.budget_period_steps": f"[1, {BIG}]", "allocation.budget_drops": "[0, 1000]",
    "allocation.v0_context_size": "[0, 1e6]",
    # eval
    "eval.every_steps": f"[0, {BIG}]", "eval.num_prompts": "[1, 1e7]", "eval.max_new_tokens": f"[1, {TOKENS}]",
    "eval.pass_k": "[1, 1024]",
    # classic-control PPO
    "control.num_envs": "[1, 1e8]", "control.num_steps": "[1, 1e6]", "control.minibatch_samples": "[1, 1e9]",
    "control.epochs": "[1, 1000]", "control.lr": "(0, 1]", "control.adam_eps": "(0, 1]", "control.clip": "(0, 10]",
    "control.value_clip": "(0, 1e6]", "control.gamma": "[0, 1]", "control.lam": "[0, 1]", "control.ent_coef": "[0, 100]",
    "control.vf_coef": "[0, 100]", "control.max_grad_norm": "(0, 1e12]", "control.total_env_steps": "[1, 1e15]",
    "control.max_updates": f"[0, {BIG}]", "control.num_shards": "[1, 4096]", "control.hidden_sizes.*": "[1, 1e5]",
    "control.torch_threads": "[1, 1024]", "control.eval_episodes": "[0, 1e7]", "control.ewma_decay": "[0, 1)",
    "control.eval_every_env_steps": "[0, 1e13]",
    "control.sweep_num_envs.*": "[1, 1e8]",
    # LLM PPO critic
    "critic.lr": "(0, 1]", "critic.value_clip": "(0, 1e6]", "critic.value_loss_coef": "[0, 1e6]",
    "critic.gamma": "[0, 1]", "critic.lam": "[0, 1]", "critic.kl_penalty_coef": "[0, 1e6]",
    # DPO, SFT, coding
    "dpo.beta": "(0, 1e4]", "dpo.epochs": "[1, 1e6]", "dpo.pairs_per_step": "[1, 1e7]", "dpo.microbatch_pairs": "[1, 1e7]",
    "dpo.max_steps": f"[1, {BIG}]", "dpo.max_length_tokens": f"[2, {TOKENS}]", "dpo.eval_fraction": "[0, 1)",
    "sft.max_seq_tokens": f"[2, {TOKENS}]", "sft.epochs": "[1, 1e6]", "sft.max_steps": f"[1, {BIG}]",
    "sft.sequences_per_step": "[1, 1e7]", "sft.microbatch_sequences": "[1, 1e7]", "sft.eval_fraction": "[0, 1)",
    "coding.hard_turn_limit": "[1, 10000]", "coding.max_new_tokens_per_turn": f"[1, {TOKENS}]",
    "coding.command_timeout_s": f"(0, {SECONDS}]", "coding.eval_workers": "[1, 1024]",
    "coding.request_timeout_s": f"(0, {SECONDS}]", "coding.max_retries": "[0, 100]", "coding.backoff_s": "[0, 3600]",
}

_INTERVAL = re.compile(r"^([\[(])\s*(-?[\d.e+]+|-inf)\s*,\s*(-?[\d.e+]+|inf)\s*([\])])$")


def parse_interval(text: str) -> tuple[float, float, bool, bool]:
    """"(0, 1]" -> (0.0, 1.0, lo_closed=False, hi_closed=True)."""
    m = _INTERVAL.match(text)
    if m is None:
        raise ValueError(f"not an interval: {text!r}")
    return float(m.group(2)), float(m.group(3)), m.group(1) == "[", m.group(4) == "]"


def inside(value: float, interval: str) -> bool:
    lo, hi, lo_closed, hi_closed = parse_interval(interval)
    return (value >= lo if lo_closed else value > lo) and (value <= hi if hi_closed else value < hi)


def _fmt(interval: str) -> str:
    return re.sub(r"(\d+)\.0\b", r"\1", interval)


def leaves(obj, path: str = ""):
    """(dotted key, value) for every number in a config tree; list items and mapping values included."""
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from leaves(getattr(obj, f.name), f"{path}.{f.name}" if path else f.name)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from leaves(v, f"{path}.{i}")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, f"{path}.{k}")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


_PATTERNS = [(re.compile("^" + re.escape(k).replace(r"\*", r"[^.]+") + "$"), k) for k in RANGES]


def _pattern(key: str) -> str:
    """The RANGES entry for a concrete key (list indices and mapping keys match '*'), or ''."""
    if key in RANGES:
        return key
    return next((k for rx, k in _PATTERNS if rx.match(key)), "")


def check_ranges(cfg) -> None:
    """Every number finite, and inside its declared range. Raises ConfigError naming the key."""
    for key, value in leaves(cfg):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {value}")
        pattern = _pattern(key)
        if pattern and not inside(value, RANGES[pattern]):
            raise ConfigError(f"{key}: must be in {_fmt(RANGES[pattern])}, got {value!r}")
