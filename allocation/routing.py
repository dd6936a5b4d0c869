"""Cost-aware routing across models with V0's predictions (Zhang et al., 2026; SPECS.md §5).

Each model m has a normalised cost c_m in [0, 1]; its context is relabelled
r^beta = beta * r + (1 - beta) * (1 - c_m), and a prompt goes to the model with the highest
expected relabelled reward. Sweeping beta traces accuracy against cost (`pareto_table`).

Example:
    route(torch.tensor([[0.9], [0.6]]), [1.0, 0.0], beta=0.5)   # -> [1]: the cheap model
"""
from __future__ import annotations

from typing import Sequence

import torch


def normalise_costs(costs: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """(c - min c) / (max c - min c); all zeros when every cost is equal. [1, 3] -> [0, 1]."""
    c = torch.as_tensor(costs, dtype=torch.float32)
    span = c.max() - c.min()
    return torch.zeros_like(c) if span <= 0 else (c - c.min()) / span


def relabel_rewards(rewards: torch.Tensor, cost_normalised: float | torch.Tensor,
                    beta: float) -> torch.Tensor:
    """r^beta = beta * r + (1 - beta) * (1 - cost_normalised): the router's context labels.

    Example: relabel_rewards(torch.tensor([1., 0.]), 0.5, 0.8) -> [0.9, 0.1].
    """
    return beta * rewards + (1.0 - beta) * (1.0 - torch.as_tensor(cost_normalised))


def route_scores(pred_success: torch.Tensor, costs_normalised: torch.Tensor | Sequence[float],
                 beta: float) -> torch.Tensor:
    """Expected relabelled reward beta * p + (1 - beta) * (1 - c_m) for every model and prompt.

    This equals V0 on the relabelled context C^beta when the predictor is linear in the labels;
    otherwise pass V0's own predictions on relabelled contexts with beta = 1.
    Shapes: pred_success [M, Q], costs_normalised [M] -> [M, Q].
    Example: route_scores([[0.9], [0.6]], [1.0, 0.0], 0.5) -> [[0.45], [0.8]].
    """
    p = torch.as_tensor(pred_success, dtype=torch.float32)
    c = torch.as_tensor(costs_normalised, dtype=torch.float32)
    return beta * p + (1.0 - beta) * (1.0 - c)[:, None]


def route(pred_success: torch.Tensor, costs_normalised: torch.Tensor | Sequence[float],
          beta: float) -> torch.Tensor:
    """Model index per prompt: argmax_m route_scores (ties -> the lower index). [M, Q] -> [Q]."""
    return route_scores(pred_success, costs_normalised, beta).argmax(dim=0)


def pareto_table(pred_success: torch.Tensor, true_success: torch.Tensor,
                 costs: torch.Tensor | Sequence[float], betas: Sequence[float]) -> list[dict]:
    """Accuracy and cost of routing for each beta, and which rows are Pareto-optimal.

    Shapes: pred_success, true_success [M, Q]; costs [M] (per call) or [M, Q] (per prompt).
    Row: {beta, accuracy (mean true success of the chosen models), mean_cost, model_share [M],
    pareto (no other row has accuracy >= and cost <= with one strict)}.
    Example: pareto_table(p, y, [1.0, 10.0], [0.0, 0.5, 1.0]) -> 3 rows, beta 0 = cheapest model.
    """
    truth = torch.as_tensor(true_success, dtype=torch.float32)
    cost = torch.as_tensor(costs, dtype=torch.float32)
    cost_mq = cost[:, None].expand_as(truth) if cost.dim() == 1 else cost
    norm = normalise_costs(cost_mq.mean(dim=1))
    cols = torch.arange(truth.shape[1])
    rows = []
    for beta in betas:
        chosen = route(pred_success, norm, float(beta))
        share = torch.bincount(chosen, minlength=truth.shape[0]).float() / truth.shape[1]
        rows.append({"beta": float(beta), "accuracy": float(truth[chosen, cols].mean()),
                     "mean_cost": float(cost_mq[chosen, cols].mean()),
                     "model_share": [float(x) for x in share]})
    for row in rows:
        row["pareto"] = not any(
            o["accuracy"] >= row["accuracy"] and o["mean_cost"] <= row["mean_cost"]
            and (o["accuracy"] > row["accuracy"] or o["mean_cost"] < row["mean_cost"])
            for o in rows)
    return rows
