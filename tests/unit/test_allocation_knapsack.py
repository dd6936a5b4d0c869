"""Knapsack RL budgets (SPECS §4): values by hand, greedy == DP, sums, bounds, rules, state."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allocation.budgets import (brute_force_budgets, budgets_objective, greedy_budgets, knapsack_budgets,
                                rollout_value, rollout_value_gain, rollouts_needed, solve_budgets)
from allocation.knapsack import KnapsackAllocator, KnapsackState, UniformAllocator, allocation_metrics
from allocation.types import Allocation

rate = st.floats(0.0, 1.0, allow_nan=False)


# --- Value(N, p) -------------------------------------------------------------------------------

def test_rollout_value_by_hand():
    assert rollout_value(2, 0.5) == pytest.approx(0.0625)          # (1-.25-.25) * .5 * .25
    assert rollout_value(3, 0.2) == pytest.approx(0.48 * 0.128)    # (1-.008-.512) * .2 * .64
    assert rollout_value(1, 0.3) == pytest.approx(0.0)             # one sample never varies
    assert rollout_value(10, 0.0) == 0.0 and rollout_value(10, 1.0) == 0.0
    assert rollout_value_gain(2, 0.5) == pytest.approx(0.03125)
    diff = rollout_value(3, 0.5) - rollout_value(2, 0.5)
    assert rollout_value_gain(2, 0.5) == pytest.approx(diff)


@given(st.floats(0.0, 1.0), st.integers(0, 200))
def test_value_is_concave_in_n(p, n):
    g0, g1 = rollout_value_gain(n, p), rollout_value_gain(n + 1, p)
    assert g1 <= g0 + 1e-15
    assert g0 == pytest.approx(rollout_value(n + 1, p) - rollout_value(n, p), abs=1e-12)


# --- the solver ----------------------------------------------------------------------------------

@st.composite
def small_case(draw):
    m = draw(st.integers(1, 6))
    n_low = draw(st.integers(0, 3))
    n_up = draw(st.integers(n_low, n_low + 8))
    total = draw(st.integers(m * n_low, m * n_up))
    p = draw(st.lists(rate, min_size=m, max_size=m))
    return p, total, n_low, n_up


@settings(max_examples=300, deadline=None)
@given(small_case())
def test_greedy_equals_dp_optimum(case):
    p, total, n_low, n_up = case
    greedy = solve_budgets(p, total, n_low, n_up)
    dp = brute_force_budgets(p, total, n_low, n_up)
    assert sum(greedy) == total == sum(dp)
    assert all(n_low <= n <= n_up for n in greedy + dp)
    assert budgets_objective(p, greedy) == pytest.approx(budgets_objective(p, dp), abs=1e-12)


def test_dp_is_a_real_optimiser_for_a_non_concave_value():
    # A non-concave value (only exactly 3 rollouts pay): the DP still finds the optimum [3, 3].
    def spike(n, p):
        return 1.0 if n == 3 else 0.0
    assert brute_force_budgets([0.5, 0.5], 6, 1, 5, spike) == [3, 3]
    assert brute_force_budgets([0.5, 0.5, 0.5], 7, 1, 5, spike) in ([3, 3, 1], [3, 1, 3], [1, 3, 3])
    assert greedy_budgets(lambda i, n: 0.0, 2, 6, 1, 5) == [5, 1]   # ties -> lower index


def test_solver_hand_cases():
    assert solve_budgets([0.5, 1.0], 8, 2, 6) == [6, 2]
    assert solve_budgets([0.5, 0.5, 0.5], 9, 2, 8) == [3, 3, 3]
    assert solve_budgets([0.5, 0.5], 5, 2, 8) == [3, 2]              # tie -> lower index
    assert solve_budgets([], 0) == []
    assert greedy_budgets(lambda i, n: [1.0, 0.0][i] / (n + 1), 2, 5, 1, 4) == [4, 1]


@settings(max_examples=100, deadline=None)
@given(st.lists(rate, min_size=1, max_size=64), st.integers(0, 3), st.integers(0, 40),
       st.data())
def test_sum_exact_bounds_and_determinism(p, n_low, width, data):
    n_up = n_low + width
    total = data.draw(st.integers(len(p) * n_low, len(p) * n_up))
    before = list(p)
    out = solve_budgets(p, total, n_low, n_up)
    assert sum(out) == total and all(n_low <= n <= n_up for n in out)
    assert solve_budgets(p, total, n_low, n_up) == out
    assert p == before                                              # input untouched


def test_deterministic_for_a_seed():
    p1 = np.random.default_rng(7).beta(0.6, 0.6, 256).tolist()
    p2 = np.random.default_rng(7).beta(0.6, 0.6, 256).tolist()
    assert solve_budgets(p1, 2048) == solve_budgets(p2, 2048)


def test_infeasible_or_bad_input_raises():
    with pytest.raises(ValueError, match="infeasible"):
        solve_budgets([0.5, 0.5], 3, 2, 128)
    with pytest.raises(ValueError, match="infeasible"):
        solve_budgets([0.5], 200, 2, 128)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        solve_budgets([1.5], 8)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        knapsack_budgets([float("nan")], 8)


def test_greedy_beats_uniform_on_the_bench_distribution():
    p = np.random.default_rng(0).beta(0.6, 0.6, 256).tolist()
    ours = solve_budgets(p, 2048, 2, 128)
    assert budgets_objective(p, ours) > budgets_objective(p, [8] * 256)


# --- the p = 0 / p = 1 / unseen rules -------------------------------------------------------------

def test_rollouts_needed_by_hand():
    assert rollouts_needed(0.5) == 4                        # ceil(ln .1 / ln .5) = ceil(3.32)
    assert rollouts_needed(0.9) == 22                       # ceil(21.85)
    assert rollouts_needed(0.01, n_up=1000) == 230          # ceil(229.1); the paper says 229
    assert rollouts_needed(0.01) == 128                     # capped at N_up
    assert rollouts_needed(0.5, alpha=0.5) == 2             # 1 -> raised to N_low
    with pytest.raises(ValueError):
        rollouts_needed(0.0)


def test_unseen_prompts_get_the_mean_budget():
    assert knapsack_budgets([None] * 4, 32) == [8] * 4
    assert knapsack_budgets([None] * 3, 10) == [4, 3, 3]    # remainder to the first
    assert knapsack_budgets([None, 1.0, 0.5], 24) == [8, 2, 14]
    assert knapsack_budgets([], 0) == []


def test_p_one_gets_n_low_and_p_zero_gets_the_surplus():
    assert knapsack_budgets([1.0, 0.5], 16) == [2, 14]
    # needs of the two p = .5 prompts: 4 + 4 = 8 < 22, so the solver runs on 8 and p = 0 gets 16.
    assert knapsack_budgets([0.0, 0.5, 0.5], 24) == [16, 4, 4]
    assert knapsack_budgets([0.0, 0.0, 0.5, 0.5], 25) == [9, 8, 4, 4]   # evenly, first gets +1


def test_p_zero_gets_n_low_when_needs_exceed_the_budget():
    out = knapsack_budgets([0.0, 0.5, 0.01], 12)            # needs 4 + 128 > 10
    assert out[0] == 2 and sum(out) == 12
    assert out[1:] == solve_budgets([0.5, 0.01], 10)


def test_fall_through_when_groups_saturate():
    assert knapsack_budgets([0.0, 0.5], 20, 2, 10) == [10, 10]      # p = 0 full: back to solver
    assert knapsack_budgets([1.0, 1.0], 10) == [5, 5]               # nobody else can take it
    assert knapsack_budgets([None, None, None, 0.5], 31, 2, 8) == [8, 8, 7, 8]  # spill to unseen
    assert knapsack_budgets([None, None, 1.0], 24) == [11, 11, 2]   # p = 1 stays at N_low
    assert knapsack_budgets([None, 1.0], 19, 2, 10) == [10, 9]      # unseen full: p = 1 takes it


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.just(0.0), st.just(1.0), rate), min_size=1,
                max_size=24), st.integers(0, 3), st.integers(0, 20), st.data())
def test_rules_keep_sum_and_bounds(p, n_low, width, data):
    n_up = n_low + width
    total = data.draw(st.integers(len(p) * n_low, len(p) * n_up))
    out = knapsack_budgets(p, total, n_low, n_up)
    assert sum(out) == total and all(n_low <= n <= n_up for n in out)
    assert knapsack_budgets(p, total, n_low, n_up) == out


# --- state --------------------------------------------------------------------------------

def test_state_estimates_follow_the_spec():
    s = KnapsackState()
    s.update(["q"], [[1.0, 0.0, 0.0, 0.0]])
    assert s.estimate("q") is None and s.estimate("never") is None   # < 8 seen
    s.update(["q"], [[1.0, 1.0, 1.0, 0.0]])
    assert s.estimate("q") == pytest.approx(4 / 8)                  # window over both visits
    s.update(["q"], [[1.0] * 4 + [0.0] * 12])                       # a visit of 16: its own rate
    assert s.estimate("q") == pytest.approx(0.25)


def test_state_window_is_the_last_16_across_visits():
    s = KnapsackState()
    s.update(["q"], [[1.0] * 8])
    s.update(["q"], [[0.0] * 8])
    assert s.estimate("q") == pytest.approx(0.5)
    s.update(["q"], [[1.0, 1.0, 1.0, 0.0]])                         # last 16: 4 ones, 8 zeros, 1110
    assert s.estimate("q") == pytest.approx(7 / 16)


def test_state_success_threshold_and_no_input_mutation():
    rewards = [[0.6] * 8, [0.4] * 8]
    kept = copy.deepcopy(rewards)
    s = KnapsackState()
    s.update(["a", "b"], rewards)
    assert (s.estimate("a"), s.estimate("b")) == (1.0, 0.0)
    t = KnapsackState()
    t.update(["a"], [[0.6] * 8], success_threshold=0.7)
    assert t.estimate("a") == 0.0
    assert rewards == kept
    with pytest.raises(ValueError):
        s.update(["a"], [])


def test_state_dict_round_trip_through_json():
    s = KnapsackState()
    rng = np.random.default_rng(3)
    keys = [f"q{i}" for i in range(20)]
    for _ in range(3):
        s.update(keys, [rng.integers(0, 2, size=int(rng.integers(2, 20))).tolist() for _ in keys])
    d = json.loads(json.dumps(s.state_dict()))
    r = KnapsackState()
    r.load_state_dict(d)
    assert r.estimates(keys) == s.estimates(keys)
    alloc = KnapsackAllocator(8)
    assert alloc.plan(keys, r) == alloc.plan(keys, s)
    # the dict is a copy: editing it does not change the live state
    sd = s.state_dict()
    sd["prompts"]["q0"]["seen"] = 0
    assert s.estimate("q0") == r.estimate("q0")
    # resumed state keeps evolving identically
    s.update(keys, [[1.0] * 4] * 20)
    r.update(keys, [[1.0] * 4] * 20)
    assert r.state_dict() == s.state_dict()
    with pytest.raises(ValueError, match="version"):
        r.load_state_dict({"version": 99})


# --- metrics and allocators ---------------------------------------------------------------------

def test_allocation_metrics_by_hand():
    rewards = [[1, 1, 1, 1], [0, 1, 0, 0], [0, 0], [1, 0, 1, 1, 1]]
    m = allocation_metrics(rewards, [4, 4, 2, 5])
    assert m["effective_gradient_ratio"] == pytest.approx(9 / 15)
    assert m["effective_prompt_ratio"] == pytest.approx(0.5)
    assert (m["budget_min"], m["budget_max"]) == (2, 5)
    assert (m["bucket_eq1"], m["bucket_0.8_1"], m["bucket_0.2_0.8"], m["bucket_0_0.2"],
            m["bucket_eq0"]) == (1, 1, 1, 0, 1)   # rates 1, .25, 0, .8
    m2 = allocation_metrics([[1, 0, 0, 0, 0]], [5])  # rate .2 is in (0, 0.2]
    assert m2["bucket_0_0.2"] == 1 and m2["bucket_0.2_0.8"] == 0


def test_allocators_follow_the_contract():
    keys = ["a", "b", "c"]
    uni = UniformAllocator(8).plan(keys)
    assert isinstance(uni, Allocation) and uni.samples_per_prompt == [8, 8, 8]
    alloc = KnapsackAllocator(mean_samples_per_prompt=8)
    state = alloc.new_state()
    assert alloc.plan(keys, state).samples_per_prompt == [8, 8, 8]      # epoch 1 uniform
    assert alloc.plan(keys, None).samples_per_prompt == [8, 8, 8]
    state.update(keys, [[1.0] * 8, [1.0, 0.0] * 4, [0.0] * 8])
    plan = alloc.plan(keys, state)
    assert plan.samples_per_prompt == [2, 4, 18]     # need(.5) = 4, surplus to p = 0
    assert alloc.plan(keys, state) == plan
    with pytest.raises(ValueError):
        KnapsackAllocator(mean_samples_per_prompt=1)                    # below N_low


def test_knapsack_raises_expected_informative_samples_over_uniform():
    # Expected effective-gradient ratio E[sum N_i (1 - p^N - (1-p)^N)] / budget, true p known.
    p = np.random.default_rng(1).beta(0.6, 0.6, 256)

    def informative(budgets):
        n = np.asarray(budgets, dtype=float)
        return float((n * (1 - p ** n - (1 - p) ** n)).sum() / n.sum())

    ours = knapsack_budgets(p.tolist(), 2048)
    assert informative(ours) > informative([8] * 256)
    assert math.isclose(sum(ours), 2048)


def test_unseen_prompts_can_use_predicted_p():
    alloc = KnapsackAllocator(8)
    state = KnapsackState()
    state.update(["seen"], [[1.0] * 8])
    plan = alloc.plan(["seen", "easy", "hard"], state, predicted_p=[0.5, 0.9, 0.1])
    # seen p = 1 keeps N_low; the unseen pool 8 + 8 + the 6 the p = 1 prompt frees = 22 is split
    # by U(B, p), whose gains favour the low predicted p (here all of it).
    assert alloc.plan(["seen", "easy", "hard"], state).samples_per_prompt == [2, 11, 11]
    assert plan.samples_per_prompt == [2, 2, 20]
