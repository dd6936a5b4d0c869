"""Rollout budgets as pure solvers: how many samples each prompt of a step gets.

Knapsack RL (Li et al., "Knapsack RL: Unlocking Exploration of LLMs via Optimizing Budget
Allocation", ByteDance Seed, 2025; SPECS.md §4): a prompt with success rate p given N rollouts
yields a non-zero GRPO gradient unless all N agree:
    Value(N, p) = (1 - p^N - (1 - p)^N) * p * (1 - p)^2          cost = N
Its increments Value(N+1, p) - Value(N, p) = p(1-p)^2 * (p^N (1-p) + (1-p)^N p) shrink with N, so
the value is concave and greedy allocation by largest marginal gain (one rollout at a time, a heap)
is exactly optimal for sum_i N_i = budget, N_low <= N_i <= N_up. `brute_force_budgets` is the
O(M * W * K) dynamic program of the reference code, kept for tests and the benchmark.

V0 (Zhang et al., 2026; SPECS.md §5) budgets before any rollout from a predicted p with
U(B, p) = B (1 - p) (1 - (1 - p)^(B - 1)) (`utility_budget`, `v0_budgets`).

Example:
    solve_budgets([0.5, 1.0], 8, n_low=2, n_up=6)        # -> [6, 2]
    knapsack_budgets([None, None, 1.0], 24)              # -> [11, 11, 2]
    v0_budgets([0.9, 0.1], 8, n_low=2, n_up=6)           # -> [2, 6]
"""
from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

# ---------------------------------------------------------------------------------------------
# The value and its exact solvers


def rollout_value(n: int, p: float) -> float:
    """Value(N, p) = (1 - p^N - (1 - p)^N) * p * (1 - p)^2 (Knapsack RL, SPECS §4).

    Example: rollout_value(2, 0.5) = (1 - 0.25 - 0.25) * 0.5 * 0.25 = 0.0625.
    """
    q = 1.0 - p
    return (1.0 - p ** n - q ** n) * p * q * q


def rollout_value_gain(n: int, p: float) -> float:
    """Value(N+1, p) - Value(N, p) = p(1-p)^2 * (p^N (1-p) + (1-p)^N p), non-increasing in N.

    Example: rollout_value_gain(2, 0.5) = 0.125 * (0.125 + 0.125) = 0.03125.
    """
    q = 1.0 - p
    return p * q * q * (p ** n * q + q ** n * p)


def check_budget(num_prompts: int, total_budget: int, n_low: int, n_up: int) -> None:
    """Raise ValueError unless 0 <= n_low <= n_up and num_prompts * n_low <= total <= num_prompts * n_up."""
    if n_low < 0 or n_up < n_low:
        raise ValueError(f"need 0 <= n_low <= n_up, got n_low={n_low}, n_up={n_up}")
    if not num_prompts * n_low <= total_budget <= num_prompts * n_up:
        raise ValueError(
            f"total_budget={total_budget} is infeasible for {num_prompts} prompts with "
            f"{n_low} <= N_i <= {n_up} (needs {num_prompts * n_low}..{num_prompts * n_up})")


def greedy_budgets(gain: Callable[[int, int], float], num_prompts: int, total_budget: int,
                   n_low: int = 2, n_up: int = 128) -> list[int]:
    """Greedy by marginal gain: start at N_low, give one rollout at a time to argmax_i gain(i, N_i).

    `gain(i, n)` is the gain of prompt i going from n to n + 1 rollouts. Ties go to the lower
    index (deterministic). Optimal when every gain sequence is non-increasing (concave value).
    Shapes: returns [num_prompts] ints summing to total_budget.
    Example: greedy_budgets(lambda i, n: [1.0, 0.0][i] / (n + 1), 2, 5, 1, 4) -> [4, 1].
    """
    check_budget(num_prompts, total_budget, n_low, n_up)
    budgets = [n_low] * num_prompts
    extra = total_budget - num_prompts * n_low
    heap = [(-gain(i, n_low), i) for i in range(num_prompts)] if n_up > n_low else []
    heapq.heapify(heap)
    for _ in range(extra):
        i = heap[0][1]
        budgets[i] += 1
        if budgets[i] < n_up:
            heapq.heapreplace(heap, (-gain(i, budgets[i]), i))
        else:
            heapq.heappop(heap)
    return budgets


def _check_rates(p: Sequence[float]) -> list[float]:
    rates = [float(x) for x in p]
    if any(not 0.0 <= x <= 1.0 for x in rates):  # also rejects NaN
        raise ValueError(f"success rates must lie in [0, 1], got {rates}")
    return rates


