"""One step's experience: prompts + allocation -> rollouts on the engines -> rewards -> RolloutBatch.

Requests are spread over the rollout workers; each worker samples with a seed derived from the run
seed and the step, so a resumed run draws the same samples. DAPO dynamic sampling keeps drawing
fresh prompts until enough groups have unequal rewards (or the round limit is hit).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import ray
import torch

from algorithms.dapo import overlong_penalty
from allocation.curriculum import with_length_budget
from allocation.types import Allocation
from envs.tasks import Example
from rl.config import Config

from rl.drivers.rewards import score
from rl.types import RolloutBatch
from rollout.types import Completion, GenerationRequest


def generate(engines: list, requests: list[GenerationRequest], seed: int) -> list[Completion]:
    """Round-robin requests over engines; completions come back in request order."""
    shards = [requests[i::len(engines)] for i in range(len(engines))]
    refs = [e.generate.remote(s, seed + 7919 * i) for i, (e, s) in enumerate(zip(engines, shards)) if s]
    outs = [c for part in ray.get(refs) for c in part]
    order = {r.request_id: i for i, r in enumerate(requests)}
    return sorted(outs, key=lambda c: order[c.request_id])


@dataclass
class StepData:
    batch: RolloutBatch
    examples: list[Example]  # one per group, in group order
    rewards_per_prompt: list[list[float]]
    metrics: dict = field(default_factory=dict)
    texts_per_prompt: list[list[str]] = field(default_factory=list)  # completions, for the rollout log


def rollout_step(cfg: Config, engines: list, encode: PromptEncoder, examples: list[Example],
                 plan: Allocation, seed: int) -> StepData:
    t0 = time.time()
    requests = []
    for i, ex in enumerate(examples):
        budget = plan.length_budget[i] if plan.length_budget else None
        cap = plan.max_new_tokens[i] if plan.max_new_tokens else cfg.rollout.max_new_tokens
        requests.append(GenerationRequest(
            prompt_ids=encode(ex, budget), n=plan.samples_per_prompt[i], max_new_tokens=cap,
            temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p, stop=cfg.rollout.stop,
            request_id=i))
    requests = [r for r in requests if r.n > 0]
    completions = generate(engines, requests, seed)
    t_gen = time.time() - t0
    group = [c.request_id for c in completions]
    prompts = [examples[g].prompt for g in group]
    texts = [c.text for c in completions]
    columns = {"answer": [examples[g].answer for g in group]}
    for k in {k for ex in examples for k in ex.columns}:
        columns[k] = [examples[g].columns.get(k) for g in group]
    columns["completion_tokens"] = [len(c.token_ids) for c in completions]
    if plan.length_budget:
        columns["length_budget"] = [plan.length_budget[g] for g in group]
    result = score(cfg.rewards, prompts, texts, columns)
    rewards = torch.tensor(result.total, dtype=torch.float32)
    lengths = torch.tensor([len(c.token_ids) for c in completions])
    if cfg.algorithm.overlong_max_tokens:
        rewards = rewards + overlong_penalty(lengths, cfg.algorithm.overlong_max_tokens,
                                             cfg.algorithm.overlong_cache_tokens)
    t_rew = time.time() - t0 - t_gen
    batch = to_batch(requests, completions, group, rewards, pad_id=encode.tok.pad_token_id)
    per_prompt, texts_per = [[] for _ in examples], [[] for _ in examples]
    for g, r, t in zip(group, rewards.tolist(), texts):
        per_prompt[g].append(r)
        texts_per[g].append(t)
    n_tok = int(lengths.sum())
    metrics = {
        "reward/mean": float(rewards.mean()), "reward/std": float(rewards.std()) if len(rewards) > 1 else 0.0,
        **{f"reward/{name}": _mean(v) for name, v in result.per_fn.items()},
        **{f"reward_errors/{name}": n for name, n in result.errors.items()},
        "accuracy": float((rewards >= cfg.allocation.success_threshold).float().mean()),
        "response_length/mean": float(lengths.float().mean()), "response_length/max": int(lengths.max()),
        "finish/length_ratio": sum(c.finish_reason == "length" for c in completions) / len(completions),
        "tokens_generated": n_tok, "tokens_per_s": n_tok / max(t_gen, 1e-9),
        "time/generate_s": t_gen, "time/reward_s": t_rew,
    }
    if plan.length_budget:
        metrics["length_budget_tokens"] = plan.length_budget[0]
    keep = sorted(set(group))
    batch = batch.select_groups(keep)
    return StepData(batch, [examples[g] for g in keep], [per_prompt[g] for g in keep], metrics,
                    [texts_per[g] for g in keep])


def _mean(values: list) -> float:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else float("nan")


def to_batch(requests: list[GenerationRequest], completions: list[Completion], group: list[int],
             rewards: torch.Tensor, pad_id: int) -> RolloutBatch:
    by_id = {r.request_id: r for r in requests}
    width = max(1, max(len(c.token_ids) for c in completions))
    n = len(completions)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    logps = torch.zeros((n, width), dtype=torch.float32)
    for i, c in enumerate(completions):
        L = len(c.token_ids)
        ids[i, :L] = torch.tensor(c.token_ids, dtype=torch.long)
        mask[i, :L] = 1
        logps[i, :L] = torch.tensor(c.logprobs, dtype=torch.float32)
    n_groups = max(group) + 1
    prompt_ids = [by_id[g].prompt_ids if g in by_id else [] for g in range(n_groups)]
    return RolloutBatch(prompt_ids=prompt_ids, completion_ids=ids, completion_mask=mask, logprobs=logps,
                        group_ids=torch.tensor(group, dtype=torch.long), rewards=rewards,
                        finish_reasons=[c.finish_reason for c in completions],
                        turns=torch.ones(n, dtype=torch.long),
                        weight_versions=torch.tensor([c.weight_version for c in completions]))


def merge(parts: list[StepData], pad_id: int) -> StepData:
    """Concatenates several rounds' StepData (dynamic sampling), renumbering groups."""
    if len(parts) == 1:
        return parts[0]
    width = max(p.batch.completion_ids.shape[1] for p in parts)

    def pad(t, value):
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    offset, gids, prompt_ids = 0, [], []
    for p in parts:
        gids.append(p.batch.group_ids + offset)
        prompt_ids += p.batch.prompt_ids
        offset += len(p.batch.prompt_ids)
    metrics = dict(parts[0].metrics)  # reward statistics of the first draw: the policy as it is
    for k in ("time/generate_s", "time/reward_s", "tokens_generated"):
        metrics[k] = sum(p.metrics[k] for p in parts)
    metrics["tokens_per_s"] = metrics["tokens_generated"] / max(metrics["time/generate_s"], 1e-9)
    batch = RolloutBatch(
        prompt_ids=prompt_ids,
        completion_ids=torch.cat([pad(p.batch.completion_ids, pad_id) for p in parts]),
        completion_mask=torch.cat([pad(p.batch.completion_mask, 0) for p in parts]),
        logprobs=torch.cat([pad(p.batch.logprobs, 0.0) for p in parts]),
        group_ids=torch.cat(gids), rewards=torch.cat([p.batch.rewards for p in parts]),
        finish_reasons=[f for p in parts for f in p.batch.finish_reasons],
        turns=torch.cat([p.batch.turns for p in parts]),
        weight_versions=torch.cat([p.batch.weight_versions for p in parts]))
    return StepData(batch, [e for p in parts for e in p.examples],
                    [r for p in parts for r in p.rewards_per_prompt], metrics,
                    [t for p in parts for t in p.texts_per_prompt])
