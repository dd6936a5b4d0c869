"""DPO on local Ray with the tiny model: recipes/dpo_tiny.yaml trains end to end (pairs JSONL ->
learner actor -> metrics, held-out pairs and greedy eval before/after, checkpoint); pairs built from
a GRPO rollout log train too, (exact resume: tests/invariance/)."""
import json
import math
from pathlib import Path

import pytest
import torch

from rl.config import load_config
from rl.drivers.dpo import train_dpo
from rl.run.logging import read_metrics
from rl.workers.models import load_model

ROOT = Path(__file__).parent.parent.parent


def dpo_cfg(tmp_path, name, *overrides):
    return load_config(ROOT / "recipes" / "dpo_tiny.yaml", [
        f"run.output_dir={tmp_path}", f"run.name={name}", "run.progress_bar=false",
        f"dpo.pairs_path={ROOT / 'recipes' / 'data' / 'dpo_arith_pairs.jsonl'}", *overrides])


def test_dpo_tiny_recipe_trains_and_writes_outputs(ray_local, tmp_path):
    summary = train_dpo(dpo_cfg(tmp_path, "dpo"))
    run = tmp_path / "dpo"
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(8))  # 32 training pairs / 8 per step x 2 epochs
    for key in ("loss", "reward_accuracy", "margin", "reward/chosen", "reward/rejected", "logp/chosen",
                "logp/rejected", "grad_norm", "lr", "epoch"):
        assert key in rows[-1], key
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference
    assert sum(r["margin"] for r in rows[-3:]) / 3 > 0.05
    assert sum(r["reward_accuracy"] for r in rows[-3:]) / 3 > 0.5
    before, after = summary["before"], summary["after"]
    assert summary["pairs/train"] == 32 and summary["pairs/held_out"] == 8
    assert after["eval_pairs/loss"] < before["eval_pairs/loss"] and after["eval_pairs/margin"] > 0
    assert "eval/greedy_accuracy" in before and "eval/greedy_accuracy" in after
    assert json.loads((run / "summary.json").read_text())["after"] == after
    assert (run / "curves.png").stat().st_size > 1000 and (run / "config.yaml").exists()
    ckpt = sorted((run / "checkpoints").glob("step-*"))[-1]
    assert ckpt.name == "step-000007"
    trained = torch.load(ckpt / "learner.pt", weights_only=False)["model"]
    init = load_model("tiny-llama", seed=0).state_dict()
    changed = sum(not torch.equal(trained[k], init[k]) for k in init)
    assert changed > len(init) // 2, f"only {changed}/{len(init)} tensors changed"


def test_pairs_from_a_rollout_log_train(ray_local, tmp_path):
    """(Exact resume of DPO: tests/invariance/test_resume_logs_once.py.)"""
    log = tmp_path / "rollouts.jsonl"
    with open(log, "w") as fh:
        for i in range(12):
            a, b = i, 2 * i + 1
            fh.write(json.dumps({"step": i // 4, "key": f"{a}+{b}", "prompt": f"What is {a} + {b}?",
                                 "rewards": [0.0, 1.0, 0.0, 0.0],
                                 "completions": [str(a + b + 1), str(a + b), str(a + b + 1), "no idea"]}) + "\n")
    common = ["dpo.pairs_path=null", f"dpo.from_rollouts={log}", "eval.before_after=false",
              "dpo.pairs_per_step=4", "dpo.eval_fraction=0.25", "run.checkpoint_every_steps=2"]
    summary = train_dpo(dpo_cfg(tmp_path, "straight", *common, "dpo.max_steps=4"))
    a = read_metrics(tmp_path / "straight" / "metrics.jsonl")
    assert summary["pairs/train"] == 9 and summary["pairs/held_out"] == 3
    assert [r["step"] for r in a] == [0, 1, 2, 3] and a[-1]["margin"] > a[0]["margin"]
    assert "eval_pairs/loss" in summary["before"] and "eval_pairs/loss" in summary["after"]