def solve_budgets(p: Sequence[float], total_budget: int, n_low: int = 2,
                  n_up: int = 128) -> list[int]:
    """argmax sum_i Value(N_i, p_i) s.t. sum_i N_i = total_budget, N_low <= N_i <= N_up (exact).

    Greedy by marginal gain with a heap (optimal: Value is concave in N). O(W log M), W the
    rollouts above N_low. Shapes: p [M] -> [M] ints. Ties go to the lower index.
    Example: solve_budgets([0.5, 1.0], 8, 2, 6) -> [6, 2].
    """
    rates = _check_rates(p)
    check_budget(len(rates), total_budget, n_low, n_up)
    # Specialised copy of greedy_budgets: the per-step cost matters for the ≤ 5 ms goal.
    budgets = [n_low] * len(rates)
    extra = total_budget - len(rates) * n_low
    scale = [x * (1.0 - x) ** 2 for x in rates]
    heap = [(-rollout_value_gain(n_low, x), i) for i, x in enumerate(rates)] if n_up > n_low else []
    heapq.heapify(heap)
    for _ in range(extra):
        i = heap[0][1]
        n = budgets[i] = budgets[i] + 1
        if n < n_up:
            x = rates[i]
            q = 1.0 - x
            heapq.heapreplace(heap, (-scale[i] * (x ** n * q + q ** n * x), i))
        else:
            heapq.heappop(heap)
    return budgets


def budgets_objective(p: Sequence[float], budgets: Sequence[int],
                      value: Callable[[int, float], float] = rollout_value) -> float:
    """sum_i value(N_i, p_i). Example: budgets_objective([0.5], [2]) = 0.0625."""
    return float(sum(value(int(n), float(x)) for n, x in zip(budgets, p)))


def brute_force_budgets(p: Sequence[float], total_budget: int, n_low: int = 2, n_up: int = 128,
                        value: Callable[[int, float], float] = rollout_value) -> list[int]:
    """The straightforward dynamic program (reference-code style), O(M * W * K).

    dp_i(w) = max_{N_low <= n <= N_up} dp_{i-1}(w - n) + value(n, p_i), vectorised over w with
    numpy; backtracking recovers the budgets. Works for any value (concave or not).
    Shapes: p [M] -> [M] ints. Example: brute_force_budgets([0.5, 1.0], 8, 2, 6) -> [6, 2].
    """
    rates = _check_rates(p)
    m = len(rates)
    check_budget(m, total_budget, n_low, n_up)
    width = total_budget - m * n_low  # rollouts above the floor
    k_max = min(n_up - n_low, width)
    best = np.full(width + 1, -np.inf)
    best[0] = 0.0
    choice = np.zeros((m, width + 1), dtype=np.int32)
    for i, x in enumerate(rates):
        gains = [value(n_low + k, x) for k in range(k_max + 1)]
        new = np.full(width + 1, -np.inf)
        for k in range(k_max + 1):
            cand = np.full(width + 1, -np.inf)
            cand[k:] = best[:width + 1 - k] + gains[k]
            better = cand > new
            new[better] = cand[better]
            choice[i][better] = k
        best = new
    budgets = [0] * m
    w = width
    for i in range(m - 1, -1, -1):
        k = int(choice[i][w])
        budgets[i] = n_low + k
        w -= k
    return budgets


# ---------------------------------------------------------------------------------------------
# The p = 0 / p = 1 / unseen rules


