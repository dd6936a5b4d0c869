"""`rl bench allocation`: uniform vs Knapsack-RL budgets on SmolLM2, same seeds and total rollouts.

Both runs train GRPO on the same fixed prompt set for several epochs (so knapsack's per-prompt
estimates exist from epoch 2), with the same total rollouts per step. Reported: the effective-
gradient ratio (share of samples whose group has unequal rewards) per epoch, held-out greedy
accuracy before/after, and V0 intra-policy AUC vs a kNN baseline, training V0 on the uniform run's
history and evaluating it on the knapsack run's. Writes bench/results/allocation.json and .png.
`--offline DATA_DIR` runs `rl.bench.allocation_offline` instead (expected gains on recorded rates).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rl.bench.common import (add_study_args, figure, greedy_accuracy, mean_of, plot_arm_curves, run_grpo_arm,
                             write_results)

ARMS = {"uniform": ["allocation.name=uniform"],
        "knapsack": ["allocation.name=knapsack", "allocation.min_samples_per_prompt=2", "allocation.max_samples_per_prompt=32"]}


def run_arm(name: str, extra: list[str], a, out_dir: Path) -> dict:
    steps = a.epochs * a.train_prompts // a.prompts_per_step
    run = run_grpo_arm(name, out_dir, [
        f"run.seed={a.seed}", "model.name=smollm2-135m", "task.digits=[1, 2, 3]",
        f"task.train_size={a.train_prompts}", f"task.eval_size={a.eval_prompts}", f"trainer.steps={steps}",
        f"trainer.prompts_per_step={a.prompts_per_step}", "rollout.samples_per_prompt=8",
        "rollout.max_new_tokens=16", f"trainer.lr={a.lr}",
        f"trainer.minibatch_samples={8 * a.prompts_per_step}", f"trainer.microbatch_samples={4 * a.prompts_per_step}",
        f"eval.num_prompts={a.eval_prompts}", *extra])
    rows = run.rows
    per_epoch = a.train_prompts // a.prompts_per_step
    epochs = [rows[e * per_epoch:(e + 1) * per_epoch] for e in range(a.epochs)]
    return {"steps": steps,
            "effective_gradient_ratio_by_epoch": [mean_of(rs, "effective_gradient_ratio") for rs in epochs],
            "effective_prompt_ratio_by_epoch": [mean_of(rs, "effective_prompt_ratio") for rs in epochs],
            "reward_by_epoch": [mean_of(rs, "reward/mean") for rs in epochs],
            "budget_max": max(r["budget_max"] for r in rows), "budget_min": min(r["budget_min"] for r in rows),
            "rollouts_total": 8 * a.prompts_per_step * len(rows), **run.evals,
            "curve": [r["effective_gradient_ratio"] for r in rows]}


def v0_auc(out_dir: Path, window_steps: int) -> dict:
    """V0 trained on the uniform run's history (one policy per epoch), evaluated on the knapsack run's."""
    from rl.v0.cli import main_value
    pred = out_dir / "v0.pt"
    hist = out_dir / "uniform" / "rollouts.jsonl"
    w = str(window_steps)
    rc = main_value(["train", str(hist), "--out", str(pred), "--window-steps", w, "--steps", "200",
                     "--min-prompts", "8", "--val-policies", "0.34", "--context-size", "48"])
    if rc != 0:
        return {"error": f"rl value train exited {rc}"}
    res = out_dir / "v0_eval.json"
    rc = main_value(["eval", str(out_dir / "knapsack" / "rollouts.jsonl"), "--predictor", str(pred),
                     "--window-steps", w, "--min-prompts", "8", "--context-size", "48", "--out", str(res)])
    return json.loads(res.read_text()) if rc == 0 and res.exists() else {"error": f"rl value eval exited {rc}"}


def plot(result: dict, png: Path) -> None:
    arms = result["arms"]
    with figure(png) as ax:
        plot_arm_curves(ax[0], {arm: r["curve"] for arm, r in arms.items()}, "effective-gradient ratio per step")
        for arm, r in arms.items():
            ax[1].bar([f"{arm}\nbefore", f"{arm}\nafter"],
                      [greedy_accuracy(r["eval_before"], 0), greedy_accuracy(r["eval_after"], 0)])
        ax[1].set_title("held-out greedy accuracy")


def main(argv: list[str]) -> int:
    if any(x == "--offline" or x.startswith("--offline=") for x in argv):  # no training: recorded success rates
        from rl.bench.allocation_offline import main as offline_main
        return offline_main(argv)
    p = argparse.ArgumentParser(prog="rl bench allocation", description=__doc__)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-prompts", type=int, default=64, help="fixed prompt set visited every epoch")
    p.add_argument("--prompts-per-step", type=int, default=8)
    p.add_argument("--eval-prompts", type=int, default=150)
    p.add_argument("--lr", type=float, default=2e-5)
    add_study_args(p, "allocation")
    a = p.parse_args(argv)
    out_dir, t0 = Path(a.runs_dir), time.time()
    result = {"config": vars(a), "arms": {name: run_arm(name, extra, a, out_dir) for name, extra in ARMS.items()}}
    result["v0"] = v0_auc(out_dir, a.train_prompts // a.prompts_per_step)
    u, k = result["arms"]["uniform"], result["arms"]["knapsack"]
    later = lambda r: sum(r["effective_gradient_ratio_by_epoch"][1:]) / max(1, a.epochs - 1)  # noqa: E731
    result["effective_gradient_gain_epochs_2plus"] = later(k) / later(u) - 1 if later(u) > 0 else None
    result["wall_s"] = time.time() - t0
    print(f"{'arm':10s} {'EGR by epoch':28s} {'acc before':>10s} {'acc after':>10s}")
    for arm, r in result["arms"].items():
        egr = " ".join(f"{x:.3f}" for x in r["effective_gradient_ratio_by_epoch"])
        print(f"{arm:10s} {egr:28s} {greedy_accuracy(r['eval_before']):10.3f} {greedy_accuracy(r['eval_after']):10.3f}")
    gain = result["effective_gradient_gain_epochs_2plus"]
    print(f"knapsack vs uniform effective-gradient ratio, epochs 2+: {gain:+.1%}" if gain is not None else "")
    print("V0 vs kNN:", {k2: v for k2, v in result["v0"].items() if k2 in ("v0_auc", "knn_auc", "error")})
    plot(result, write_results(a.out, result).with_suffix(".png"))
    return 0
