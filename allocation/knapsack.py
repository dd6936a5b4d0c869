"""Knapsack RL allocators: per-prompt success history, step metrics, and the allocators.

Paper: Li et al., "Knapsack RL: Unlocking Exploration of LLMs via Optimizing Budget Allocation"
(ByteDance Seed, 2025). Spec: SPECS.md §4. The budget solvers themselves (Value(N, p), greedy,
the DP, the p = 0 / p = 1 / unseen rules, V0's U(B, p)) live in `allocation/budgets.py`.

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
from typing import Sequence

from allocation.budgets import check_budget, knapsack_budgets, v0_budgets
from allocation.types import Allocation

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
        check_budget(1, self.mean_samples_per_prompt, self.n_low, self.n_up)

    def new_state(self) -> KnapsackState:
        return KnapsackState()

    def plan(self, prompt_keys: Sequence[str], state: KnapsackState | None = None,
             step: int = 0, predicted_p: Sequence[float] | None = None) -> Allocation:
        estimates = state.estimates(prompt_keys) if state is not None else [None] * len(prompt_keys)
        total = self.mean_samples_per_prompt * len(prompt_keys)
        budgets = knapsack_budgets(estimates, total, self.n_low, self.n_up, self.alpha)
        unseen = [i for i, x in enumerate(estimates) if x is None]
        if predicted_p is not None and unseen:
            pool = sum(budgets[i] for i in unseen)
            split = v0_budgets([predicted_p[i] for i in unseen], pool, self.n_low, self.n_up)
            for i, n in zip(unseen, split):
                budgets[i] = n
        return Allocation(samples_per_prompt=budgets)
