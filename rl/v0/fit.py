"""Fitting and scoring V0 (SPECS §5): `InContextValueModel` trained across policies, then the
intra-policy AUC of V0 next to the kNN-on-embeddings and context-mean baselines.

Training samples random episodes per step: per policy, a permutation of its usable prompts split
into held-out queries and a context, padded into a batch with masks; loss = v0_loss(alpha).

Example:
    model, losses = train_value_model(table, indexed, train_pool=[0, 1, 2], allowed=~heldout)
    evaluate_episodes(model, table, episodes)["v0_auc"]   # -> 0.81
"""
from __future__ import annotations

import math

import torch

from allocation.value_model import InContextValueModel, auc, intra_policy_auc, knn_baseline, v0_loss
from rl.v0.data import Episode
from rl.v0.embedder import optional_progress


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
    bar = optional_progress(steps, "train V0", show_progress)
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
    """Intra-policy AUC (SPECS §5) of V0, the kNN baseline and the context mean on each episode's
    held-out queries, and the pooled AUC over all episodes' queries together.

    Positives: query label > threshold. AUC per context, averaged over contexts with both classes.
    The context mean (the policy's mean context reward) is one constant per context, so its intra
    AUC is 0.5 by construction (all ties); pooled across policies it ranks policies, not prompts.
    Returns {v0_auc, knn_auc, context_mean_auc, pooled: {v0_auc, knn_auc, context_mean_auc},
    contexts (counted), per_context: [{name, queries, context, positives, v0_auc, knn_auc,
    context_mean_auc}]}. Example: evaluate_episodes(model, table, eps)["v0_auc"] -> 0.81
    """
    per, scores, ys = [], {"v0": [], "knn": [], "context_mean": []}, []
    for ep in episodes:
        qe, ce = table[ep.query_idx], table[ep.context_idx]
        scores["v0"].append(model(qe, ce, ep.context_rewards))
        scores["knn"].append(knn_baseline(qe, ce, ep.context_rewards, k=knn_k))
        scores["context_mean"].append(ep.context_rewards.mean().expand(len(qe)))
        ys.append((ep.query_labels > threshold).float())
        per.append({"name": ep.name, "queries": len(ys[-1]), "context": len(ce), "positives": int(ys[-1].sum()),
                    **{f"{k}_auc": auc(v[-1], ys[-1]) for k, v in scores.items()}})
    out = {f"{k}_auc": intra_policy_auc(v, ys) for k, v in scores.items()}
    labels = torch.cat(ys) if ys else torch.zeros(0)
    out["pooled"] = {f"{k}_auc": auc(torch.cat(v), labels) if v else float("nan") for k, v in scores.items()}
    return {**out, "contexts": sum(not math.isnan(r["v0_auc"]) for r in per), "per_context": per}
