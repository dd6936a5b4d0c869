"""SFT with the tiny model: packed rows give the unpacked loss exactly (in process); on local Ray,
recipes/sft_tiny.yaml lowers the held-out assistant-token loss, writes metrics, a checkpoint and
runs/<name>/hf, and that folder warm-starts a one-step GRPO run as its `model.name`."""
import math
from pathlib import Path

import pytest
import torch

from rl.config import load_config
from rl.data.sft import encode_conversations, load_conversations
from rl.drivers.grpo import train
from rl.drivers.sft import train_sft
from rl.run.logging import read_metrics
from rl.workers.models import load_model
from rl.workers.sft_learner import SFTLearner

ROOT = Path(__file__).parent.parent.parent
DATA = ROOT / "recipes" / "data" / "sft_chat.jsonl"


def test_packed_rows_give_the_unpacked_loss_and_gradient(tok):
    convs = load_conversations(str(DATA), "train", "messages", "sft.path")[:10]
    rows, packed = (encode_conversations(tok, convs, 160, packing=p) for p in (False, True))
    assert len(packed) < len(rows) and packed.assistant_tokens() == rows.assistant_tokens()
    learner = SFTLearner("tiny-llama", microbatch_sequences=3, pad_id=tok.pad_token_id)
    grads = []
    for r in (rows, packed):
        learner.model.zero_grad()
        nll, n = learner.nll_sum(r)
        (nll / n).backward()
        grads.append((float(nll.detach()), n, learner.model.model.embed_tokens.weight.grad.clone()))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5) and grads[0][1] == grads[1][1]
    assert torch.allclose(grads[0][2], grads[1][2], atol=1e-6)


def test_sft_lowers_held_out_loss_and_its_export_warm_starts_grpo(ray_local, tmp_path):
    cfg = load_config(ROOT / "recipes" / "sft_tiny.yaml", [
        f"run.output_dir={tmp_path}", "run.name=sft", "run.progress_bar=false", f"sft.path={DATA}",
        "sft.packing=true", "sft.epochs=1", "trainer.lr=3e-3"])
    summary = train_sft(cfg)
    rows = read_metrics(tmp_path / "sft" / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(math.ceil(summary["sft/train_rows"] / 8)))  # 1 epoch
    assert all(k in rows[-1] for k in ("sft/loss", "sft/tokens", "grad_norm", "lr", "epoch"))
    assert rows[-1]["sft/loss"] < rows[0]["sft/loss"] and all(r["sft/tokens"] > 0 for r in rows)
    before, after = summary["before"]["eval/sft_loss"], summary["after"]["eval/sft_loss"]
    assert after < before - 0.5, (before, after)
    hf = Path(summary["hf_dir"])
    assert (hf / "config.json").exists() and (hf / "model.safetensors").exists()
    assert (tmp_path / "sft" / "curves.png").exists() and list((tmp_path / "sft" / "checkpoints").glob("step-*"))

    grpo = load_config(ROOT / "recipes" / "tiny.yaml", [
        f"run.output_dir={tmp_path}", "run.name=grpo", "run.progress_bar=false", f"model.name={hf}",
        "trainer.steps=1", "eval.before_after=false", "rollout.samples_per_prompt=2", "trainer.prompts_per_step=2"])
    train(grpo)
    assert [r["step"] for r in read_metrics(tmp_path / "grpo" / "metrics.jsonl")] == [0]
    sft_w, init_w = load_model(str(hf)).state_dict(), load_model("tiny-llama", seed=0).state_dict()
    ckpt = sorted((tmp_path / "grpo" / "checkpoints").glob("step-*"))[-1]
    grpo_w = torch.load(ckpt / "learner.pt", weights_only=False)["model"]
    k = "model.embed_tokens.weight"
    assert (grpo_w[k] - sft_w[k]).abs().max() < (grpo_w[k] - init_w[k]).abs().max()  # started from SFT
