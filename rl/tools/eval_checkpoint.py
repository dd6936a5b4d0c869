"""`rl eval RECIPE [--checkpoint DIR]`: held-out accuracy of the base model or a trained checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import ray
import torch

from rl import build
from rl.config import Config
from rl.data.prompts import PromptEncoder
from rl.drivers.grpo import run_eval
from rl.workers.models import load_tokenizer
from rl.workers.ray_setup import init_ray
from rl.workers.rollout_worker import RolloutWorker


def eval_checkpoint(cfg: Config, checkpoint: str | None, address: str | None = None) -> dict:
    init_ray(address)
    task, tok = build.task_from(cfg), load_tokenizer(cfg.model.name)
    engine = RolloutWorker.remote(cfg.rollout.engine, cfg.model.name, cfg.model.dtype, cfg.run.seed)
    if checkpoint:
        path = Path(checkpoint) / "learner.pt"
        if not path.exists():
            raise FileNotFoundError(f"--checkpoint: {path} not found")
        from rollout.weight_sync import pack_buckets
        state = torch.load(path, weights_only=False, map_location="cpu")["model"]
        ray.get(engine.update_weights.remote(pack_buckets(state.items(), 64 << 20), 1))
    result = run_eval(cfg, [engine], PromptEncoder(tok, cfg.task.system_prompt), task, cfg.run.seed)
    for k, v in result.items():
        print(f"{k:40s} {v:.4f}")
    out = Path(cfg.run.output_dir) / cfg.run.name / "eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"checkpoint": checkpoint, **result}, indent=2))
    return result
