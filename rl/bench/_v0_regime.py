"""V0's predictions as an allocator estimate for `rl bench allocation --offline` (regime "v0").

The held-out split that `rl value train --context C --queries Q` writes (<split>/context.jsonl:
the kept prompts' context rows, <split>/queries.jsonl: every row of the held-out prompts) is the
prompt set: for each policy, V0 reads the policy's context pairs and predicts the success rate of
each held-out prompt, p_hat_i = sigmoid(V0(x_i, C_policy)); no held-out prompt was seen in
training under any policy, so the prediction is out of sample. The kNN baseline (mean p of the 16
nearest context prompts in embedding space) is given as a second learned regime.

Example:
    heldout_predictions("runs/v0_authors/v0.pt", "runs/v0_authors/v0_split")
    # -> {"Qwen3-4B-Instruct@step16": {"p_true": [...], "v0": [...], "knn": [...], "context_mean": [...]}}
"""
from __future__ import annotations

from pathlib import Path

import torch

from allocation.value_model import knn_baseline
from rl.v0.embedder import get_embedder
from rl.v0.predictor import load_predictor
from rl.v0.scored import default_prompts_path, read_prompt_texts, read_scored_rows, scored_episodes
from rl.v0.scored_cli import _embed


@torch.no_grad()
def heldout_predictions(predictor: str | Path, split_dir: str | Path, embed_cache: str | None = None,
                        knn_k: int = 16, context_size: int = 512) -> dict[str, dict[str, list[float]]]:
    """Per policy: the held-out prompts' recorded p and each estimate of it (V0, kNN, context mean)."""
    split = Path(split_dir)
    for name in ("context.jsonl", "queries.jsonl"):
        if not (split / name).is_file():
            raise FileNotFoundError(f"{split / name}: missing; `rl value train ... --out X.pt` writes the "
                                    f"split to X_split/ (or --split-dir)")
    model, meta = load_predictor(predictor)
    context = read_scored_rows(split / "context.jsonl")
    texts = read_prompt_texts(default_prompts_path(split / "context.jsonl"))
    vocab, episodes = scored_episodes(context, read_scored_rows(split / "queries.jsonl"), texts, context_size)
    table = _embed(get_embedder(meta["embedder"], meta.get("system_prompt")), vocab, embed_cache)
    out = {}
    for ep in episodes:
        qe, ce, rewards = table[ep.query_idx], table[ep.context_idx], ep.context_rewards
        out[ep.name] = {"p_true": ep.query_labels.tolist(),
                        "v0": torch.sigmoid(model(qe, ce, rewards)).tolist(),
                        "knn": knn_baseline(qe, ce, rewards, k=knn_k).tolist(),
                        "context_mean": [float(rewards.mean())] * len(qe)}
    return out
