"""Curriculum length budgets (SPECS §6): schedules and length rewards by hand."""
from __future__ import annotations

import functools

import pytest
import torch

from allocation.curriculum import (CurriculumAllocator, band_length_reward, curriculum_reward, linear_budget,
                                   n_drop_budget, step_exponential_budget, triangular_length_reward,
                                   with_length_budget)
from allocation.knapsack import KnapsackAllocator


def test_step_exponential_main_run():
    assert [step_exponential_budget(t) for t in (0, 150, 300, 450)] == [256, 179, 125, 87]
    assert [step_exponential_budget(t) for t in (149, 151, 599)] == [256, 179, 87]
    assert step_exponential_budget(10_000, b0=2, gamma=0.5, period=1) == 1      # floor at 1
    assert step_exponential_budget(1, b0=100, gamma=0.5, period=1) == 50       # no 49 from fp
    with pytest.raises(ValueError):
        step_exponential_budget(-1)


def test_n_drop_budget():
    # d = (87/256)^(1/3): stages of 150 steps over 600.
    got = [n_drop_budget(t, 600, 256, 87, 3) for t in (0, 149, 150, 300, 450, 599, 700)]
    assert got == [256, 256, 179, 125, 87, 87, 87]
    assert n_drop_budget(50, 100, 100, 25, 1) == 25                            # one drop: halfway
    assert n_drop_budget(49, 100, 100, 25, 1) == 100
    with pytest.raises(ValueError):
        n_drop_budget(0, 600, 256, 87, 0)


def test_linear_budget():
    assert linear_budget(0, 601, 256, 86) == 256
    assert linear_budget(300, 601, 256, 86) == 171                             # 256 - 170 / 2
    assert linear_budget(600, 601, 256, 86) == 86
    assert linear_budget(900, 601, 256, 86) == 86
    assert linear_budget(5, 11, 100, 0) == 50
    assert linear_budget(10, 11, 100, 0) == 1                                  # floor at 1


def test_triangular_length_reward_by_hand():
    got = triangular_length_reward(torch.tensor([0, 50, 100, 150, 200, 250]), 100)
    assert torch.allclose(got, torch.tensor([0.0, 0.5, 1.0, 0.5, 0.0, 0.0]))
    per_sample = triangular_length_reward([30, 30], torch.tensor([60, 20]), r_max=2.0)
    assert torch.allclose(per_sample, torch.tensor([1.0, 1.0]))                # 2*.5; 2*(1-.5)


def test_band_length_reward_by_hand():
    got = band_length_reward([0, 50, 100, 150, 200, 250], 100)
    assert torch.allclose(got, torch.tensor([1.0, 1.0, 1.0, 0.5, 0.0, 0.0]))
    assert torch.allclose(band_length_reward([125], 100, r_max=0.5), torch.tensor([0.375]))


def test_curriculum_reward_by_hand():
    got = curriculum_reward([1, 0, 1], [0.5, 1.0, 0.0], [1, 1, 0])
    assert torch.allclose(got, torch.tensor([0.85, 0.4, 0.6]))
    got = curriculum_reward([1], [1.0], [1], lambda_c=1.0, lambda_l=0.0, lambda_f=0.0)
    assert torch.allclose(got, torch.tensor([1.0]))


def test_prompt_template():
    text = with_length_budget("What is 2 + 2?", 87)
    assert text.startswith("What is 2 + 2?") and "87 tokens" in text


def test_curriculum_allocator():
    alloc = CurriculumAllocator(functools.partial(step_exponential_budget, b0=256), 4)
    plan = alloc.plan(["a", "b"], None, step=150)
    assert plan.length_budget == [179, 179] and plan.max_new_tokens == [358, 358]
    assert plan.samples_per_prompt == [4, 4]
    assert alloc.plan(["a", "b"], None, step=0).length_budget == [256, 256]
    inner = KnapsackAllocator(8)
    combo = CurriculumAllocator(step_exponential_budget, samples_allocator=inner)
    state = combo.new_state()
    state.update(["a", "b"], [[1.0] * 8, [1.0, 0.0] * 4])
    plan = combo.plan(["a", "b"], state, step=450)
    assert plan.samples_per_prompt == [2, 14] and plan.length_budget == [87, 87]
