"""One step's experience: prompts + allocation -> rollouts on the engines -> rewards -> RolloutBatch.

`Experience.draw(step, round_)` is one round: the sampler's next prompts, the allocator's plan, the
engines' completions, the rewards (then any registered reward shapers, e.g. DAPO overlong shaping),
the allocator state updated. A registered experience collector decides how many rounds a step takes:
`single_draw`, or `dapo_dynamic_sampling` (keep drawing until enough groups have unequal rewards).
Requests are spread over the rollout workers, each seeded from the run seed, the step and the round,
so a resumed run draws the same samples.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import ray
import torch

from algorithms.dapo import informative_group_mask, overlong_penalty
from algorithms.registry import Registry
from allocation.knapsack import allocation_metrics
from allocation.types import Allocation
from envs.tasks import Example
from rl.drivers.rewards import example_columns, score
from rl.types import RolloutBatch
from rollout.types import Completion, GenerationRequest

REWARD_SHAPERS: Registry = Registry("reward shaper")  # fn(rewards [S], lengths [S], **settings) -> rewards
COLLECTORS: Registry = Registry("experience collector")  # fn(experience, step, **settings) -> StepData


@REWARD_SHAPERS.register("overlong")
def overlong_shaping(rewards: torch.Tensor, lengths: torch.Tensor, *, max_tokens: int, cache_tokens: int):
    """DAPO overlong shaping (SPECS §1): the soft length penalty added to each sample's reward."""
    return rewards + overlong_penalty(lengths, max_tokens, cache_tokens)


def step_seed(seed: int, step: int, round_: int = 0) -> int:
    return (seed * 1_000_003 + step * 101 + round_) % (2**62)


def generate(engines: list, requests: list[GenerationRequest], seed: int) -> list[Completion]:
    """Round-robin requests over engines; completions come back in request order."""
    shards = [requests[i::len(engines)] for i in range(len(engines))]
    refs = [e.generate.remote(s, seed + 7919 * i) for i, (e, s) in enumerate(zip(engines, shards)) if s]
    outs = [c for part in ray.get(refs) for c in part]
    order = {r.request_id: i for i, r in enumerate(requests)}
    return sorted(outs, key=lambda c: order[c.request_id])


@dataclass
class Sampling:
    """Generation settings of the recipe's `rollout:` section, bound at the edge."""
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)


@dataclass
class StepData:
    batch: RolloutBatch
    examples: list[Example]  # one per group, in group order
    rewards_per_prompt: list[list[float]]
    metrics: dict = field(default_factory=dict)
    texts_per_prompt: list[list[str]] = field(default_factory=list)  # completions, for the rollout log

    def select_groups(self, groups: list[int]) -> "StepData":
        return StepData(self.batch.select_groups(groups), [self.examples[g] for g in groups],
                        [self.rewards_per_prompt[g] for g in groups], self.metrics,
                        [self.texts_per_prompt[g] for g in groups])

    def rollout_records(self) -> list[dict]:
        """Per-prompt outcomes for rollouts.jsonl: the data V0 and analyses train on."""
        return [{"key": e.key, "prompt": e.prompt, "rewards": r, "completions": c}
                for e, r, c in zip(self.examples, self.rewards_per_prompt, self.texts_per_prompt)]

    @staticmethod
    def concat(parts: list["StepData"], pad_id: int) -> "StepData":
        """Several rounds of one step as one; the reward statistics are the first round's (the policy
        as it is), the time and token counts are summed."""
        metrics = dict(parts[0].metrics)
        for k in ("time/generate_s", "time/reward_s", "tokens_generated"):
            metrics[k] = sum(p.metrics[k] for p in parts)
        metrics["tokens_per_s"] = metrics["tokens_generated"] / max(metrics["time/generate_s"], 1e-9)
        return StepData(RolloutBatch.concat([p.batch for p in parts], pad_id), [e for p in parts for e in p.examples],
                        [r for p in parts for r in p.rewards_per_prompt], metrics,
                        [t for p in parts for t in p.texts_per_prompt])


def _requests(encode, examples: list[Example], plan: Allocation, s: Sampling) -> list[GenerationRequest]:
    out = []
    for i, ex in enumerate(examples):
        budget = plan.length_budget[i] if plan.length_budget else None
        cap = plan.max_new_tokens[i] if plan.max_new_tokens else s.max_new_tokens
        out.append(GenerationRequest(prompt_ids=encode(ex, budget), n=plan.samples_per_prompt[i], max_new_tokens=cap,
                                     temperature=s.temperature, top_p=s.top_p, stop=s.stop, request_id=i))
    return [r for r in out if r.n > 0]


def _columns(examples: list[Example], group: list[int], completions: list[Completion], plan: Allocation) -> dict:
    """Dataset columns per sample, as reward functions get them (TRL's **columns)."""
    columns = example_columns(examples, group)
    columns["completion_tokens"] = [len(c.token_ids) for c in completions]
    if plan.length_budget:
        columns["length_budget"] = [plan.length_budget[g] for g in group]
    return columns


