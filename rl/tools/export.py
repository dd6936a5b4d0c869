"""`rl export CHECKPOINT OUT_DIR`: an HF folder (safetensors + config + tokenizer) from any checkpoint.

A checkpoint written by this version already holds one (CHECKPOINT/hf/, copied as it is); an older one
holds only learner.pt, whose weights are loaded into the run's model (`model.name` from the run's
config.yaml) and saved with `save_pretrained`; a LoRA checkpoint (learner.pt + adapter/) gets its
adapters merged into that base, W0 + (alpha / r) * B @ A, so no peft is needed to load it. The folder
loads with `AutoModelForCausalLM.from_pretrained`, with the vllm engine, and as `model.name` of a new recipe.
Example: rl export runs/quickstart/checkpoints/step-000029 exported/quickstart
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import yaml


def export(checkpoint: str | Path, out_dir: str | Path) -> Path:
    ckpt, out = Path(checkpoint), Path(out_dir)
    if (ckpt / "hf" / "config.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(ckpt / "hf", out)
        return out
    if not (ckpt / "learner.pt").exists():
        raise FileNotFoundError(f"{ckpt}: neither hf/ nor learner.pt (is it a run's checkpoints/step-* folder?)")
    config = ckpt.parent.parent / "config.yaml"
    if not config.exists():
        raise FileNotFoundError(f"{config}: the run's resolved config (needed for model.name) is missing")
    import torch

    from rl.workers.learner import save_hf_folder
    from rl.workers.lora import export_merged, is_lora_checkpoint
    from rl.workers.models import load_model
    cfg = yaml.safe_load(config.read_text())
    if is_lora_checkpoint(ckpt):  # adapters only: merged into the base the run trained on
        m = cfg["model"]
        return export_merged(ckpt, out, m["name"], m.get("dtype", "float32"), int(cfg["run"]["seed"]))
    name, dtype = cfg["model"]["name"], cfg["model"].get("master_dtype", "float32")
    model = load_model(name, dtype, seed=int(cfg["run"]["seed"]))
    model.load_state_dict(torch.load(ckpt / "learner.pt", weights_only=False, map_location="cpu")["model"])
    return Path(save_hf_folder(model, name, str(out)))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rl export", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", help="a run's checkpoint folder, e.g. runs/quickstart/checkpoints/step-000029")
    p.add_argument("out_dir")
    a = p.parse_args(argv)
    try:
        print(f"rl export: wrote {export(a.checkpoint, a.out_dir)}")
    except FileNotFoundError as e:
        print(f"rl export: {e}", file=sys.stderr)
        return 2
    return 0
