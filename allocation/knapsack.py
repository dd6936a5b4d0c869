"""Knapsack RL rollout budgets: how many samples each prompt of a step gets.

Paper: Li et al., "Knapsack RL: Unlocking Exploration of LLMs via Optimizing Budget Allocation"
(ByteDance Seed, 2025). Spec: SPECS.md §4.

A prompt with success rate p given N rollouts yields a non-zero GRPO gradient unless all N agree:
    Value(N, p) = (1 - p^N - (1 - p)^N) * p * (1 - p)^2          cost = N
Its increments Value(N+1, p) - Value(N, p) = p(1-p)^2 * (p^N (1-p) + (1-p)^N p) shrink with N, so
the value is concave and greedy allocation by largest marginal gain (one rollout at a time, a heap)
is exactly optimal for sum_i N_i = budget, N_low <= N_i <= N_up. `brute_force_budgets` is the
O(M * W * K) dynamic program of the reference code, kept for tests and the benchmark.

Allocator contract (DESIGN.md): `plan(prompt_keys, state, step=0) -> Allocation`. The allocators
here are stateless and deterministic; the per-prompt history is the `KnapsackState` the caller
passes in, updates after the step and saves in checkpoints (`state_dict` is JSON-able).

Example:
    state = KnapsackState(); alloc = KnapsackAllocator(mean_samples_per_prompt=8)
    plan = alloc.plan(["q1", "q2"], state)          # epoch 1: uniform, [8, 8]
    state.update(["q1", "q2"], [[1.0] * 8, [0.0, 1.0] * 4])
    alloc.plan(["q1", "q2"], state).samples_per_prompt   # -> [2, 14]
"""
from __future__ import annotations

import copy
import heapq
import math
from typing import Callable, Sequence

import numpy as np

from allocation.types import Allocation

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


def _check_budget(num_prompts: int, total_budget: int, n_low: int, n_up: int) -> None:
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
    _check_budget(num_prompts, total_budget, n_low, n_up)
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
    _check_budget(len(rates), total_budget, n_low, n_up)
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
    _check_budget(m, total_budget, n_low, n_up)
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
    _check_budget(m, total_budget, n_low, n_up)
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
# Per-prompt success history


