"""`rl value train|eval`: the shell of V0, the state-zero value model (SPECS §5, issue 4 item 3).

V0 (Zhang et al., 2026) predicts P(success | x, C_pi), C_pi = {(x_j, r_j)} the prompts a policy
recently answered with their mean rewards in [0, 1]. Here:
- a frozen embedder (`rl.v0.embedder.PromptEmbedder`): mean of the last hidden layer over the
  chat-templated prompt tokens of the policy's own model or any HF model / folder;
- policies from run history (`rl.v0.data`, `runs/<name>/rollouts.jsonl`): one run over steps
  [k*W, (k+1)*W);
- `InContextValueModel` (allocation/value_model.py) trained across policies with `v0_loss`
  (alpha = 0.25) on held-out prompts of each context (`rl.v0.fit`); evaluated by intra-policy AUC
  next to the kNN-on-embeddings baseline; saved with the embedder name and dims (`rl.v0.predictor`).

Scored-prompt records in the V0 authors' layout (`--context FILE --queries FILE [--prompts FILE]`)
go through `rl.v0.scored_cli`: per (model, step) policy, context rows are the in-context pairs and
query rows are scored.

Example:
    rl value train runs/a/rollouts.jsonl runs/b/rollouts.jsonl --out v0.pt --window-steps 10
    rl value eval runs/c/rollouts.jsonl --predictor v0.pt
    rl value train --context context.jsonl --queries train.jsonl --embedder all-minilm-l6-v2 --out v0.pt
    rl value eval --context v0_split/context.jsonl --queries v0_split/queries.jsonl --predictor v0.pt
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import torch

from rl.v0.data import eval_episodes, index_policies, policy_windows, prompt_split
from rl.v0.embedder import get_embedder
from rl.v0.fit import evaluate_episodes, train_value_model
from rl.v0.predictor import load_predictor, save_predictor
from rl.v0.scored_cli import eval_scored, train_scored
from rl.workers.models import ModelNotFoundError


def _default_embedder(paths: Sequence[str]) -> str:
    """The policy's own model: model.name in the run's config.yaml beside its rollouts.jsonl."""
    import yaml
    for path in paths:
        cfg = Path(path).parent / "config.yaml"
        if cfg.is_file():
            name = (yaml.safe_load(cfg.read_text()) or {}).get("model", {}).get("name")
            if name:
                return str(name)
    raise ValueError("no config.yaml with model.name beside the rollouts: pass --embedder NAME")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rl value", description="V0 state-zero value model (SPECS §5)")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("train", "eval"):
        s = sub.add_parser(name)
        s.add_argument("rollouts", nargs="*", help="rollouts.jsonl files (one run each)")
        s.add_argument("--context", help="scored rows {id, score in [-1,1], model, step}: in-context pairs")
        s.add_argument("--queries", help="scored rows of the same layout: the queries (train: also trained on)")
        s.add_argument("--prompts", help="JSON {\"<dataset>_<id>\": text} (default: prompt_dict.json "
                       "beside --context)")
        s.add_argument("--embed-cache", help="folder for cached embeddings ('none': no disk cache)")
        s.add_argument("--window-steps", type=int, default=10, help="steps per policy window")
        s.add_argument("--reward-range", type=float, nargs=2, default=(0.0, 1.0), metavar=("LOW", "HIGH"))
        s.add_argument("--min-prompts", type=int, default=8, help="drop windows with fewer prompts")
        s.add_argument("--context-size", type=int, default=None, help="default 128 (runs) / 512 (--context)")
        s.add_argument("--knn-k", type=int, default=16)
        s.add_argument("--threshold", type=float, default=0.5, help="AUC positives: label > threshold")
        s.add_argument("--seed", type=int, default=0)
    t = sub.choices["train"]
    t.add_argument("--out", required=True, help="predictor file to write (.pt; metrics beside as .json)")
    t.add_argument("--embedder", help="HF model name or folder (default: the run's own model)")
    t.add_argument("--system-prompt", default=None)
    t.add_argument("--steps", type=int, default=300)
    t.add_argument("--batch-contexts", type=int, default=8)
    t.add_argument("--query-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--alpha", type=float, default=0.25, help="rank-loss weight in v0_loss")
    t.add_argument("--hidden-dim", type=int, default=64)
    t.add_argument("--heads", type=int, default=4)
    t.add_argument("--val-policies", type=float, default=0.25, help="fraction of policies held out (runs)")
    t.add_argument("--split-dir", help="--context mode: where the validation split goes (default <out>_split)")
    t.add_argument("--heldout-prompts", type=float, default=0.2, help="fraction of prompts never trained on")
    sub.choices["eval"].add_argument("--predictor", required=True)
    sub.choices["eval"].add_argument("--query-fraction", type=float, default=0.25, help="prompts held out as queries")
    sub.choices["eval"].add_argument("--out", default=None, help="JSON file for the metrics")
    return p


def _report(metrics: dict) -> None:
    print(f"{'context':40s} {'queries':>7s} {'pos':>4s} {'ctx':>4s} {'V0 AUC':>7s} {'kNN AUC':>7s}")
    for r in metrics["per_context"]:
        print(f"{r['name'][:40]:40s} {r['queries']:7d} {r['positives']:4d} {r['context']:4d} "
              f"{r['v0_auc']:7.3f} {r['knn_auc']:7.3f}")
    print(f"intra-policy AUC over {metrics['contexts']} contexts: V0 {metrics['v0_auc']:.3f}  "
          f"kNN {metrics['knn_auc']:.3f}")


def _train(a) -> dict:
    a.context_size = a.context_size or 128
    policies = policy_windows(a.rollouts, a.window_steps, tuple(a.reward_range), a.min_prompts)
    texts, indexed = index_policies(policies)
    embedder = get_embedder(a.embedder or _default_embedder(a.rollouts), a.system_prompt)
    table = embedder(texts, show_progress=True)
    order = torch.randperm(len(policies), generator=torch.Generator().manual_seed(a.seed)).tolist()
    n_val = min(len(policies) - 1, round(a.val_policies * len(policies)))
    val, train = (order[:n_val], order[n_val:]) if n_val > 0 else (order, order)
    heldout = prompt_split(len(texts), a.heldout_prompts, a.seed)
    model, losses = train_value_model(
        table, indexed, train, ~heldout, steps=a.steps, contexts_per_batch=a.batch_contexts,
        context_size=a.context_size, query_size=a.query_size, lr=a.lr, alpha=a.alpha,
        hidden_dim=a.hidden_dim, num_heads=a.heads, seed=a.seed)
    episodes = eval_episodes([policies[i] for i in val], [indexed[i] for i in val],
                             lambda i: bool(heldout[i]), a.context_size)
    metrics = evaluate_episodes(model, table, episodes, a.knn_k, a.threshold)
    metrics.update(embedder=embedder.name, policies=len(policies), train_policies=len(train),
                   val_policies=len(val), prompts=len(texts), heldout_prompts=int(heldout.sum()),
                   final_loss=sum(losses[-20:]) / max(1, len(losses[-20:])))
    save_predictor(a.out, model, embedder.name, embedder.dim, a.hidden_dim, a.heads,
                   a.system_prompt, metrics)
    Path(a.out).with_suffix(".json").write_text(json.dumps(metrics, indent=2))
    _report(metrics)
    print(f"saved {a.out} (embedder {embedder.name}, dim {embedder.dim}; "
          f"{len(train)} train / {len(val)} val policies)")
    return metrics


def _eval(a) -> dict:
    a.context_size = a.context_size or 128
    model, meta = load_predictor(a.predictor)
    embedder = get_embedder(meta["embedder"], meta.get("system_prompt"))
    policies = policy_windows(a.rollouts, a.window_steps, tuple(a.reward_range), a.min_prompts)
    texts, indexed = index_policies(policies)
    table = embedder(texts, show_progress=True)
    queries = prompt_split(len(texts), a.query_fraction, a.seed)
    episodes = eval_episodes(policies, indexed, lambda i: bool(queries[i]), a.context_size)
    metrics = evaluate_episodes(model, table, episodes, a.knn_k, a.threshold)
    metrics.update(predictor=str(a.predictor), embedder=meta["embedder"], policies=len(policies))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(metrics, indent=2))
    _report(metrics)
    return metrics


def main_value(argv: list[str]) -> int:
    """`rl value train ROLLOUTS... --out v0.pt` | `rl value eval ROLLOUTS... --predictor v0.pt`."""
    args = _parser().parse_args(argv)
    scored = bool(args.context or args.queries)
    if scored and not (args.context and args.queries and not args.rollouts):
        print("rl value: error: --context and --queries go together, without rollouts files", file=sys.stderr)
        return 2
    if not scored and not args.rollouts:
        print("rl value: error: pass rollouts.jsonl files or --context FILE --queries FILE", file=sys.stderr)
        return 2
    run = {(False, "train"): _train, (False, "eval"): _eval,
           (True, "train"): train_scored, (True, "eval"): eval_scored}[(scored, args.cmd)]
    try:
        run(args)
    except (FileNotFoundError, ValueError, ModelNotFoundError) as e:
        print(f"rl value: error: {e}", file=sys.stderr)
        return 2
    return 0
