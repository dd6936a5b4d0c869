"""V0: a state-zero value model that predicts P(success | prompt, context of the policy).

Paper: Zhang et al., "V0: state-zero value models" (2026). Spec: SPECS.md §5.
A policy pi is described only by a context C_pi = {(x_j, r_j)} of prompts it recently answered and
their rewards in [0, 1]; a new policy or checkpoint changes the context, never the weights. Our
offline version: a frozen embedder (any HF model; its token states pooled by
`QueryPoolingAdapter`) and `InContextValueModel`, a small attention head in which each query prompt
attends over the context prompts (keys from their embeddings, values from (embedding, reward)).
Trained across many policies with `v0_loss` (alpha * pairwise rank + (1 - alpha) * soft BCE).

Uses: pre-rollout budgets with U(B, p) (`allocation.budgets.v0_budgets`) and cost-aware routing
across models (`allocation.routing`: `relabel_rewards`, `route_scores`, `route`, `pareto_table`).

Example:
    model = InContextValueModel(embed_dim=32)
    logits = model(query_emb, context_emb, context_rewards)       # [Q]
    intra_policy_auc([logits], [labels])                           # AUC within the context
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------
# Modules


class QueryPoolingAdapter(nn.Module):
    """Learned queries cross-attend over a frozen model's token states -> one vector per prompt.

    Shapes: token_states [B, L, token_dim], mask [B, L] (True = real token; >= 1 per row)
    -> [B, out_dim]. Padding never changes the output.
    Example: QueryPoolingAdapter(576, 64)(hidden, attention_mask.bool()) -> [B, 64]
    """

    def __init__(self, token_dim: int, out_dim: int, num_queries: int = 4, num_heads: int = 4):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_queries, token_dim) * token_dim ** -0.5)
        self.attn = nn.MultiheadAttention(token_dim, num_heads, batch_first=True)
        self.out = nn.Linear(num_queries * token_dim, out_dim)

    def forward(self, token_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch = token_states.shape[0]
        queries = self.queries.unsqueeze(0).expand(batch, -1, -1)
        pooled, _ = self.attn(queries, token_states, token_states, key_padding_mask=~mask.bool(),
                              need_weights=False)
        return self.out(pooled.reshape(batch, -1))


class InContextValueModel(nn.Module):
    """P(success | query prompt, context of (prompt, reward) pairs) as a logit (SPECS §5).

    Query prompts attend (multi-head) over the context: keys from the context embeddings, values
    from (embedding, reward); a small MLP reads [query, attended context, logit of the context's
    mean reward]. Batched or not: query_emb [(B,) Q, D], context_emb [(B,) C, D],
    context_rewards [(B,) C] in [0, 1], context_mask [(B,) C] bool (True = real) -> [(B,) Q].
    Weights start from torch's global RNG like any nn.Module: seed at the edge (fork_rng).
    Example: InContextValueModel(32)(torch.randn(5, 32), torch.randn(64, 32), torch.rand(64))
    """

    def __init__(self, embed_dim: int, hidden_dim: int = 64, num_heads: int = 4):
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.embed = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, hidden_dim))
        self.query_proj = nn.Linear(hidden_dim, hidden_dim)
        self.key_proj = nn.Linear(hidden_dim, hidden_dim)
        self.value_proj = nn.Linear(hidden_dim + 1, hidden_dim)
        self.head = nn.Sequential(nn.Linear(2 * hidden_dim + 1, hidden_dim), nn.GELU(),
                                  nn.Linear(hidden_dim, 1))

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # [B, N, H] -> [B, heads, N, H/heads]
        b, n, h = x.shape
        return x.view(b, n, self.num_heads, h // self.num_heads).transpose(1, 2)

    def forward(self, query_emb: torch.Tensor, context_emb: torch.Tensor,
                context_rewards: torch.Tensor,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        unbatched = query_emb.dim() == 2
        if unbatched:
            query_emb, context_emb = query_emb.unsqueeze(0), context_emb.unsqueeze(0)
            context_rewards = context_rewards.unsqueeze(0)
            context_mask = None if context_mask is None else context_mask.unsqueeze(0)
        if context_mask is None:
            context_mask = torch.ones_like(context_rewards, dtype=torch.bool)
        rewards = context_rewards.to(query_emb.dtype)
        hq, hc = self.embed(query_emb), self.embed(context_emb)            # [B, Q|C, H]
        values = self.value_proj(torch.cat([hc, (rewards - 0.5).unsqueeze(-1)], dim=-1))
        q, k = self._split(self.query_proj(hq)), self._split(self.key_proj(hc))
        v = self._split(values)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])           # [B, heads, Q, C]
        scores = scores.masked_fill(~context_mask[:, None, None, :], float("-inf"))
        attended = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(hq.shape)
        weights = context_mask.to(rewards.dtype)
        mean_r = (rewards * weights).sum(-1) / weights.sum(-1).clamp_min(1.0)   # [B]
        prior = torch.logit(mean_r.clamp(0.02, 0.98))[:, None, None].expand(-1, hq.shape[1], 1)
        logits = self.head(torch.cat([hq, attended, prior], dim=-1)).squeeze(-1)
        return logits.squeeze(0) if unbatched else logits


# ---------------------------------------------------------------------------------------------
# Loss and metrics


def v0_loss(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.25,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """alpha * pairwise rank loss + (1 - alpha) * soft binary cross-entropy (V0, SPECS §5).

    rank = mean over pairs (i, j) of one context with y_i > y_j of softplus(-(s_i - s_j));
    bce  = mean_i -[y_i log sigma(s_i) + (1 - y_i) log(1 - sigma(s_i))], y = mean reward in [0, 1].
    Pairs never cross contexts: the last dimension is one context's queries.
    Shapes: logits, labels, mask [..., Q] -> scalar. No pair -> the rank term is 0.
    Example: v0_loss([1., -1.], [1., 0.]) = .25 * softplus(-2) + .75 * softplus(-1) = 0.26668.
    """
    logits, labels = torch.as_tensor(logits), torch.as_tensor(labels, dtype=torch.float32)
    labels = labels.to(logits.dtype)
    valid = torch.ones_like(labels, dtype=torch.bool) if mask is None else mask.bool()
    diff = logits.unsqueeze(-1) - logits.unsqueeze(-2)                     # [..., Q, Q] s_i - s_j
    pairs = labels.unsqueeze(-1) > labels.unsqueeze(-2)
    pairs = pairs & valid.unsqueeze(-1) & valid.unsqueeze(-2)
    rank = F.softplus(-diff)[pairs].mean() if pairs.any() else logits.new_zeros(())
    bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")[valid].mean()
    return alpha * rank + (1.0 - alpha) * bce


def auc(scores: torch.Tensor | Sequence[float], labels: torch.Tensor | Sequence[float]) -> float:
    """ROC AUC = P(score of a random positive > score of a random negative), ties count 1/2.

    Mann-Whitney form with average ranks; positives are labels > 0.5. NaN if one class is absent.
    Shapes: [N], [N]. Example: auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) = 0.75.
    """
    s = torch.as_tensor(scores, dtype=torch.float64).flatten()
    pos = torch.as_tensor(labels, dtype=torch.float64).flatten() > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = torch.unique(s, sorted=True, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).to(torch.float64)
    avg_rank = ends - (counts.to(torch.float64) - 1.0) / 2.0               # 1-based average rank
    rank_sum = avg_rank[inverse][pos].sum().item()
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def intra_policy_auc(scores_by_context: Sequence[torch.Tensor],
                     labels_by_context: Sequence[torch.Tensor]) -> float:
    """Mean over contexts of the AUC within each context (contexts with one class skipped).

    Example: intra_policy_auc([[0.2, 0.9], [0.5, 0.1]], [[0, 1], [1, 0]]) = 1.0.
    """
    values = [auc(s, y) for s, y in zip(scores_by_context, labels_by_context)]
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")


def knn_baseline(query_emb: torch.Tensor, context_emb: torch.Tensor,
                 context_rewards: torch.Tensor, k: int = 16) -> torch.Tensor:
    """Baseline: mean reward of the k context prompts most cosine-similar to each query.

    Shapes: query_emb [Q, D], context_emb [C, D], context_rewards [C] -> [Q] in [0, 1].
    Example: knn_baseline(q, c, r, k=1) = the reward of each query's nearest context prompt.
    """
    sim = F.normalize(query_emb, dim=-1) @ F.normalize(context_emb, dim=-1).T   # [Q, C]
    top = sim.topk(min(k, context_emb.shape[0]), dim=-1).indices
    return context_rewards.to(sim.dtype)[top].mean(dim=-1)


def v0_train_step(model: InContextValueModel, optimizer: torch.optim.Optimizer,
                  query_emb: torch.Tensor, context_emb: torch.Tensor,
                  context_rewards: torch.Tensor, query_labels: torch.Tensor,
                  alpha: float = 0.25) -> float:
    """One optimiser step of `v0_loss` on a batch of contexts [B, ...]; returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = v0_loss(model(query_emb, context_emb, context_rewards), query_labels, alpha)
    loss.backward()
    optimizer.step()
    return float(loss.detach())
