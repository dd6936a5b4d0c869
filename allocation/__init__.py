"""Pure allocation decisions: knapsack rollout budgets, V0 value model + router, curriculum length
budgets. `ALLOCATORS` maps recipe names to allocator classes (contract: plan(prompt_keys, state,
step=0) -> Allocation).

Example: ALLOCATORS.get("knapsack")(mean_samples_per_prompt=8).plan(["q1", "q2"], None)
"""
from __future__ import annotations

from algorithms.registry import Registry
from allocation.curriculum import CurriculumAllocator
from allocation.knapsack import KnapsackAllocator, UniformAllocator

ALLOCATORS: Registry = Registry("allocator")
ALLOCATORS.register("uniform")(UniformAllocator)
ALLOCATORS.register("knapsack")(KnapsackAllocator)
ALLOCATORS.register("curriculum")(CurriculumAllocator)
