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
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from allocation.budgets import brute_force_budgets, budgets_objective, knapsack_budgets, solve_budgets
from rl.bench.common import machine_info, spread, time_calls, write_results


def _expected_effective_gradient_ratio(p: np.ndarray, budgets: list[int]) -> float:
    """sum_i N_i (1 - p_i^N_i - (1 - p_i)^N_i) / sum_i N_i."""
    n = np.asarray(budgets, dtype=float)
    return float((n * (1.0 - p ** n - (1.0 - p) ** n)).sum() / n.sum())


def _spread_ms(fn: Callable[[], object], repeats: int, warmup: bool = False) -> dict[str, float]:
    return spread([1e3 * t for t in time_calls(fn, repeats, warmup)])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rl bench knapsack", description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--budget", type=int, default=2048, help="total rollouts per step")
    parser.add_argument("--n-low", type=int, default=2)
    parser.add_argument("--cap", type=int, default=128, help="N_up, most rollouts per prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=100, help="timed runs of our solver")
    parser.add_argument("--dp-repeats", type=int, default=3, help="timed runs of the DP")
    parser.add_argument("--out", type=Path, default=Path("bench/results/knapsack.json"))
    return parser


def run(args: argparse.Namespace) -> dict:
    """Time greedy, DP and the full rule set on one seeded input; the results file's dict."""
    p = np.random.default_rng(args.seed).beta(0.6, 0.6, args.prompts)
    rates = p.tolist()
    ours, dp, rules = (partial(fn, rates, args.budget, args.n_low, args.cap)
                       for fn in (solve_budgets, brute_force_budgets, knapsack_budgets))
    ours_ms = _spread_ms(ours, args.repeats, warmup=True)
    dp_ms = _spread_ms(dp, args.dp_repeats)
    rules_ms = _spread_ms(rules, args.repeats)
    greedy_budgets, dp_budgets = ours(), dp()
    obj_greedy = budgets_objective(rates, greedy_budgets)
    obj_dp = budgets_objective(rates, dp_budgets)
    uniform = [args.budget // args.prompts] * args.prompts
    return {
        "bench": "knapsack", "prompts": args.prompts, "budget": args.budget, "n_low": args.n_low,
        "cap": args.cap, "seed": args.seed, "p_distribution": "Beta(0.6, 0.6)",
        "ours_ms_median": ours_ms["median"], "ours_ms_min": ours_ms["min"], "ours_repeats": args.repeats,
        "dp_ms_median": dp_ms["median"], "dp_ms_min": dp_ms["min"], "dp_repeats": args.dp_repeats,
        "speedup_dp_over_ours": dp_ms["median"] / ours_ms["median"],
        "rules_ms_median": rules_ms["median"],
        "objective_ours": obj_greedy, "objective_dp": obj_dp,
        "same_objective": abs(obj_greedy - obj_dp) <= 1e-9 * max(1.0, abs(obj_dp)),
        "objective_uniform": budgets_objective(rates, uniform),
        "budget_min": min(greedy_budgets), "budget_max": max(greedy_budgets),
        "expected_effective_gradient_ratio_uniform": _expected_effective_gradient_ratio(p, uniform),
        "expected_effective_gradient_ratio_knapsack": _expected_effective_gradient_ratio(p, greedy_budgets),
        **machine_info("python"), "numpy": np.__version__, **machine_info("machine", "processor"),
    }


def report(r: dict, out: Path) -> None:
    print(f"knapsack bench: {r['prompts']} prompts, budget {r['budget']}, N in "
          f"[{r['n_low']}, {r['cap']}], p ~ Beta(0.6, 0.6), seed {r['seed']}")
    print(f"  ours (greedy, heap)   {r['ours_ms_median']:9.3f} ms median "
          f"({r['ours_repeats']} runs, min {r['ours_ms_min']:.3f})")
    print(f"  DP (O(M*W*K), numpy)  {r['dp_ms_median']:9.3f} ms median ({r['dp_repeats']} runs)")
    print(f"  ratio DP / ours       {r['speedup_dp_over_ours']:9.1f}x")
    print(f"  with p=0/1/unseen rules {r['rules_ms_median']:7.3f} ms median")
    print(f"  objective ours {r['objective_ours']:.12f}  DP {r['objective_dp']:.12f}  uniform "
          f"{r['objective_uniform']:.12f}  same: {r['same_objective']}")
    print(f"  budgets min/max {r['budget_min']}/{r['budget_max']}; expected effective "
          f"gradient ratio uniform {r['expected_effective_gradient_ratio_uniform']:.3f} -> "
          f"knapsack {r['expected_effective_gradient_ratio_knapsack']:.3f}")
    print(f"  wrote {out}")


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    result = run(args)
    report(result, write_results(args.out, result))
    if not result["same_objective"]:
        print("ERROR: greedy and DP objectives differ")
        return 1
    return 0
