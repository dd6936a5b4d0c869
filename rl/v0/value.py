"""`rl value train|eval`: the shell of V0, the state-zero value model (SPECS §5, issue 4 item 3).

V0 (Zhang et al., 2026) predicts P(success | x, C_pi), C_pi = {(x_j, r_j)} the prompts a policy
recently answered with their mean rewards in [0, 1]. Here:
- a frozen embedder (`PromptEmbedder`): mean of the last hidden layer over the chat-templated
  prompt tokens of the policy's own model (`rl.workers.models.load_policy`) or any HF model / folder;
- policies from run history (`runs/<name>/rollouts.jsonl`): one run over steps [k*W, (k+1)*W);
- `InContextValueModel` (allocation/value_model.py) trained across policies with `v0_loss`
  (alpha = 0.25) on held-out prompts of each context; evaluated by intra-policy AUC next to the
  kNN-on-embeddings baseline; saved with torch.save together with the embedder name and dims.

Example:
    rl value train runs/a/rollouts.jsonl runs/b/rollouts.jsonl --out v0.pt --window-steps 10
    rl value eval runs/c/rollouts.jsonl --predictor v0.pt
    predict_success("v0.pt", ["What is 2 + 2?"], [("What is 1 + 3?", 1.0), ...])  # -> [0.93]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from allocation.value_model import InContextValueModel, auc, intra_policy_auc, knn_baseline, v0_loss
from rl.workers.models import ModelNotFoundError, load_policy, load_tokenizer, resolve_model_path

FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------------
# Frozen embedder


def _bar(total: int, desc: str, show: bool):
    from rl.run.logging import progress
    return progress(total, desc) if show else _NoBar()


class _NoBar:
    update = set_postfix = close = staticmethod(lambda *_, **__: None)


def _load_embedding_model(name: str):
    """(model, tokenizer): a causal LM through `load_policy`, else any HF encoder (AutoModel)."""
    try:
        return load_policy(name)
    except ValueError:  # not a causal LM (e.g. a BERT-style encoder folder)
        from transformers import AutoModel
        model = AutoModel.from_pretrained(resolve_model_path(name), dtype=torch.float32).eval()
        return model, load_tokenizer(name)


class PromptEmbedder:
    """Frozen prompt embeddings: masked mean of the last hidden layer over the prompt tokens.

    e(x) = (1/L) sum_t h_t^{last}(chat_template(x)), no grad, batched with right padding (causal
    models: padding at the end changes no real token's state), cached per prompt text.
    Shapes: prompts [N] -> [N, dim]. Example: PromptEmbedder("tiny-llama")(["What is 1 + 2?"]) -> [1, 64]
    """

    def __init__(self, name: str, system_prompt: str | None = None, batch_size: int = 16):
        self.name, self.system_prompt, self.batch_size = name, system_prompt, int(batch_size)
        model, self.tokenizer = _load_embedding_model(name)
        self.model = getattr(model, "base_model", model)  # the trunk: no vocab-sized logits
        self.dim = int(model.config.hidden_size)
        self.pad_id = self.tokenizer.pad_token_id or 0
        self._cache: dict[str, torch.Tensor] = {}

    def _ids(self, prompt: str) -> list[int]:
        if getattr(self.tokenizer, "chat_template", None):
            msgs = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else []) \
                + [{"role": "user", "content": prompt}]
            enc = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
            return list(enc["input_ids"] if hasattr(enc, "keys") else enc)
        return list(self.tokenizer(prompt)["input_ids"])

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], show_progress: bool = False) -> torch.Tensor:
        missing = sorted({p for p in prompts if p not in self._cache}, key=len)
        bar = _bar(len(missing), f"embed {self.name}", show_progress and bool(missing))
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start:start + self.batch_size]
            ids = [self._ids(p) for p in chunk]
            width = max(len(x) for x in ids)
            input_ids = torch.tensor([x + [self.pad_id] * (width - len(x)) for x in ids])
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
            hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1)             # [b, dim]
            for p, e in zip(chunk, pooled.float()):
                self._cache[p] = e.clone()
            bar.update(len(chunk))
        bar.close()
        if not prompts:
            return torch.zeros(0, self.dim)
        return torch.stack([self._cache[p] for p in prompts])


# ---------------------------------------------------------------------------------------------
# Data: policies from rollouts.jsonl


@dataclass
class PolicyContext:
    """One policy's (prompt, mean reward) pairs; rewards normalised to [0, 1]."""
    name: str
    prompts: list[str]
    rewards: list[float]


def read_outcomes(path: str | Path) -> list[dict]:
    """Rows {step (or None), prompt, reward_sum, count} from a rollouts.jsonl ({step, prompt,
    rewards: [...]}) or a context JSONL ({prompt, reward}). Example row: {"prompt": "..", "reward": 1}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected a rollouts.jsonl or a JSONL of prompt/reward)")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict) or "prompt" not in row or ("rewards" not in row and "reward" not in row):
            raise ValueError(f"{path}:{i}: a row needs 'prompt' and 'rewards' (list) or 'reward' (number)")
        values = row["rewards"] if "rewards" in row else [row["reward"]]
        values = [float(v) for v in values if v is not None]
        if values:
            rows.append({"step": row.get("step"), "prompt": str(row["prompt"]),
                         "reward_sum": sum(values), "count": len(values)})
    return rows


def aggregate(rows: list[dict], reward_range: tuple[float, float] = (0.0, 1.0)) -> dict[str, float]:
    """Mean reward per prompt over all its samples, (r - low) / (high - low) clipped to [0, 1]."""
    low, high = reward_range
    if high <= low:
        raise ValueError(f"reward range must have high > low, got {tuple(reward_range)}")
    sums, counts = defaultdict(float), defaultdict(int)
    for r in rows:
        sums[r["prompt"]] += r["reward_sum"]
        counts[r["prompt"]] += r["count"]
    return {p: min(1.0, max(0.0, (sums[p] / counts[p] - low) / (high - low))) for p in sums}


def policy_windows(paths: Sequence[str | Path], window_steps: int,
                   reward_range: tuple[float, float] = (0.0, 1.0), min_prompts: int = 8) -> list[PolicyContext]:
    """Split each file into policies of `window_steps` steps: window k holds steps [kW, (k+1)W).

    Rows without a step form one window. Windows with fewer than `min_prompts` prompts are dropped.
    Example: policy_windows(["runs/a/rollouts.jsonl"], 10) -> [a:[0,10), a:[10,20), ...]
    """
    if window_steps < 1:
        raise ValueError(f"--window-steps must be >= 1, got {window_steps}")
    out = []
    for path in paths:
        by_window: dict[int, list[dict]] = defaultdict(list)
        for row in read_outcomes(path):
            by_window[-1 if row["step"] is None else int(row["step"]) // window_steps].append(row)
        label = Path(path).parent.name or Path(path).stem
        for k in sorted(by_window):
            means = aggregate(by_window[k], reward_range)
            span = "all" if k < 0 else f"[{k * window_steps},{(k + 1) * window_steps})"
            if len(means) >= min_prompts:
                out.append(PolicyContext(f"{label}:{span}", list(means), list(means.values())))
    if not out:
        raise ValueError(f"no policy window with >= {min_prompts} prompts in {[str(p) for p in paths]}")
    return out


# ---------------------------------------------------------------------------------------------
# Episodes: (queries, their labels, context, its rewards) as index tensors into one embedding table


@dataclass
class Episode:
    name: str
    query_idx: torch.Tensor      # [Q] rows of the embedding table
    query_labels: torch.Tensor   # [Q] mean reward in [0, 1]
    context_idx: torch.Tensor    # [C]
    context_rewards: torch.Tensor  # [C]


def index_policies(policies: list[PolicyContext]) -> tuple[list[str], list[tuple[torch.Tensor, torch.Tensor]]]:
    """Unique prompt texts and, per policy, (row indices [n], rewards [n])."""
    vocab: dict[str, int] = {}
    indexed = []
    for pol in policies:
        idx = torch.tensor([vocab.setdefault(p, len(vocab)) for p in pol.prompts], dtype=torch.long)
        indexed.append((idx, torch.tensor(pol.rewards, dtype=torch.float32)))
    return list(vocab), indexed


def eval_episodes(policies: list[PolicyContext], indexed, is_query, context_size: int) -> list[Episode]:
    """Per policy: queries = prompts with is_query(row index) true, context = the others (the
    first `context_size`). Policies without >= 2 queries or without context are skipped."""
    out = []
    for pol, (idx, rew) in zip(policies, indexed):
        q = torch.tensor([bool(is_query(int(i))) for i in idx], dtype=torch.bool)
        if int(q.sum()) >= 2 and int((~q).sum()) >= 1:
            out.append(Episode(pol.name, idx[q], rew[q], idx[~q][:context_size], rew[~q][:context_size]))
    return out


def _sample_batch(indexed, pool: list[int], contexts_per_batch: int, context_size: int,
                  query_size: int, allowed: torch.Tensor, gen: torch.Generator):
    """Random episodes: per sampled policy, a permutation of its allowed prompts split into up to
    `query_size` queries (at most half) and up to `context_size` context prompts; padded + masks."""
    picks = torch.randint(len(pool), (contexts_per_batch,), generator=gen).tolist()
    parts = []
    for j in picks:
        idx, rew = indexed[pool[j]]
        keep = allowed[idx]
        idx, rew = idx[keep], rew[keep]
        perm = torch.randperm(len(idx), generator=gen)
        q = min(query_size, len(idx) // 2)
        c = min(context_size, len(idx) - q)
        parts.append((idx[perm[:q]], rew[perm[:q]], idx[perm[q:q + c]], rew[perm[q:q + c]]))
    return tuple(_pad([p[k] for p in parts]) for k in range(4))


def _pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """[B] ragged 1-D tensors -> (values [B, max_len], mask [B, max_len] True = real)."""
    width = max(1, max(len(r) for r in rows))
    values = torch.zeros(len(rows), width, dtype=rows[0].dtype)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        values[i, :len(r)], mask[i, :len(r)] = r, True
    return values, mask


# ---------------------------------------------------------------------------------------------
# Training and evaluation


def train_value_model(table: torch.Tensor, indexed, train_pool: list[int], allowed: torch.Tensor, *,
                      steps: int = 300, contexts_per_batch: int = 8, context_size: int = 128,
                      query_size: int = 32, lr: float = 1e-3, alpha: float = 0.25, hidden_dim: int = 64,
                      num_heads: int = 4, seed: int = 0, show_progress: bool = True):
    """Fit `InContextValueModel` across policies: each step, `contexts_per_batch` random episodes
    (queries held out of their own context), loss = v0_loss(alpha) with padding masks, Adam.

    table [U, D] prompt embeddings; indexed[k] = (row indices, rewards) of policy k; train_pool =
    policy indices to sample; allowed [U] bool = prompts usable in training (held-out ones False).
    Returns (model in eval mode, losses per step). Deterministic for a seed.
    """
    train_pool = [k for k in train_pool if int(allowed[indexed[k][0]].sum()) >= 2]  # a query + a context
    if not train_pool:
        raise ValueError("no training policy with >= 2 usable prompts: pass more rollouts")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = InContextValueModel(table.shape[1], hidden_dim, num_heads)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    bar = _bar(steps, "train V0", show_progress)
    losses = []
    for _ in range(steps):
        (qi, qm), (qy, _), (ci, cm), (cr, _) = _sample_batch(indexed, train_pool, contexts_per_batch,
                                                             context_size, query_size, allowed, gen)
        opt.zero_grad(set_to_none=True)
        logits = model(table[qi], table[ci], cr, cm)                        # [B, Q]
        loss = v0_loss(logits, qy, alpha, mask=qm)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.4f}")
        bar.update(1)
    bar.close()
    return model.eval(), losses


@torch.no_grad()
def evaluate_episodes(model: InContextValueModel, table: torch.Tensor, episodes: list[Episode],
                      knn_k: int = 16, threshold: float = 0.5) -> dict:
    """Intra-policy AUC (SPECS §5) of V0 and of the kNN baseline on each episode's held-out queries.

    Positives: query label > threshold. AUC per context, averaged over contexts with both classes.
    Returns {v0_auc, knn_auc, contexts (counted), per_context: [{name, queries, context, positives,
    v0_auc, knn_auc}]}. Example: evaluate_episodes(model, table, eps)["v0_auc"] -> 0.81
    """
    per, v0s, knns, ys = [], [], [], []
    for ep in episodes:
        qe, ce = table[ep.query_idx], table[ep.context_idx]
        v0s.append(model(qe, ce, ep.context_rewards))
        knns.append(knn_baseline(qe, ce, ep.context_rewards, k=knn_k))
        ys.append((ep.query_labels > threshold).float())
        per.append({"name": ep.name, "queries": len(ys[-1]), "context": len(ce), "positives": int(ys[-1].sum()),
                    "v0_auc": auc(v0s[-1], ys[-1]), "knn_auc": auc(knns[-1], ys[-1])})
    return {"v0_auc": intra_policy_auc(v0s, ys), "knn_auc": intra_policy_auc(knns, ys),
            "contexts": sum(not math.isnan(r["v0_auc"]) for r in per), "per_context": per}


# ---------------------------------------------------------------------------------------------
# Save / load / predict (the trainer hook)


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
_EMBEDDERS: dict[tuple, PromptEmbedder] = {}


def get_embedder(name: str, system_prompt: str | None = None) -> PromptEmbedder:
    """One `PromptEmbedder` per (name, system prompt) per process, so its cache is shared."""
    key = (name, system_prompt)
    if key not in _EMBEDDERS:
        _EMBEDDERS[key] = PromptEmbedder(name, system_prompt)
    return _EMBEDDERS[key]


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


# ---------------------------------------------------------------------------------------------
# CLI


def _prompt_split(num_prompts: int, fraction: float, seed: int) -> torch.Tensor:
    """[U] bool: a seeded `fraction` of the unique prompts (at least 1 when fraction > 0)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"held-out prompt fraction must lie in [0, 1), got {fraction}")
    chosen = torch.zeros(num_prompts, dtype=torch.bool)
    count = max(1, round(fraction * num_prompts)) if fraction > 0 else 0
    chosen[torch.randperm(num_prompts, generator=torch.Generator().manual_seed(seed + 1))[:count]] = True
    return chosen


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
        s.add_argument("rollouts", nargs="+", help="rollouts.jsonl files (one run each)")
        s.add_argument("--window-steps", type=int, default=10, help="steps per policy window")
        s.add_argument("--reward-range", type=float, nargs=2, default=(0.0, 1.0), metavar=("LOW", "HIGH"))
        s.add_argument("--min-prompts", type=int, default=8, help="drop windows with fewer prompts")
        s.add_argument("--context-size", type=int, default=128)
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
    t.add_argument("--val-policies", type=float, default=0.25, help="fraction of policies held out")
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
    policies = policy_windows(a.rollouts, a.window_steps, tuple(a.reward_range), a.min_prompts)
    texts, indexed = index_policies(policies)
    embedder = get_embedder(a.embedder or _default_embedder(a.rollouts), a.system_prompt)
    table = embedder(texts, show_progress=True)
    order = torch.randperm(len(policies), generator=torch.Generator().manual_seed(a.seed)).tolist()
    n_val = min(len(policies) - 1, round(a.val_policies * len(policies)))
    val, train = (order[:n_val], order[n_val:]) if n_val > 0 else (order, order)
    heldout = _prompt_split(len(texts), a.heldout_prompts, a.seed)
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
    model, meta = load_predictor(a.predictor)
    embedder = get_embedder(meta["embedder"], meta.get("system_prompt"))
    policies = policy_windows(a.rollouts, a.window_steps, tuple(a.reward_range), a.min_prompts)
    texts, indexed = index_policies(policies)
    table = embedder(texts, show_progress=True)
    queries = _prompt_split(len(texts), a.query_fraction, a.seed)
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
    try:
        (_train if args.cmd == "train" else _eval)(args)
    except (FileNotFoundError, ValueError, ModelNotFoundError) as e:
        print(f"rl value: error: {e}", file=sys.stderr)
        return 2
    return 0
