"""`rl bench curriculum`: a shrinking length budget vs a fixed final budget on SmolLM2 (SPECS §6).

Both arms run recipes/grpo_curriculum_arith.yaml (answer-tag format; reward 0.6 correct + 0.3
triangular length + 0.1 format; "correct" is the recipe's first reward) with the same seed and
steps. `curriculum`: B(t) = B0 * gamma^floor(t/T)
(48 -> 33 -> 23 -> 16 by default); `fixed`: the final budget from step 0. Reported per budget phase:
mean response length and correctness (the recipe's first reward), and held-out greedy accuracy after.
Writes bench/results/curriculum.json and .png.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from rl.drivers.rewards import reward_names
from rl.bench.common import (add_study_args, figure, greedy_accuracy, mean_of, plot_arm_curves, run_grpo_arm,
                             write_results)


def run_arm(name: str, extra: list[str], a, out_dir: Path) -> dict:
    run = run_grpo_arm(name, out_dir, [
        f"run.seed={a.seed}", f"trainer.steps={a.steps}", f"trainer.prompts_per_step={a.prompts_per_step}",
        f"trainer.minibatch_samples={8 * a.prompts_per_step}", f"trainer.microbatch_samples={8 * a.prompts_per_step}",
        f"eval.num_prompts={a.eval_prompts}", f"allocation.budget_period_steps={a.period}",
        f"allocation.budget_start_tokens={a.b0}", *extra], recipe="recipes/grpo_curriculum_arith.yaml")
    rows, correct = run.rows, f"reward/{reward_names(run.cfg.rewards)[0]}"
    phases: dict[int, list[dict]] = {}
    for r in rows:
        phases.setdefault(int(r["length_budget_tokens"]), []).append(r)
    return {"by_budget": [{"budget_tokens": b, "steps": len(rs),
                           "response_length_mean": mean_of(rs, "response_length/mean"),
                           "correct_mean": mean_of(rs, correct)} for b, rs in phases.items()],
            "length_curve": [r["response_length/mean"] for r in rows],
            "budget_curve": [r["length_budget_tokens"] for r in rows],
            "correct_curve": [r[correct] for r in rows], "correct_metric": correct, **run.evals}


def plot(result: dict, png: Path) -> None:
    arms = result["arms"]
    with figure(png) as ax:
        for arm, r in arms.items():
            line, = ax[0].plot(r["length_curve"], label=f"{arm}: response length")
            ax[0].plot(r["budget_curve"], "--", color=line.get_color(), label=f"{arm}: budget B(t)")
        ax[0].set_xlabel("step")
        ax[0].set_ylabel("tokens")
        ax[0].legend(fontsize=7)
        plot_arm_curves(ax[1], {arm: r["correct_curve"] for arm, r in arms.items()},
                        f"correct ({next(iter(arms.values()))['correct_metric']}) per step")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rl bench curriculum", description=__doc__)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--period", type=int, default=5, help="T: steps per budget level")
    p.add_argument("--b0", type=int, default=48, help="starting budget in tokens")
    p.add_argument("--gamma", type=float, default=0.7)
    p.add_argument("--prompts-per-step", type=int, default=4)
    p.add_argument("--eval-prompts", type=int, default=100)
    add_study_args(p, "curriculum")
    a = p.parse_args(argv)
    final = max(1, int(a.b0 * a.gamma ** ((a.steps - 1) // a.period)))
    arms = {"curriculum": [f"allocation.budget_gamma={a.gamma}"],
            "fixed": ["allocation.schedule=linear", f"allocation.budget_start_tokens={final}",
                      f"allocation.budget_end_tokens={final}"]}
    out_dir, t0 = Path(a.runs_dir), time.time()
    result = {"config": vars(a), "final_budget_tokens": final,
              "arms": {name: run_arm(name, extra, a, out_dir) for name, extra in arms.items()}}
    result["wall_s"] = time.time() - t0
    print(f"{'arm':11s} {'budget':>6s} {'steps':>5s} {'resp len':>8s} {'correct':>7s}")
    for arm, r in result["arms"].items():
        for ph in r["by_budget"]:
            print(f"{arm:11s} {ph['budget_tokens']:6d} {ph['steps']:5d} {ph['response_length_mean']:8.1f} "
                  f"{ph['correct_mean']:7.3f}")
        print(f"{arm:11s} held-out greedy accuracy {greedy_accuracy(r['eval_before']):.3f}"
              f" -> {greedy_accuracy(r['eval_after']):.3f}")
    plot(result, write_results(a.out, result).with_suffix(".png"))
    return 0
