"""Curriculum length budgets: shrinking token budgets and the length reward.

Paper: "Train Long, Think Short: Curriculum Learning for Efficient Reasoning" (2025).
Spec: SPECS.md §6. The trainer writes the budget B(t) into the prompt (`with_length_budget`) and
caps generation at 2B; the reward mixes correctness, a length reward peaked at B and format.

Example:
    [step_exponential_budget(t) for t in (0, 150, 300, 450)]    # -> [256, 179, 125, 87]
    triangular_length_reward(torch.tensor([50, 100, 150, 250]), 100)   # -> [0.5, 1.0, 0.5, 0.0]
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from allocation.types import Allocation

LENGTH_BUDGET_TEMPLATE = "{prompt}\nThink step by step, and use exactly {budget} tokens."

_EPS = 1e-9  # products such as 100 * 0.5 must not floor to 49 through rounding error


def step_exponential_budget(step: int, b0: int = 256, gamma: float = 0.7,
                            period: int = 150) -> int:
    """B(t) = max(1, floor(B0 * gamma^floor(t / T))) (Train Long, Think Short; SPECS §6).

    Example: steps 0, 150, 300, 450 with the defaults -> 256, 179, 125, 87.
    """
    if step < 0 or period <= 0:
        raise ValueError(f"need step >= 0 and period > 0, got step={step}, period={period}")
    return max(1, math.floor(b0 * gamma ** (step // period) + _EPS))


def n_drop_budget(step: int, total_steps: int, b_start: int, b_end: int, n_drops: int) -> int:
    """Fixed start/end with n equal-ratio drops: B = B_start * d^k, d = (B_end / B_start)^(1/n).

    The run is cut into n + 1 equal stages and k = min(n, floor(t * (n + 1) / total_steps)) is
    the stage; rounded to the nearest token so the last stage is exactly B_end.
    Example: n_drop_budget(300, 600, 256, 87, 3) -> round(256 * (87/256)^(2/3)) = 125.
    """
    if n_drops < 1 or total_steps < 1 or step < 0:
        raise ValueError(f"need n_drops >= 1, total_steps >= 1, step >= 0; got {n_drops}, "
                         f"{total_steps}, {step}")
    stage = min(n_drops, step * (n_drops + 1) // total_steps)
    ratio = (b_end / b_start) ** (1.0 / n_drops)
    return max(1, round(b_start * ratio ** stage))


def linear_budget(step: int, total_steps: int, b_start: int, b_end: int) -> int:
    """B(t) = round(B_start + (B_end - B_start) * min(1, t / (total_steps - 1))).

    Reaches B_end on the last step (t = total_steps - 1) and stays there.
    Example: linear_budget(300, 601, 256, 86) -> 171.
    """
    if total_steps < 1 or step < 0:
        raise ValueError(f"need total_steps >= 1 and step >= 0, got {total_steps}, {step}")
    frac = 1.0 if total_steps == 1 else min(1.0, step / (total_steps - 1))
    return max(1, round(b_start + (b_end - b_start) * frac))


def _as_float(x: torch.Tensor | Sequence[float] | float) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float32)


def triangular_length_reward(lengths: torch.Tensor | Sequence[int],
                             budget: torch.Tensor | Sequence[int] | int,
                             r_max: float = 1.0) -> torch.Tensor:
    """R_len = R_max*l/B for l <= B; R_max*(1 - (l - B)/B) for B < l <= 2B; 0 beyond (SPECS §6).

    Shapes: lengths [N] tokens, budget scalar or [N] tokens -> [N] float32.
    Example: lengths [50, 100, 150, 250], B = 100 -> [0.5, 1.0, 0.5, 0.0].
    """
    ell, b = _as_float(lengths), _as_float(budget)
    rising = ell / b
    falling = 1.0 - (ell - b) / b
    out = torch.where(ell <= b, rising, torch.where(ell <= 2 * b, falling, torch.zeros_like(ell)))
    return r_max * out


def band_length_reward(lengths: torch.Tensor | Sequence[int],
                       budget: torch.Tensor | Sequence[int] | int,
                       r_max: float = 1.0) -> torch.Tensor:
    """Band variant: R_max for l <= B, R_max*(1 - (l - B)/B) for B < l <= 2B, 0 beyond.

    The paper finds it worse than the triangle (it does not pull short answers up to B).
    Shapes: as `triangular_length_reward`. Example: [50, 100, 150, 250], B = 100 -> [1, 1, .5, 0].
    """
    ell, b = _as_float(lengths), _as_float(budget)
    falling = 1.0 - (ell - b) / b
    out = torch.where(ell <= b, torch.ones_like(ell),
                      torch.where(ell <= 2 * b, falling, torch.zeros_like(ell)))
    return r_max * out


def curriculum_reward(correct: torch.Tensor | Sequence[float],
                      length_reward: torch.Tensor | Sequence[float],
                      format_ok: torch.Tensor | Sequence[float],
                      lambda_c: float = 0.6, lambda_l: float = 0.3,
                      lambda_f: float = 0.1) -> torch.Tensor:
    """r = lambda_c * correct + lambda_l * R_len + lambda_f * format (SPECS §6).

    Shapes: three [N] tensors (0/1 for correct and format) -> [N] float32.
    Example: curriculum_reward([1, 0], [0.5, 1.0], [1, 1]) -> [0.85, 0.4].
    """
    return (lambda_c * _as_float(correct) + lambda_l * _as_float(length_reward)
            + lambda_f * _as_float(format_ok))


def with_length_budget(prompt: str, budget_tokens: int,
                       template: str = LENGTH_BUDGET_TEMPLATE) -> str:
    """Write the budget into the prompt.

    Example: with_length_budget("2+2?", 87) ends with "87 tokens.".
    """
    return template.format(prompt=prompt, budget=int(budget_tokens))


class CurriculumAllocator:
    """Length budget B(t) for every prompt, generation capped at `max_new_tokens_factor` * B(t).

    `schedule(step) -> budget_tokens`, e.g. functools.partial(step_exponential_budget, b0=256).
    Sample counts come from `samples_allocator` (any allocator) or are uniform.
    Contract: plan(prompt_keys, state, step) -> Allocation; deterministic, no state of its own.
    Example: CurriculumAllocator(step_exponential_budget).plan(["a"], None, step=150)
             -> length_budget [179], max_new_tokens [358], samples_per_prompt [8]
    """

    def __init__(self, schedule: Callable[[int], int], samples_per_prompt: int = 8,
                 max_new_tokens_factor: int = 2, samples_allocator: object | None = None):
        self.schedule = schedule
        self.samples_per_prompt = int(samples_per_prompt)
        self.max_new_tokens_factor = int(max_new_tokens_factor)
        self.samples_allocator = samples_allocator

    def new_state(self) -> object:
        inner = self.samples_allocator
        return inner.new_state() if inner is not None else None

    def plan(self, prompt_keys: Sequence[str], state: object = None, step: int = 0) -> Allocation:
        budget_tokens = int(self.schedule(step))
        m = len(prompt_keys)
        if self.samples_allocator is not None:
            samples = self.samples_allocator.plan(prompt_keys, state, step).samples_per_prompt
        else:
            samples = [self.samples_per_prompt] * m
        return Allocation(samples_per_prompt=list(samples),
                          max_new_tokens=[self.max_new_tokens_factor * budget_tokens] * m,
                          length_budget=[budget_tokens] * m)
