"""LLM PPO with a critic on local Ray with the tiny model: both networks train (exact resume: tests/invariance/)."""
from pathlib import Path

import torch

from rl.config import load_config
from rl.drivers.ppo import train_ppo
from rl.run.logging import read_metrics
from rl.types import RolloutBatch
from rl.workers.critic import Critic, completion_values
from rl.workers.models import load_model

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def ppo_cfg(tmp_path, name, *overrides):
    return load_config(ROOT / "recipes" / "tiny.yaml", [
        f"run.output_dir={tmp_path}", f"run.name={name}", "run.progress_bar=false", "algorithm.name=ppo",
        f"rewards.0.fn={HERE.parent / 'fixtures' / 'reward_plugins.py'}:text_length", "critic.lr=1e-3", *overrides])


def _batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 200, (4, 5), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 0, 0, 0, 0]])
    return RolloutBatch(prompt_ids=[[5, 6, 7], [8, 9]], completion_ids=ids * mask, completion_mask=mask,
                        logprobs=torch.zeros(4, 5), group_ids=torch.tensor([0, 0, 1, 1]),
                        rewards=torch.tensor([1.0, 0.0, 0.5, 0.0]))


def test_critic_starts_at_zero_and_regresses_onto_returns():
    critic = Critic("tiny-llama", lr=3e-3, value_clip=None, minibatch_samples=4, microbatch_samples=2)
    batch = _batch()
    v0 = critic.values(batch)
    assert v0.shape == (4, 5) and torch.all(v0 == 0)
    returns = torch.tensor([[1.0] * 5, [-1.0] * 5, [0.5] * 5, [2.0] * 5]) * batch.completion_mask
    first = critic.train_step(batch, v0, returns)["value_loss"]
    for _ in range(20):
        last = critic.train_step(batch, critic.values(batch), returns)["value_loss"]
    assert last < 0.35 * first
    # values come from the state BEFORE each token: the shared-prefix forward equals a full forward
    full = torch.cat([torch.tensor(batch.prompt_ids[0]), batch.completion_ids[0]]).unsqueeze(0)
    h = critic.model.backbone(input_ids=full).last_hidden_state
    direct = critic.model.head(h[0, 2:7]).squeeze(-1)
    assert torch.allclose(completion_values(critic.model, batch, 2)[0], direct.detach(), atol=1e-4)


def test_ppo_trains_policy_and_critic(ray_local, tmp_path):
    """(Exact resume of PPO with its critic: tests/invariance/test_resume_logs_once.py.)"""
    train_ppo(ppo_cfg(tmp_path, "straight", "trainer.steps=3", "eval.before_after=false"))
    a = read_metrics(tmp_path / "straight" / "metrics.jsonl")
    assert [r["step"] for r in a] == [0, 1, 2]
    assert a[0]["critic/value_mean"] == 0.0 and a[-1]["critic/value_mean"] != 0.0
    assert all(r["critic/grad_norm"] > 0 and r["grad_norm"] > 0 for r in a)
    ckpt = sorted((tmp_path / "straight" / "checkpoints").glob("step-*"))[-1]
    critic = torch.load(ckpt / "critic.pt", weights_only=False)["model"]
    assert float(critic["head.weight"].abs().sum()) > 0
    policy = torch.load(ckpt / "learner.pt", weights_only=False)["model"]
    init = load_model("tiny-llama", seed=0).state_dict()
    assert sum(not torch.equal(policy[k], init[k]) for k in init) > len(init) // 2


def test_ppo_with_kl_penalty_and_colocated_critic(ray_local, tmp_path):
    train_ppo(ppo_cfg(tmp_path, "kl", "trainer.steps=2", "eval.before_after=false",
                      "critic.kl_penalty_coef=0.1", "critic.placement=colocated"))
    rows = read_metrics(tmp_path / "kl" / "metrics.jsonl")
    assert len(rows) == 2 and "kl_penalty/mean" in rows[0]
    assert abs(rows[0]["kl_penalty/mean"]) < 1e-4  # step 0 samples come from the reference itself
    assert torch.isfinite(torch.tensor(rows[1]["kl_penalty/mean"]))