class KnapsackState:
    """Per-prompt success history -> estimate of p (SPECS §4). Saved in checkpoints.

    estimate(key): the success rate of the previous visit if it had >= `window` (16) rollouts,
    else the mean of the last `window` rollouts across visits; None until >= `min_seen` (8)
    rollouts have been seen. A rollout succeeds when its reward >= success_threshold.
    Example: s = KnapsackState(); s.update(["q"], [[1, 0, 0, 0] * 2]); s.estimate("q") -> 0.25
    """

    def __init__(self, window: int = 16, min_seen: int = 8):
        self.window = int(window)
        self.min_seen = int(min_seen)
        # key -> {"visit": [rollouts, successes] of the last visit, "recent": last `window`
        # outcomes (0/1) across visits, "seen": rollouts ever seen}
        self._prompts: dict[str, dict] = {}

    def __len__(self) -> int:
        return len(self._prompts)

    def update(self, prompt_keys: Sequence[str], rewards_per_prompt: Sequence[Sequence[float]],
               success_threshold: float = 0.5) -> None:
        """Record one visit per prompt (a prompt listed twice counts as two visits, in order)."""
        if len(prompt_keys) != len(rewards_per_prompt):
            raise ValueError(f"{len(prompt_keys)} keys but {len(rewards_per_prompt)} reward lists")
        for key, rewards in zip(prompt_keys, rewards_per_prompt):
            outcomes = [1 if float(r) >= success_threshold else 0 for r in rewards]
            if not outcomes:
                continue
            entry = self._prompts.setdefault(str(key), {"visit": [0, 0], "recent": [], "seen": 0})
            entry["visit"] = [len(outcomes), sum(outcomes)]
            entry["recent"] = (entry["recent"] + outcomes)[-self.window:]
            entry["seen"] += len(outcomes)

    def estimate(self, key: str) -> float | None:
        entry = self._prompts.get(str(key))
        if entry is None or entry["seen"] < self.min_seen:
            return None
        visit_n, visit_s = entry["visit"]
        if visit_n >= self.window:
            return visit_s / visit_n
        return sum(entry["recent"]) / len(entry["recent"])

    def estimates(self, prompt_keys: Sequence[str]) -> list[float | None]:
        return [self.estimate(k) for k in prompt_keys]

    def state_dict(self) -> dict:
        return {"version": 1, "window": self.window, "min_seen": self.min_seen,
                "prompts": copy.deepcopy(self._prompts)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != 1:
            raise ValueError(f"unknown KnapsackState version {state.get('version')!r}")
        self.window = int(state["window"])
        self.min_seen = int(state["min_seen"])
        self._prompts = {str(k): {"visit": [int(v["visit"][0]), int(v["visit"][1])],
                                  "recent": [int(o) for o in v["recent"]],
                                  "seen": int(v["seen"])}
                         for k, v in state["prompts"].items()}


# ---------------------------------------------------------------------------------------------
# Metrics


def allocation_metrics(rewards_per_prompt: Sequence[Sequence[float]], budgets: Sequence[int],
                       success_threshold: float = 0.5) -> dict:
    """Step metrics of SPECS §4.

    effective_gradient_ratio: share of samples whose group has reward std > 0;
    effective_prompt_ratio: share of prompts whose group has reward std > 0;
    budget_min / budget_max of `budgets`; difficulty buckets over the per-prompt success rate
    (reward >= success_threshold): {=1, [0.8,1), (0.2,0.8), (0,0.2], =0} (counts of prompts).
    Example: allocation_metrics([[1, 1], [0, 1]], [2, 2])["effective_gradient_ratio"] -> 0.5
    """
    groups = [[float(r) for r in rs] for rs in rewards_per_prompt]
    informative = [len(g) > 1 and max(g) > min(g) for g in groups]
    num_samples = sum(len(g) for g in groups)
    rates = [sum(r >= success_threshold for r in g) / len(g) for g in groups if g]
    return {
        "effective_gradient_ratio":
            sum(len(g) for g, ok in zip(groups, informative) if ok) / max(1, num_samples),
        "effective_prompt_ratio": sum(informative) / max(1, len(groups)),
        "budget_min": min(budgets) if len(budgets) else 0,
        "budget_max": max(budgets) if len(budgets) else 0,
        "bucket_eq1": sum(x == 1.0 for x in rates),
        "bucket_0.8_1": sum(0.8 <= x < 1.0 for x in rates),
        "bucket_0.2_0.8": sum(0.2 < x < 0.8 for x in rates),
        "bucket_0_0.2": sum(0.0 < x <= 0.2 for x in rates),
        "bucket_eq0": sum(x == 0.0 for x in rates),
    }


# ---------------------------------------------------------------------------------------------
# Allocators (contract: plan(prompt_keys, state, step=0) -> Allocation)


class UniformAllocator:
    """Every prompt gets `samples_per_prompt` rollouts; ignores state and step.

    Example: UniformAllocator(8).plan(["a", "b"]).samples_per_prompt -> [8, 8]
    """

    def __init__(self, samples_per_prompt: int = 8):
        self.samples_per_prompt = int(samples_per_prompt)

    def new_state(self) -> None:
        return None

    def plan(self, prompt_keys: Sequence[str], state: object = None, step: int = 0) -> Allocation:
        return Allocation(samples_per_prompt=[self.samples_per_prompt] * len(prompt_keys))


class KnapsackAllocator:
    """Knapsack RL budgets from the caller's `KnapsackState`; total = mean * len(prompt_keys).

    Stateless and deterministic: the same keys and state give the same plan. state=None acts as
    an empty history (uniform). The caller calls state.update(...) after the step's rewards.
    predicted_p (optional, [M], e.g. from V0): the rollouts the unseen prompts would get
    uniformly are re-split among them by `v0_budgets` (U(B, p), SPECS §5); seen prompts and the
    total are unchanged.
    Example: KnapsackAllocator(8).plan(["a", "b"], KnapsackState()).samples_per_prompt -> [8, 8]
    """

    def __init__(self, mean_samples_per_prompt: int = 8, n_low: int = 2, n_up: int = 128,
                 alpha: float = 0.9):
        self.mean_samples_per_prompt = int(mean_samples_per_prompt)
        self.n_low, self.n_up, self.alpha = int(n_low), int(n_up), float(alpha)
        _check_budget(1, self.mean_samples_per_prompt, self.n_low, self.n_up)

    def new_state(self) -> KnapsackState:
        return KnapsackState()

    def plan(self, prompt_keys: Sequence[str], state: KnapsackState | None = None,
             step: int = 0, predicted_p: Sequence[float] | None = None) -> Allocation:
        estimates = state.estimates(prompt_keys) if state is not None else [None] * len(prompt_keys)
        total = self.mean_samples_per_prompt * len(prompt_keys)
        budgets = knapsack_budgets(estimates, total, self.n_low, self.n_up, self.alpha)
        unseen = [i for i, x in enumerate(estimates) if x is None]
        if predicted_p is not None and unseen:
            from allocation.value_model import v0_budgets  # value_model imports this module
            pool = sum(budgets[i] for i in unseen)
            split = v0_budgets([predicted_p[i] for i in unseen], pool, self.n_low, self.n_up)
            for i, n in zip(unseen, split):
                budgets[i] = n
        return Allocation(samples_per_prompt=budgets)
