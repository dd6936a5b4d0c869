"""Multi-turn coding GRPO: episodes become one sequence each, environment tokens never trained on."""
from pathlib import Path

import torch

from envs.coding.multiturn import TokenTrajectory
from rl.config import load_config
from rl.drivers.coding_grpo import train_coding
from rl.drivers.episodes import trajectories_to_batch
from rl.run.logging import read_metrics
from rl.workers.learner import Learner

ROOT = Path(__file__).parent.parent.parent


def _traj(prompt, tokens, loss_mask, reward):
    t = TokenTrajectory("t", prompt, list(tokens), list(loss_mask), [-1.0] * len(tokens), [(0, 2)], reward)
    return t


def test_environment_tokens_carry_no_gradient():
    trajs = [_traj([5, 6], [10, 11, 12, 13, 14], [1, 1, 0, 0, 1], 1.0),
             _traj([5, 6], [20, 21, 22], [1, 0, 1], 0.0)]
    batch = trajectories_to_batch(trajs, [0, 0], pad_id=2)
    assert batch.loss_mask.tolist() == [[1, 1, 0, 0, 1], [1, 0, 1, 0, 0]]
    assert batch.completion_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    adv = torch.tensor([1.0, -1.0])

    def grads(b):
        learner = Learner("tiny-llama", lr=1e-3, minibatch_samples=4, microbatch_samples=4, pad_id=2)
        learner.train_step(b, adv)
        return torch.cat([p.detach().reshape(-1) for p in learner.model.parameters()])

    # changing the behaviour log-probs of environment tokens must not change the update
    other = trajectories_to_batch(trajs, [0, 0], pad_id=2)
    other.logprobs[0, 2:4] = 5.0
    other.logprobs[1, 1] = -9.0
    assert torch.equal(grads(batch), grads(other))
    other.logprobs[0, 0] = 0.5  # ...but a sampled token's does
    assert not torch.equal(grads(batch), grads(other))


def test_coding_grpo_runs_end_to_end_on_generated_tasks(ray_local, tmp_path):
    cfg = load_config(ROOT / "recipes" / "coding_grpo.yaml", [
        "model.name=tiny-llama", f"run.output_dir={tmp_path}", "run.name=code", "run.progress_bar=false",
        "run.wandb_mode=disabled", "coding.tasks=generator:2", "coding.turn_control=fixed:2",
        "coding.max_new_tokens_per_turn=12", "trainer.steps=2", "trainer.lr=1e-3"])
    train_coding(cfg)
    rows = read_metrics(tmp_path / "code" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1]
    for r in rows:
        assert 1 <= r["turns/mean"] <= 2 and r["turns/max"] <= 2
        assert 0 < r["env_token_share"] < 1  # observations were appended as tokens, and masked
        assert r["reward/mean"] in (0.0, 0.5, 1.0) or 0 <= r["reward/mean"] <= 1
    episodes = read_metrics(tmp_path / "code" / "rollouts.jsonl")
    assert len(episodes) == 2 * 2 * 2 and all(e["turns"] <= 2 for e in episodes)
    assert (tmp_path / "code" / "checkpoints").exists()


def test_coding_grpo_trains_the_tools_format(ray_local, tmp_path):
    cfg = load_config(ROOT / "recipes" / "coding_grpo.yaml", [
        "model.name=tiny-llama", f"run.output_dir={tmp_path}", "run.name=tools", "run.progress_bar=false",
        "run.wandb_mode=disabled", "coding.tasks=generator:2", "coding.turn_control=fixed:2", "coding.agent=tools",
        "coding.max_new_tokens_per_turn=12", "trainer.steps=1", "run.checkpoint_every_steps=0"])
    train_coding(cfg)
    (row,) = read_metrics(tmp_path / "tools" / "metrics.jsonl")
    assert row["turns/max"] <= 2 and 0 < row["env_token_share"] < 1 and "loss" in row