def rollout_step(engines: list, encode, examples: list[Example], plan: Allocation, seed: int, *,
                 sampling: Sampling, rewards: list, shapers: list[Callable] = (), pad_id: int,
                 success_threshold: float = 0.5, reward_models=None) -> StepData:
    """Generates the plan's samples, scores them (`rewards`: the recipe's RewardConfigs, `reward_models`
    the run's reward-model actors; then each shaper) and returns the step's groups (prompts the plan
    gave 0 samples are dropped)."""
    t0 = time.time()
    requests = _requests(encode, examples, plan, sampling)
    completions = generate(engines, requests, seed)
    t_gen = time.time() - t0
    group, texts = [c.request_id for c in completions], [c.text for c in completions]
    result = score(rewards, [examples[g].prompt for g in group], texts, _columns(examples, group, completions, plan),
                   completion_ids=[list(c.token_ids) for c in completions], models=reward_models)
    total = torch.tensor(result.total, dtype=torch.float32)
    lengths = torch.tensor([len(c.token_ids) for c in completions])
    for shape in shapers:
        total = shape(total, lengths)
    batch = to_batch(requests, completions, group, total, pad_id)
    per_prompt, texts_per = [[] for _ in examples], [[] for _ in examples]
    for g, r, t in zip(group, total.tolist(), texts):
        per_prompt[g].append(r)
        texts_per[g].append(t)
    prompt_len = [len(r.prompt_ids) for r in requests]
    metrics = {**_metrics(total, lengths, completions, result, success_threshold, t_gen),
               "prompt_length/mean": sum(prompt_len) / len(prompt_len), "prompt_length/max": max(prompt_len),
               "time/reward_s": (t_reward := time.time() - t0 - t_gen),
               "time/reward_samples_per_s": len(texts) / max(t_reward, 1e-9)}  # all rewards, graded concurrently
    if plan.length_budget:
        metrics["length_budget_tokens"] = plan.length_budget[0]
    keep = sorted(set(group))
    return StepData(batch, examples, per_prompt, metrics, texts_per).select_groups(keep)


def to_batch(requests: list[GenerationRequest], completions: list[Completion], group: list[int], rewards,
             pad_id: int) -> RolloutBatch:
    """Completions (group = index of each one's request/prompt) -> RolloutBatch."""
    by_id = {r.request_id: r.prompt_ids for r in requests}
    return RolloutBatch.from_sequences(
        [by_id.get(g, []) for g in range(max(group) + 1)], [c.token_ids for c in completions],
        [c.logprobs for c in completions], group, rewards, pad_id, finish_reasons=[c.finish_reason for c in completions],
        weight_versions=[c.weight_version for c in completions])


def _metrics(rewards, lengths, completions, result, success_threshold: float, t_gen: float) -> dict:
    n_tok = int(lengths.sum())
    return {
        "reward/mean": float(rewards.mean()), "reward/std": float(rewards.std()) if len(rewards) > 1 else 0.0,
        **{f"reward/{name}": _mean(v) for name, v in result.per_fn.items()},
        **{f"reward_errors/{name}": n for name, n in result.errors.items()},
        **{f"reward_extra/{key}": v for key, v in result.extras.items()},
        "accuracy": float((rewards >= success_threshold).float().mean()),
        "response_length/mean": float(lengths.float().mean()), "response_length/max": int(lengths.max()),
        "finish/length_ratio": sum(c.finish_reason == "length" for c in completions) / len(completions),
        "tokens_generated": n_tok, "tokens_per_s": n_tok / max(t_gen, 1e-9), "time/generate_s": t_gen}


def _mean(values: list) -> float:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else float("nan")


class Experience:
    """Draws rounds of experience for a driver; owns the sampler position and the allocator state.

    `rollout(engines, encode, examples, plan, seed)` is `rollout_step` with the recipe's settings bound."""

    def __init__(self, engines: list, encode, sampler, allocator, state, rollout: Callable, *,
                 prompts_per_step: int, seed: int, success_threshold: float):
        self.engines, self.encode, self.sampler, self.allocator, self.state = engines, encode, sampler, allocator, state
        self.rollout, self.prompts_per_step, self.seed = rollout, prompts_per_step, seed
        self.success_threshold = success_threshold

    def draw(self, step: int, round_: int = 0) -> StepData:
        examples = self.sampler.next(self.prompts_per_step)
        plan = self.allocator.plan([e.key for e in examples], self.state, step)
        data = self.rollout(self.engines, self.encode, examples, plan, step_seed(self.seed, step, round_))
        data.metrics.update(allocation_metrics(data.rewards_per_prompt, plan.samples_per_prompt,
                                               self.success_threshold))
        self.state.update([e.key for e in data.examples], data.rewards_per_prompt, self.success_threshold)
        return data

    def state_dict(self) -> dict:
        return {"sampler": self.sampler.state_dict(), "allocator": self.state.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.state.load_state_dict(state["allocator"])


@COLLECTORS.register("single_draw")
def single_draw(experience: Experience, step: int) -> StepData:
    data = experience.draw(step)
    data.metrics["generation_rounds"] = 1
    return data


@COLLECTORS.register("dapo_dynamic_sampling")
def dynamic_sampling(experience: Experience, step: int, *, max_generation_rounds: int = 3) -> StepData:
    """DAPO dynamic sampling (SPECS §1): drop groups whose rewards are all equal and draw again until
    the step has `prompts_per_step` informative groups or `max_generation_rounds` rounds were drawn."""
    parts, informative = [], 0
    for round_ in range(max_generation_rounds):
        data = experience.draw(step, round_)
        keep = informative_group_mask(data.batch.rewards, data.batch.group_ids)
        data = data.select_groups(sorted(set(data.batch.group_ids[keep].tolist())))
        informative += len(data.examples)
        parts.append(data)
        if informative >= experience.prompts_per_step:
            break
    rounds = len(parts)
    parts = [p for p in parts if p.batch.num_samples] or parts[:1]
    out = StepData.concat(parts, experience.encode.tok.pad_token_id)
    out.metrics["generation_rounds"] = rounds
    return out
