"""V0 as an allocator (SPECS §5, Zhang et al. 2026): wraps a knapsack allocator and gives the prompts
it has no history for budgets from V0's predicted success, given the policy's recent outcomes.

The predictor is a plain callable `predict(prompt_keys, context) -> p [M]`, where `context` is the
list of (prompt_key, success in [0, 1]) pairs the policy produced most recently; the shell binds it to
a trained V0 predictor (rl/v0). The context lives in the allocator state, so it is checkpointed with it.

Example: V0Allocator(KnapsackAllocator(8), predict=lambda keys, ctx: [0.5] * len(keys))
"""
from __future__ import annotations

from typing import Callable, Sequence

from allocation.knapsack import KnapsackAllocator, KnapsackState
from allocation.types import Allocation

Predict = Callable[[Sequence[str], list[tuple[str, float]]], Sequence[float]]


class V0State:
    """The wrapped allocator's KnapsackState plus the last `context_size` (key, success) pairs."""

    def __init__(self, inner: KnapsackState, context_size: int = 256):
        self.inner, self.context_size, self.context = inner, int(context_size), []

    def update(self, prompt_keys: Sequence[str], rewards_per_prompt: Sequence[Sequence[float]],
               success_threshold: float = 0.5) -> None:
        self.inner.update(prompt_keys, rewards_per_prompt, success_threshold)
        for key, rewards in zip(prompt_keys, rewards_per_prompt):
            if len(rewards):
                self.context.append((str(key), min(1.0, max(0.0, sum(rewards) / len(rewards)))))
        del self.context[:-self.context_size]

    def state_dict(self) -> dict:
        return {"inner": self.inner.state_dict(), "context": [list(c) for c in self.context]}

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state["inner"])
        self.context = [(str(k), float(p)) for k, p in state["context"]]


class V0Allocator:
    """plan(keys, state, step): the inner knapsack plan, with V0 predictions for unseen prompts once
    the state holds any context (the first step is uniform, as without V0)."""

    def __init__(self, inner: KnapsackAllocator, predict: Predict, context_size: int = 256):
        self.inner, self.predict, self.context_size = inner, predict, int(context_size)

    def new_state(self) -> V0State:
        return V0State(self.inner.new_state(), self.context_size)

    def plan(self, prompt_keys: Sequence[str], state: V0State, step: int = 0) -> Allocation:
        p = list(self.predict(prompt_keys, list(state.context))) if state.context else None
        return self.inner.plan(prompt_keys, state.inner, step, predicted_p=p)
