"""`rl value train|eval --context FILE --queries FILE`: V0 on records in the V0 authors' layout.

train: reads context rows (the in-context pairs) and query rows, holds out a seeded fraction of
prompt keys for every policy (`rl.v0.scored.holdout_split`), writes that validation split in the
same layout (`<split-dir>/context.jsonl`, `queries.jsonl`, `prompt_dict.json`), trains V0 on the
rest (context and query rows of kept prompts) and reports the split's intra-policy AUC.
eval: the paper's protocol on explicit files: per (model, step) policy, its context rows are the
context and its query rows are scored; V0 next to kNN (neighbours among that policy's context rows)
and the context mean. Embeddings are cached on disk (`--embed-cache`).

Example:
    rl value train --context data/context.jsonl --queries data/train.jsonl --embedder all-minilm-l6-v2 \
        --out runs/v0/v0.pt
    rl value eval --context runs/v0/v0_split/context.jsonl --queries runs/v0/v0_split/queries.jsonl \
        --predictor runs/v0/v0.pt --out bench/results/v0_authors.json
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from rl.v0.embedder import MINILM, PromptEmbedder, get_embedder
from rl.v0.fit import evaluate_episodes, train_value_model
from rl.v0.predictor import load_predictor, save_predictor
from rl.v0.scored import (default_prompts_path, holdout_split, prompt_text, read_prompt_texts,
                          read_scored_rows, scored_episodes, split_rows, training_pool,
                          write_scored_rows)
from rl.workers.models import cache_dir


def _embed(embedder: PromptEmbedder, texts: list[str], cache: str | None) -> torch.Tensor:
    """[U, dim] embeddings of `texts`, read from / added to the disk cache unless cache is 'none'."""
    if cache == "none":
        return embedder(texts, show_progress=True)
    path = embedder.cache_path(cache or cache_dir() / "v0_embeddings")
    embedder.load_cache(path)
    table = embedder(texts, show_progress=True)
    embedder.save_cache(path)
    return table


def _inputs(a):
    context, queries = read_scored_rows(a.context), read_scored_rows(a.queries)
    texts = read_prompt_texts(a.prompts or default_prompts_path(a.context))
    return context, queries, texts


def report_scored(metrics: dict) -> None:
    print(f"{'policy':40s} {'queries':>7s} {'pos':>4s} {'ctx':>4s} {'V0':>6s} {'kNN':>6s} {'ctxmean':>7s}")
    for r in metrics["per_context"]:
        print(f"{r['name'][:40]:40s} {r['queries']:7d} {r['positives']:4d} {r['context']:4d} "
              f"{r['v0_auc']:6.3f} {r['knn_auc']:6.3f} {r['context_mean_auc']:7.3f}")
    pooled = metrics["pooled"]
    print(f"intra-policy AUC, mean over {metrics['contexts']} policies: V0 {metrics['v0_auc']:.3f}  "
          f"kNN {metrics['knn_auc']:.3f}  context mean {metrics['context_mean_auc']:.3f}")
    print(f"pooled AUC (all policies' queries together): V0 {pooled['v0_auc']:.3f}  "
          f"kNN {pooled['knn_auc']:.3f}  context mean {pooled['context_mean_auc']:.3f}")


def _write_split(folder: Path, val_context, val_queries, texts: dict[str, str]) -> None:
    write_scored_rows(folder / "context.jsonl", val_context)
    write_scored_rows(folder / "queries.jsonl", val_queries)
    keys = {r.key: prompt_text(r, texts) for r in [*val_context, *val_queries]}
    (folder / "prompt_dict.json").write_text(json.dumps(dict(sorted(keys.items()))))


def _train_args(a, context_size: int) -> dict:
    names = ("steps", "batch_contexts", "query_size", "lr", "alpha", "hidden_dim", "heads",
             "heldout_prompts", "seed", "knn_k", "threshold")
    return {"context": str(a.context), "queries": str(a.queries), "context_size": context_size,
            **{k: getattr(a, k) for k in names}}


def train_scored(a) -> dict:
    """`rl value train --context C --queries Q --out v0.pt`: hold out prompts, train, evaluate."""
    start = time.perf_counter()
    context, queries, texts = _inputs(a)
    heldout = holdout_split([*context, *queries], a.heldout_prompts, a.seed)
    train_rows, val_context, val_queries = split_rows(context, queries, heldout)
    split_dir = Path(a.split_dir or Path(a.out).with_name(Path(a.out).stem + "_split"))
    _write_split(split_dir, val_context, val_queries, texts)
    context_size = a.context_size or 512
    vocab, episodes = scored_episodes(val_context, val_queries, texts, context_size)
    vocab, names, indexed = training_pool(train_rows, texts, vocab)
    embedder = get_embedder(a.embedder or MINILM, a.system_prompt)
    table = _embed(embedder, vocab, a.embed_cache)
    model, losses = train_value_model(
        table, indexed, list(range(len(indexed))), torch.ones(len(vocab), dtype=torch.bool),
        steps=a.steps, contexts_per_batch=a.batch_contexts, context_size=context_size,
        query_size=a.query_size, lr=a.lr, alpha=a.alpha, hidden_dim=a.hidden_dim,
        num_heads=a.heads, seed=a.seed)
    metrics = evaluate_episodes(model, table, episodes, a.knn_k, a.threshold)
    metrics.update(embedder=embedder.name, embed_dim=embedder.dim, train_policies=names,
                   train_rows=len(train_rows), heldout_prompts=len(heldout), split_dir=str(split_dir),
                   final_loss=sum(losses[-20:]) / max(1, len(losses[-20:])),
                   seconds=round(time.perf_counter() - start, 1), train_args=_train_args(a, context_size))
    save_predictor(a.out, model, embedder.name, embedder.dim, a.hidden_dim, a.heads,
                   a.system_prompt, metrics)
    Path(a.out).with_suffix(".json").write_text(json.dumps(metrics, indent=2))
    report_scored(metrics)
    print(f"saved {a.out} (embedder {embedder.name}, dim {embedder.dim}; {len(train_rows)} train rows, "
          f"{len(heldout)} held-out prompts; validation split in {split_dir})")
    return metrics


def eval_scored(a) -> dict:
    """`rl value eval --context C --queries Q --predictor v0.pt`: per policy, C's rows are the
    context, Q's rows are scored; V0 vs kNN vs context mean."""
    start = time.perf_counter()
    model, meta = load_predictor(a.predictor)
    context, queries, texts = _inputs(a)
    vocab, episodes = scored_episodes(context, queries, texts, a.context_size or 512)
    embedder = get_embedder(meta["embedder"], meta.get("system_prompt"))
    table = _embed(embedder, vocab, a.embed_cache)
    metrics = evaluate_episodes(model, table, episodes, a.knn_k, a.threshold)
    metrics.update(predictor=str(a.predictor), embedder=meta["embedder"], context_file=str(a.context),
                   queries_file=str(a.queries), positives=f"p > {a.threshold} (score > {2 * a.threshold - 1:g})",
                   knn_k=a.knn_k, seconds=round(time.perf_counter() - start, 1),
                   training={k: v for k, v in meta.get("metrics", {}).items()
                             if k in ("train_args", "train_policies", "train_rows", "heldout_prompts",
                                      "final_loss", "seconds")})
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(metrics, indent=2))
    report_scored(metrics)
    return metrics
