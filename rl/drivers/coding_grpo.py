"""Multi-turn GRPO on the coding env (`algorithm.name: coding_grpo`), issue 6.7.

Each prompt is a coding task; each of its `samples_per_prompt` samples is one agent episode run by
the policy's own rollout engine, token ids carried across turns verbatim (envs/coding/multiturn.py).
The learner sees one sequence per episode: model tokens (trained, `loss_mask` 1) interleaved with
environment tokens (attended to, never trained on). Reward = resolved; GRPO advantages per task;
the turn budget is the same TurnPolicy object evaluation uses (`coding.turn_control`).

    tasks -> episodes on the engine (sandboxed bash) -> grade -> RolloutBatch with loss_mask
          -> advantages -> learner -> weight sync -> log/checkpoint
"""
from __future__ import annotations

import time
from pathlib import Path

import ray
import torch

from allocation.turn_control import parse_turn_control
from envs.coding.multiturn import TokenTrajectory, multiturn_rollout
from envs.coding.sandbox import LocalSandbox, detect_local_backend
from rl import build
from rl.config import Config, ConfigError, to_dict
from rl.drivers.estimators import group_estimator
from rl.drivers.grpo import step_seed
from rl.run.checkpoint import Checkpointer
from rl.run.logging import RunLogger, progress
from rl.types import RolloutBatch
from rl.workers.models import load_tokenizer
from rl.workers.ray_setup import init_ray
from rl.workers.weight_sync import sync_weights


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
    n, width = len(trajs), max(1, max(len(t.token_ids) for t in trajs))
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    loss_mask = torch.zeros((n, width), dtype=torch.long)
    logps = torch.zeros((n, width), dtype=torch.float32)
    for i, t in enumerate(trajs):
        L = len(t.token_ids)
        ids[i, :L] = torch.tensor(t.token_ids, dtype=torch.long)
        mask[i, :L] = 1
        loss_mask[i, :L] = torch.tensor(t.loss_mask, dtype=torch.long)
        logps[i, :L] = torch.tensor(t.logprobs, dtype=torch.float32)
    prompt_ids = {}
    for g, t in zip(group_ids, trajs):
        prompt_ids.setdefault(g, t.prompt_ids)
    return RolloutBatch(prompt_ids=[prompt_ids[g] for g in range(max(group_ids) + 1)], completion_ids=ids,
                        completion_mask=mask, logprobs=logps, group_ids=torch.tensor(group_ids),
                        rewards=torch.tensor([t.reward for t in trajs], dtype=torch.float32),
                        finish_reasons=[t.exit_status for t in trajs],
                        turns=torch.tensor([t.num_turns for t in trajs]), loss_mask=loss_mask)


def load_tasks(cfg: Config):
    from rl.tools.swebench import load_task_source
    try:
        return load_task_source(cfg.coding.tasks, cfg.run.seed, workers=1)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"coding.tasks: {e}") from None


def episodes(cfg: Config, tasks: list, engine, tok, policy, make_sandbox) -> tuple[list, list[int]]:
    c, n = cfg.coding, cfg.rollout.samples_per_prompt
    trajs, groups = [], []
    for g, task in enumerate(tasks):
        for _ in range(n):
            trajs.append(multiturn_rollout(task, engine, tok, policy, make_sandbox, c.max_new_tokens_per_turn,
                                           cfg.rollout.temperature, c.hard_turn_limit, c.command_timeout_s))
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


def train_coding(cfg: Config, resume: bool = False, address: str | None = None) -> dict:
    build.check_names(cfg)
    try:
        policy = parse_turn_control(cfg.coding.turn_control)
    except ValueError as e:
        raise ConfigError(f"coding.turn_control: {e}") from None
    tasks = load_tasks(cfg)
    run_dir = Path(cfg.run.output_dir) / cfg.run.name
    init_ray(address)
    tok = load_tokenizer(cfg.model.name)
    engines, learner = build.start_workers(cfg, tok.pad_token_id)
    estimator = group_estimator(cfg, tok.pad_token_id, learner)
    backend = detect_local_backend()
    make_sandbox = lambda task: LocalSandbox.create(timeout_s=cfg.coding.command_timeout_s, backend=backend)  # noqa: E731
    ckpt, start = Checkpointer(run_dir / "checkpoints", cfg.run.keep_checkpoints), 0
    if resume:
        start = ckpt.restore(learner)["next_step"]
    logger = RunLogger(run_dir, to_dict(cfg), cfg.run.wandb_mode, resume=resume)
    sync_weights(learner, engines, start, cfg.sync)
    P = cfg.trainer.prompts_per_step
    bar = progress(cfg.trainer.steps, f"coding {cfg.run.name}", initial=start) if cfg.run.progress_bar else None
    for step in range(start, cfg.trainer.steps):
        t0 = time.time()
        chosen = [tasks[(step * P + i) % len(tasks)] for i in range(P)]
        engine = RemoteEngine(engines[0], step_seed(cfg.run.seed, step))
        trajs, groups = episodes(cfg, chosen, engine, tok, policy, make_sandbox)
        t_gen = time.time() - t0
        batch = trajectories_to_batch(trajs, groups, tok.pad_token_id)
        advantages, adv_metrics = estimator.advantages(batch)
        metrics = ray.get(learner.train_step.remote(batch, advantages))
        sync = sync_weights(learner, engines, step + 1, cfg.sync)
        metrics = {**episode_metrics(trajs, batch, t_gen), **metrics, **adv_metrics, **sync,
                   "time/step_s": time.time() - t0}
        logger.log(step, metrics)
        logger.log_rollouts(step, [{"key": t.instance_id, "reward": t.reward, "turns": t.num_turns,
                                    "exit_status": t.exit_status, "patch": t.patch} for t in trajs])
        if bar is not None:
            bar.set_postfix(solved=f"{metrics['accuracy']:.2f}", turns=f"{metrics['turns/mean']:.1f}")
            bar.update(1)
        if (cfg.run.checkpoint_every_steps and (step + 1) % cfg.run.checkpoint_every_steps == 0) \
                or step + 1 == cfg.trainer.steps:
            ckpt.save(step, learner, {"next_step": step + 1})
    if bar is not None:
        bar.close()
    logger.close(["reward/mean", "turns/mean", "loss", "entropy", "env_token_share", "time/step_s"])
    return {"last": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}} if cfg.trainer.steps > start else {}
