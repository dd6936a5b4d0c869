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
from rollout.weight_sync import pack_buckets


def checkpoint_weights(ckpt: Path, model_name: str, dtype: str = "float32", seed: int = 0) -> dict:
    """The policy's parameters from a checkpoint: its hf/ folder (any number of learners), learner.pt, or a
    LoRA checkpoint's adapters merged into the base."""
    from rl.workers.lora import is_lora_checkpoint, merged_checkpoint_model
    from rl.workers.models import load_model
    if is_lora_checkpoint(ckpt):  # adapters only: merged into the recipe's base (model.dtype as trained)
        model = merged_checkpoint_model(ckpt, model_name, dtype, seed)
    elif (ckpt / "hf" / "config.json").exists():
        model = load_model(str(ckpt / "hf"))
    elif (ckpt / "learner.pt").exists():
        model = load_model(model_name)
        model.load_state_dict(torch.load(ckpt / "learner.pt", weights_only=False, map_location="cpu")["model"])
    else:
        raise FileNotFoundError(f"--checkpoint: {ckpt} holds neither hf/ nor learner.pt")
    return {n: p.detach() for n, p in model.named_parameters()}  # tied weights once, as the engine holds them


def eval_checkpoint(cfg: Config, checkpoint: str | None, address: str | None = None) -> dict:
    init_ray(address)
    tok = load_tokenizer(cfg.model.name)
    task = build.task_from(cfg, tok)
    place = build.placement_from(cfg, engines=1)
    engine = build.engine_from(cfg, **place.options("engine"))
    if checkpoint:
        weights = checkpoint_weights(Path(checkpoint), cfg.model.name, cfg.model.dtype, cfg.run.seed)
        ray.get(engine.update_weights.remote(pack_buckets(weights.items(), 64 << 20), 1))
    result = build.evaluator_from(cfg, engine, tok, task)()
    for k, v in result.items():
        print(f"{k:40s} {v:.4f}")
    place.close()
    out = run_dir(cfg) / "eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"checkpoint": checkpoint, **result}, indent=2))
    return result
