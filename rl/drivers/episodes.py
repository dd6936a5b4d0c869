"""Multi-turn experience for `coding_grpo`: agent episodes on the policy's own engine -> RolloutBatch.

Each sample is one episode of agent turns (coding.agent: bash | tools) (envs/coding/multiturn.py), token ids carried across turns
verbatim: model tokens (trained, `loss_mask` 1) interleaved with environment tokens (attended to,
never trained on). The number of episodes per task comes from the allocator's plan, like GRPO's
samples per prompt; the turn budget from the turn-control policy.
"""
from __future__ import annotations

import ray

from envs.coding.multiturn import TokenTrajectory, multiturn_rollout
from rl.types import RolloutBatch


class RemoteEngine:
    """The engine protocol over a RolloutWorker actor, with a fresh seed per call (reproducible)."""

    def __init__(self, worker, seed: int):
        self.worker, self.seed = worker, seed

    def generate(self, requests):
        self.seed += 1
        return ray.get(self.worker.generate.remote(requests, self.seed))


def trajectories_to_batch(trajs: list[TokenTrajectory], group_ids: list[int], pad_id: int) -> RolloutBatch:
    """Episodes -> RolloutBatch: completion = every response token (model and environment),
    completion_mask = attention, loss_mask = the tokens the policy sampled. Samples of a group share
    the task's prompt ids."""
    prompt_ids: dict[int, list[int]] = {}
    for g, t in zip(group_ids, trajs):
        prompt_ids.setdefault(g, t.prompt_ids)
    return RolloutBatch.from_sequences(
        [prompt_ids.get(g, []) for g in range(max(group_ids) + 1)], [t.token_ids for t in trajs],
        [t.logprobs for t in trajs], group_ids, [t.reward for t in trajs], pad_id,
        loss_masks=[t.loss_mask for t in trajs], finish_reasons=[t.exit_status for t in trajs],
        turns=[t.num_turns for t in trajs])


def episodes(tasks: list, samples_per_task: list[int], engine, tok, policy, make_sandbox, *,
             max_new_tokens_per_turn: int, temperature: float, hard_turn_limit: int,
             command_timeout_s: float, agent_format: str = "bash") -> tuple[list[TokenTrajectory], list[int]]:
    """`samples_per_task[g]` episodes of task g. -> (trajectories, group id of each)."""
    trajs, groups = [], []
    for g, (task, n) in enumerate(zip(tasks, samples_per_task)):
        for _ in range(n):
            trajs.append(multiturn_rollout(task, engine, tok, policy, make_sandbox, max_new_tokens_per_turn,
                                           temperature, hard_turn_limit, command_timeout_s, agent_format))
            groups.append(g)
    return trajs, groups


def episode_metrics(trajs: list[TokenTrajectory], batch: RolloutBatch, t_gen: float) -> dict:
    sampled = int(batch.train_mask.sum())
    return {"reward/mean": float(batch.rewards.mean()), "accuracy": float((batch.rewards > 0.5).float().mean()),
            "turns/mean": float(batch.turns.float().mean()), "turns/max": int(batch.turns.max()),
            "response_length/mean": float(batch.completion_mask.sum(1).float().mean()),
            "tokens_sampled": sampled, "env_token_share": 1 - sampled / max(1, int(batch.completion_mask.sum())),
            "submitted_ratio": sum(t.exit_status == "submitted" for t in trajs) / len(trajs),
            "tokens_per_s": sampled / max(t_gen, 1e-9), "time/generate_s": t_gen}
