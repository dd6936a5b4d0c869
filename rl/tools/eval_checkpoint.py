"""`rl eval RECIPE [--checkpoint DIR]`: held-out accuracy of the base model or a trained checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import ray
import torch

from rl import build
from rl.config import Config
from rl.run.run import run_dir
from rl.workers.models import load_tokenizer
from rl.workers.ray_setup import init_ray


def eval_checkpoint(cfg: Config, checkpoint: str | None, address: str | None = None) -> dict:
    init_ray(address)
    task, tok = build.task_from(cfg), load_tokenizer(cfg.model.name)
    place = build.placement_from(cfg, engines=1)
    engine = build.engine_from(cfg, **place.options("engine"))
    if checkpoint:
        path = Path(checkpoint) / "learner.pt"
        if not path.exists():
            raise FileNotFoundError(f"--checkpoint: {path} not found")
        from rollout.weight_sync import pack_buckets
        state = torch.load(path, weights_only=False, map_location="cpu")["model"]
        ray.get(engine.update_weights.remote(pack_buckets(state.items(), 64 << 20), 1))
    result = build.evaluator_from(cfg, engine, tok, task)()
    for k, v in result.items():
        print(f"{k:40s} {v:.4f}")
    place.close()
    out = run_dir(cfg) / "eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"checkpoint": checkpoint, **result}, indent=2))
    return result
