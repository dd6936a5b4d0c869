"""The allocator contract: `plan(prompt_ids, state) -> Allocation`."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Allocation:
    """What each prompt of a step gets.

    samples_per_prompt[i]: rollouts for prompt i; sums exactly to the step's budget.
    max_new_tokens[i]: generation cap for prompt i (None: the recipe's default).
    length_budget[i]: target length B written into the prompt by curriculum schedules (None: none).
    turn_budget[i]: agent turn cap (None: unlimited).
    """
    samples_per_prompt: list[int]
    max_new_tokens: list[int] | None = None
    length_budget: list[int] | None = None
    turn_budget: list[int] | None = None

    def __post_init__(self) -> None:
        if any(n < 0 for n in self.samples_per_prompt):
            raise ValueError("samples_per_prompt must be non-negative")