def rollouts_needed(p: float, alpha: float = 0.9, n_low: int = 2, n_up: int = 128) -> int:
    """need = min(N_up, ln(1 - alpha) / ln(max(p, 1 - p))), rounded up, at least N_low.

    The smallest N with P(not all N rollouts agree) ~ 1 - max(p, 1-p)^N >= alpha (SPECS §4).
    Example: rollouts_needed(0.5) = ceil(ln 0.1 / ln 0.5) = ceil(3.32) = 4;
    rollouts_needed(0.01, n_up=1000) = ceil(229.1) = 230 (the paper quotes 229, rounded down).
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"rollouts_needed is defined for 0 < p < 1, got {p}")
    # log1p keeps ln(1 - p) non-zero for tiny p; a huge or infinite need is simply N_up.
    raw = math.log(1.0 - alpha) / math.log1p(-min(p, 1.0 - p))
    return n_up if raw >= n_up else max(n_low, math.ceil(raw - 1e-9))


def _even_split(units: int, count: int) -> list[int]:
    """units spread over count slots, the first ones getting the remainder: (7, 3) -> [3, 2, 2]."""
    return [units // count + (1 if j < units % count else 0) for j in range(count)]


def _seen_budgets(rates: list[float], budget: int, n_low: int, n_up: int,
                  alpha: float) -> tuple[list[int], int]:
    """Budgets for prompts with an estimate: solver on 0 < p < 1, p = 0 gets the surplus.

    Returns (budgets, leftover): leftover is what neither group can take within N_up; the
    caller places it (unseen prompts first, p = 1 prompts last).
    """
    out = [n_low] * len(rates)
    solvable = [j for j, x in enumerate(rates) if 0.0 < x < 1.0]
    zero = [j for j, x in enumerate(rates) if x <= 0.0]
    free = budget - n_low * len(rates)
    room = n_up - n_low
    solv_extra = min(free, room * len(solvable))
    if zero and solvable:
        need = sum(rollouts_needed(rates[j], alpha, n_low, n_up) for j in solvable)
        solv_extra = min(solv_extra, need - n_low * len(solvable))
    zero_extra = min(free - solv_extra, room * len(zero))
    # What p = 0 cannot take goes back to the solver.
    solv_extra += min(free - solv_extra - zero_extra, room * len(solvable) - solv_extra)
    if solvable:
        sub = solve_budgets([rates[j] for j in solvable], n_low * len(solvable) + solv_extra,
                            n_low, n_up)
        for j, n in zip(solvable, sub):
            out[j] = n
    for j, add in zip(zero, _even_split(zero_extra, len(zero)) if zero else []):
        out[j] += add
    return out, free - solv_extra - zero_extra


def knapsack_budgets(p_estimates: Sequence[float | None], total_budget: int, n_low: int = 2,
                     n_up: int = 128, alpha: float = 0.9) -> list[int]:
    """Knapsack RL budgets with the paper's rules (SPECS §4); sum is exactly total_budget.

    - unseen (None): N_bar = total_budget // M (epoch 1 is uniform).
    - p = 1: N_low.  p = 0: N_low plus the surplus, if the solvable prompts' needs
      need_i = min(N_up, ln(1 - alpha)/ln(max(p_i, 1 - p_i))) sum below their budget: the solver
      then runs on sum need and the surplus goes evenly to the p = 0 prompts.
    - 0 < p < 1: `solve_budgets` on what the seen prompts have (total - N_bar * #unseen).
    Exactness: rollouts the seen prompts cannot use within N_up (and the remainder of
    total // M when all are unseen) go evenly to the unseen prompts; only when those are full
    too do p = 1 prompts get more than N_low.
    Shapes: [M] -> [M] ints. Example: knapsack_budgets([None, None, 1.0], 24) -> [11, 11, 2].
    """
    m = len(p_estimates)
    check_budget(m, total_budget, n_low, n_up)
    if m == 0:
        return []
    n_bar = total_budget // m
    unseen = [i for i, x in enumerate(p_estimates) if x is None]
    seen = [i for i, x in enumerate(p_estimates) if x is not None]
    rates = _check_rates([p_estimates[i] for i in seen])
    budgets = [n_bar] * m
    seen_budget = total_budget - n_bar * len(unseen)
    spill = max(0, seen_budget - n_up * len(seen))
    if seen:
        seen_out, leftover = _seen_budgets(rates, seen_budget - spill, n_low, n_up, alpha)
        for i, n in zip(seen, seen_out):
            budgets[i] = n
        spill += leftover
    to_unseen = min(spill, (n_up - n_bar) * len(unseen))
    for i, add in zip(unseen, _even_split(to_unseen, len(unseen)) if unseen else []):
        budgets[i] += add
    ones = [i for i, x in zip(seen, rates) if x >= 1.0]
    for i, add in zip(ones, _even_split(spill - to_unseen, len(ones)) if ones else []):
        budgets[i] += add
    return budgets


# ---------------------------------------------------------------------------------------------
# V0: budgets before any rollout


def utility_budget(p: float | torch.Tensor, b: int | torch.Tensor) -> float | torch.Tensor:
    """U(B, p) = B (1 - p) (1 - (1 - p)^(B - 1)) (V0 use in GRPO, SPECS §5).

    Example: utility_budget(0.5, 4) = 4 * 0.5 * (1 - 0.125) = 1.75.
    """
    q = 1.0 - p
    return b * q * (1.0 - q ** (b - 1))


def v0_budgets(p_pred: Sequence[float], total_budget: int, n_low: int = 2,
               n_up: int = 128) -> list[int]:
    """Pre-rollout budgets: greedy by marginal gain U(N+1, p_i) - U(N, p_i), exact sum, bounds.

    Note: U's gains grow towards (1 - p) as N grows (not concave), so greedy is a heuristic
    here (the paper's procedure) and it favours prompts with small predicted p; p = 0 has U = 0.
    Shapes: [M] -> [M] ints. Example: v0_budgets([0.9, 0.1], 8, 2, 6) -> [2, 6].
    """
    rates = [float(x) for x in p_pred]
    if any(not 0.0 <= x <= 1.0 for x in rates):
        raise ValueError(f"predicted success rates must lie in [0, 1], got {rates}")

    def gain(i: int, n: int) -> float:
        return utility_budget(rates[i], n + 1) - utility_budget(rates[i], n)

    return greedy_budgets(gain, len(rates), total_budget, n_low, n_up)
