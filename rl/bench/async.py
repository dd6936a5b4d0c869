"""`rl bench async`: SmolLM2 GRPO at trainer.max_staleness_steps k = 0, 1, 2 in one run (SPECS §11).

Every arm is recipes/quickstart.yaml with the same seed, steps, prompts and samples per step and the
same rollout correction (IcePop, so only k differs); k = 0 is the synchronous loop. Per arm, the first
`--warmup-steps` steps left out: samples/s over the loop, the share of the loop each actor sat idle (learner: 1 - sum(train) / wall;
engine: 1 - sum(generate) / wall), mean and max staleness, the mismatch metrics, held-out greedy accuracy
after training. Writes bench/results/async.json and .png.

The idle-time model: from the k = 0 arm's phase times per step (generate + reward G, train T, sync +
rest S), a synchronous step costs G + T + S and a pipelined one max(G, T) + S when the engines and the
learner have their own devices, so the predicted gain on a cluster is (G + T + S) / (max(G, T) + S).
On one 2-core machine both actors share the cores: the measured ratio is what overlap gains when the
phases compete for the same compute.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from rl.bench.common import (add_study_args, figure, greedy_accuracy, loadavg_1min, mean_of, plot_arm_curves,
                             run_grpo_arm, write_results)


def predicted_speedup(generate_s: float, train_s: float, other_s: float) -> float:
    """(G + T + S) / (max(G, T) + S): the pipelined step's gain when both phases have their own devices.

    Example: predicted_speedup(6.0, 4.0, 1.0) -> 11 / 7 = 1.571
    """
    return (generate_s + train_s + other_s) / (max(generate_s, train_s) + other_s)


def summarize_arm(rows: list[dict], k: int, warmup_steps: int) -> dict:
    """An arm's figures from its metrics rows, the first `warmup_steps` steps left out of the timings."""
    timed = rows[warmup_steps:] or rows
    loop_s = sum(r["time/step_s"] for r in timed)
    gen_s = sum(r["time/generate_s"] + r["time/reward_s"] for r in timed)
    train_s = sum(r["time/train_s"] for r in timed)
    samples = sum(round(r["tokens_generated"] / max(r["response_length/mean"], 1e-9)) for r in timed)
    out = {"steps": len(rows), "timed_steps": len(timed), "samples_timed": samples, "loop_s": loop_s,
           "samples_per_s": samples / loop_s, "step_s_median": sorted(r["time/step_s"] for r in timed)[len(timed) // 2],
           "learner_idle_frac": max(0.0, 1 - train_s / loop_s), "engine_idle_frac": max(0.0, 1 - gen_s / loop_s),
           "phase_s_per_step": {"generate_and_reward": gen_s / len(timed), "train": train_s / len(timed),
                                "other": max(0.0, loop_s - gen_s - train_s) / len(timed) if k == 0 else None},
           "reward_curve": [r["reward/mean"] for r in rows]}
    for key in ("staleness/mean", "staleness/max", "staleness/dropped_samples", "mismatch/logprob_abs_diff",
                "mismatch/kl", "mismatch/is_weight_mean", "mismatch/ess_frac", "mismatch/masked_frac"):
        if all(key in r for r in rows):
            out[key] = max(r[key] for r in rows) if key == "staleness/max" else mean_of(rows, key)
    return out


def run_arm(k: int, a, out_dir: Path) -> dict:
    t0 = time.time()
    run = run_grpo_arm(f"k{k}", out_dir, [
        f"run.seed={a.seed}", f"trainer.steps={a.steps}", f"trainer.max_staleness_steps={k}",
        "algorithm.rollout_correction=icepop", f"eval.num_prompts={a.eval_prompts}", "run.progress_bar=false",
        *a.override], recipe=a.recipe)
    return {**summarize_arm(run.rows, k, a.warmup_steps), "wall_s": time.time() - t0, **run.evals}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rl bench async", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="recipes/quickstart.yaml")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--ks", type=int, nargs="+", default=[0, 1, 2], help="max_staleness_steps per arm")
    p.add_argument("--eval-prompts", type=int, default=100)
    p.add_argument("--warmup-steps", type=int, default=2, help="steps left out of the timings, every arm")
    p.add_argument("--override", nargs="*", default=[], help="extra dotted overrides for every arm")
    add_study_args(p, "async")
    a = p.parse_args(argv)
    load = loadavg_1min()
    arms = {f"k{k}": run_arm(k, a, Path(a.runs_dir)) for k in a.ks}
    return report(arms, a, load)


def report(arms: dict, a, load: float) -> int:
    """Ratios to the first arm, the idle-time model, the table, results JSON and plot."""
    base = arms[f"k{a.ks[0]}"]
    ph = base["phase_s_per_step"]
    result = {"config": vars(a), "loadavg_1min_before": load, "arms": arms,
              "measured_speedup": {name: r["samples_per_s"] / base["samples_per_s"] for name, r in arms.items()},
              "predicted_speedup_own_devices": predicted_speedup(ph["generate_and_reward"], ph["train"],
                                                                 ph["other"] or 0.0)}
    print(f"{'arm':4s} {'samples/s':>9s} {'ratio':>6s} {'learner idle':>12s} {'engine idle':>11s} "
          f"{'stale':>5s} {'acc after':>9s}")
    for name, r in arms.items():
        print(f"{name:4s} {r['samples_per_s']:9.2f} {result['measured_speedup'][name]:6.2f} "
              f"{r['learner_idle_frac']:12.2f} {r['engine_idle_frac']:11.2f} {r.get('staleness/mean', 0.0):5.2f} "
              f"{greedy_accuracy(r['eval_after']):9.3f}")
    print(f"idle-time model (k=0 phases G={ph['generate_and_reward']:.1f}s T={ph['train']:.1f}s "
          f"S={ph['other'] or 0:.1f}s): {result['predicted_speedup_own_devices']:.2f}x on separate devices")
    out = write_results(a.out, result)
    with figure(out.with_suffix(".png"), ncols=1, figsize=(6, 3.4)) as ax:
        plot_arm_curves(ax, {name: r["reward_curve"] for name, r in arms.items()}, "reward/mean per step")
    return 0
