"""A trained V0 predictor on disk, and the trainer's hook `predict_success` (SPECS §5).

The file (torch.save) holds the weights with the embedder's name and dims, so a predictor is
loaded with the very embedder it was trained on. `predict_success` loads both once per process.

Example:
    predict_success("v0.pt", ["What is 2 + 2?"], [("What is 1 + 3?", 1.0), ...])  # -> [0.93]
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from allocation.value_model import InContextValueModel
from rl.v0.embedder import PromptEmbedder, get_embedder

FORMAT_VERSION = 1


def save_predictor(path: str | Path, model: InContextValueModel, embedder_name: str,
                   embed_dim: int, hidden_dim: int, num_heads: int,
                   system_prompt: str | None = None, metrics: dict | None = None) -> Path:
    """torch.save {state_dict, embedder, embed_dim, hidden_dim, num_heads, system_prompt, metrics}."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format_version": FORMAT_VERSION, "state_dict": model.state_dict(),
                "embedder": embedder_name, "embed_dim": embed_dim, "hidden_dim": hidden_dim,
                "num_heads": num_heads, "system_prompt": system_prompt,
                "metrics": json.loads(json.dumps(metrics or {}))}, tmp)
    tmp.replace(path)
    return path


def load_predictor(path: str | Path) -> tuple[InContextValueModel, dict]:
    """(model in eval mode, metadata without the weights) from `save_predictor`'s file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such predictor file (train one with `rl value train`)")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a V0 predictor file of format {FORMAT_VERSION}")
    model = InContextValueModel(blob["embed_dim"], blob["hidden_dim"], blob["num_heads"])
    model.load_state_dict(blob["state_dict"])
    return model.eval(), {k: v for k, v in blob.items() if k != "state_dict"}


_LOADED: dict[tuple, tuple] = {}  # (path, mtime) -> (model, embedder)


def _predictor(path: str) -> tuple[InContextValueModel, PromptEmbedder]:
    p = Path(path)
    key = (str(p.resolve()), p.stat().st_mtime_ns) if p.is_file() else (str(p), None)
    if key not in _LOADED:
        model, meta = load_predictor(p)
        embedder = get_embedder(meta["embedder"], meta.get("system_prompt"))
        if embedder.dim != meta["embed_dim"]:
            raise ValueError(f"{path}: embedder {meta['embedder']!r} gives dim {embedder.dim}, "
                             f"the predictor expects {meta['embed_dim']}")
        _LOADED[key] = (model, embedder)
    return _LOADED[key]


@torch.no_grad()
def predict_success(predictor_path: str, prompts: list[str], context: list[tuple[str, float]]) -> list[float]:
    """P(success) per prompt under the policy described by `context` (the trainer's hook).

    p_i = sigmoid(V0(x_i, C)), C = [(prompt, reward in [0, 1])]; feed to
    KnapsackAllocator.plan(keys, state, predicted_p=p) for the prompts it has not seen (U(B, p)
    budgets). Predictor and embedder are loaded once per process (and reloaded if the file changes).
    Example: predict_success("v0.pt", ["What is 7 + 5?"], [("What is 1 + 1?", 1.0)]) -> [0.71]
    """
    if not context:
        raise ValueError("V0 needs a non-empty context of (prompt, reward) pairs from the policy")
    bad = [r for _, r in context if not 0.0 <= float(r) <= 1.0]
    if bad:
        raise ValueError(f"context rewards must lie in [0, 1] (normalise them first), got e.g. {bad[0]}")
    model, embedder = _predictor(predictor_path)
    if not prompts:
        return []
    rewards = torch.tensor([float(r) for _, r in context])
    logits = model(embedder(prompts), embedder([p for p, _ in context]), rewards)
    return [float(x) for x in torch.sigmoid(logits)]
