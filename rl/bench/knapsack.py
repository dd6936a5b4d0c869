"""`rl bench knapsack`: our greedy knapsack solver next to the straightforward DP, same input.

256 prompts, budget 2048 (8 per prompt), N in [2, 128], p ~ Beta(0.6, 0.6) from a seeded numpy
Generator. Both solvers must reach the same objective sum_i Value(N_i, p_i); the run prints both
times and their ratio and writes bench/results/knapsack.json. Also reported (not timed against
anything): the full rule set (`knapsack_budgets`) and the expected effective-gradient ratio
E[share of samples in groups with reward std > 0] under uniform 8 vs knapsack, with p known.

Example: rl bench knapsack --seed 0 --repeats 200
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np

from allocation.budgets import brute_force_budgets, budgets_objective, knapsack_budgets, solve_budgets


def _times_ms(fn: Callable[[], object], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1e3)
    return out


def _expected_effective_gradient_ratio(p: np.ndarray, budgets: list[int]) -> float:
    """sum_i N_i (1 - p_i^N_i - (1 - p_i)^N_i) / sum_i N_i."""
    n = np.asarray(budgets, dtype=float)
    return float((n * (1.0 - p ** n - (1.0 - p) ** n)).sum() / n.sum())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rl bench knapsack", description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--budget", type=int, default=2048, help="total rollouts per step")
    parser.add_argument("--n-low", type=int, default=2)
    parser.add_argument("--cap", type=int, default=128, help="N_up, most rollouts per prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=100, help="timed runs of our solver")
    parser.add_argument("--dp-repeats", type=int, default=3, help="timed runs of the DP")
    parser.add_argument("--out", type=Path, default=Path("bench/results/knapsack.json"))
    args = parser.parse_args(argv)

    p = np.random.default_rng(args.seed).beta(0.6, 0.6, args.prompts)
    rates = p.tolist()

    def ours() -> list[int]:
        return solve_budgets(rates, args.budget, args.n_low, args.cap)

    def dp() -> list[int]:
        return brute_force_budgets(rates, args.budget, args.n_low, args.cap)

    def rules() -> list[int]:
        return knapsack_budgets(rates, args.budget, args.n_low, args.cap)

    ours()  # warm-up
    ours_ms = _times_ms(ours, args.repeats)
    dp_ms = _times_ms(dp, args.dp_repeats)
    rules_ms = _times_ms(rules, args.repeats)
    greedy_budgets, dp_budgets = ours(), dp()
    obj_greedy = budgets_objective(rates, greedy_budgets)
    obj_dp = budgets_objective(rates, dp_budgets)
    same = abs(obj_greedy - obj_dp) <= 1e-9 * max(1.0, abs(obj_dp))
    uniform = [args.budget // args.prompts] * args.prompts
    result = {
        "bench": "knapsack", "prompts": args.prompts, "budget": args.budget, "n_low": args.n_low,
        "cap": args.cap, "seed": args.seed, "p_distribution": "Beta(0.6, 0.6)",
        "ours_ms_median": statistics.median(ours_ms), "ours_ms_min": min(ours_ms),
        "ours_repeats": args.repeats,
        "dp_ms_median": statistics.median(dp_ms), "dp_ms_min": min(dp_ms),
        "dp_repeats": args.dp_repeats,
        "speedup_dp_over_ours": statistics.median(dp_ms) / statistics.median(ours_ms),
        "rules_ms_median": statistics.median(rules_ms),
        "objective_ours": obj_greedy, "objective_dp": obj_dp, "same_objective": same,
        "objective_uniform": budgets_objective(rates, uniform),
        "budget_min": min(greedy_budgets), "budget_max": max(greedy_budgets),
        "expected_effective_gradient_ratio_uniform": _expected_effective_gradient_ratio(p, uniform),
        "expected_effective_gradient_ratio_knapsack":
            _expected_effective_gradient_ratio(p, greedy_budgets),
        "python": platform.python_version(), "numpy": np.__version__,
        "machine": platform.machine(), "processor": platform.processor(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"knapsack bench: {args.prompts} prompts, budget {args.budget}, N in "
          f"[{args.n_low}, {args.cap}], p ~ Beta(0.6, 0.6), seed {args.seed}")
    print(f"  ours (greedy, heap)   {result['ours_ms_median']:9.3f} ms median "
          f"({args.repeats} runs, min {result['ours_ms_min']:.3f})")
    print(f"  DP (O(M*W*K), numpy)  {result['dp_ms_median']:9.3f} ms median "
          f"({args.dp_repeats} runs)")
    print(f"  ratio DP / ours       {result['speedup_dp_over_ours']:9.1f}x")
    print(f"  with p=0/1/unseen rules {result['rules_ms_median']:7.3f} ms median")
    print(f"  objective ours {obj_greedy:.12f}  DP {obj_dp:.12f}  uniform "
          f"{result['objective_uniform']:.12f}  same: {same}")
    print(f"  budgets min/max {result['budget_min']}/{result['budget_max']}; expected effective "
          f"gradient ratio uniform {result['expected_effective_gradient_ratio_uniform']:.3f} -> "
          f"knapsack {result['expected_effective_gradient_ratio_knapsack']:.3f}")
    print(f"  wrote {args.out}")
    if not same:
        print("ERROR: greedy and DP objectives differ")
        return 1
    return 0
