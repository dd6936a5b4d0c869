"""`rl bench scaling`: the million-env claim (Beukman et al. 2026, SPECS §10) measured against the
common convention, on CartPole-v1 and Acrobot-v1, N = 1k .. 1M parallel envs, several seeds.

Two minibatch rules, everything else equal (lr, epochs, clip, rollout length T, network, and the
same env-step budget at every N):
    co_scaling       minibatch_samples fixed (= N_min * T / minibatches), so the minibatch COUNT
                     per epoch = N * T / minibatch_samples grows with N: gradient steps per env step
                     stay constant (the paper's rule)
    minibatch_grows  the minibatch count fixed (`--minibatches`, CleanRL's 4), so minibatch_samples
                     = N * T / minibatches grows with N: gradient steps per env step fall as 1 / N
At N = N_min both rules are the same run (computed once, reported under both).
Each run evaluates its greedy policy (100 episodes) every budget / `--eval-points` env steps; the
eval time is kept out of the wall-clock axis. Curves: eval return vs env steps and vs wall time
(mean over seeds, min-max band). The verdict per env and rule compares the final eval return
across N (mean over seeds): "keeps improving" when it does not fall by more than the seeds' spread
as N grows, "stalls" otherwise.

Writes bench/results/scaling.json + .png (and one normal run dir per run under runs/bench_scaling/).
Example: rl bench scaling --seeds 0 1 2         # --quick: 2 sizes, 1 seed, small budget (tests)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import time

import numpy as np

from rl.bench.common import figure, loadavg_1min, machine_info, write_results

RULES = ("co_scaling", "minibatch_grows")
ENVS = ("CartPole-v1", "Acrobot-v1")


def minibatch_samples(rule: str, n: int, n_min: int, num_steps: int, minibatches: int) -> int:
    """The rule's absolute minibatch size at N envs.

    Example: minibatch_samples("co_scaling", 1 << 20, 1024, 2, 4) -> 512 (4096 minibatches);
             minibatch_samples("minibatch_grows", 1 << 20, 1024, 2, 4) -> 524288 (4 minibatches).
    """
    if rule == "co_scaling":
        return max(1, n_min * num_steps // minibatches)
    if rule == "minibatch_grows":
        return max(1, n * num_steps // minibatches)
    raise ValueError(f"unknown minibatch rule {rule!r}; expected one of {RULES}")


def curve(rows: list[dict]) -> list[tuple[float, float, float]]:
    """(env steps, wall s without eval time, eval mean return) at every mid-run evaluation."""
    return [(r["env_steps"], r["time/wall_s"] - r.get("time/eval_s", 0.0), r["eval/mean_return"])
            for r in rows if "eval/mean_return" in r and "env_steps" in r and "time/wall_s" in r]


def verdict(finals: dict[int, list[float]]) -> dict:
    """Final eval return per N (mean, min, max over seeds) and whether it keeps improving with N.

    "keeps improving": at every larger N the seed-mean is at least the best smaller N's mean minus
    the mean seed spread (max - min); else "stalls". Example: verdict({1: [10, 12], 2: [3, 4]})
    -> {"trend": "stalls", ...}.
    """
    ns = sorted(finals)
    means = {n: float(np.mean(finals[n])) for n in ns}
    spread = float(np.mean([np.ptp(finals[n]) for n in ns])) if ns else 0.0
    best, falls = -np.inf, []
    for n in ns:
        if means[n] < best - spread:
            falls.append(n)
        best = max(best, means[n])
    return {"final_eval_return": {str(n): {"mean": means[n], "min": float(min(finals[n])),
                                           "max": float(max(finals[n]))} for n in ns},
            "seed_spread": spread, "falls_at": falls, "trend": "stalls" if falls else "keeps improving"}


def one_run(env_id: str, rule: str, n: int, seed: int, a, out_root: pathlib.Path) -> dict:
    """Train one (env, rule, N, seed) run; its curve and final metrics."""
    from rl.config import ControlConfig
    from rl.drivers.control_ppo import train_control
    from rl.run.logging import read_metrics

    mb = minibatch_samples(rule, n, a.sizes[0], a.num_steps, a.minibatches)
    control = dataclasses.replace(
        ControlConfig(), env_id=env_id, num_envs=n, num_steps=a.num_steps, minibatch_samples=mb,
        epochs=a.epochs, lr=a.lr, anneal_lr=False,
        total_env_steps=a.env_steps, eval_episodes=100, eval_every_env_steps=a.env_steps // a.eval_points,
        progress_bar=False, torch_threads=1)
    run_dir = out_root / f"{env_id}_{rule}_n{n}_s{seed}"
    t0 = time.perf_counter()
    final = train_control(control, seed, run_dir, wandb_mode="disabled")
    rows = read_metrics(run_dir / "metrics.jsonl")
    return {"env": env_id, "rule": rule, "num_envs": n, "seed": seed, "minibatch_samples": mb,
            "minibatches_per_epoch": max(1, n * a.num_steps // mb), "updates": int(final["updates"]),
            "gradient_steps": int(final["updates"]) * a.epochs * max(1, n * a.num_steps // mb),
            "final_eval_return": final["eval/mean_return"], "wall_s": time.perf_counter() - t0,
            "eval_s": final.get("time/eval_s", 0.0), "sps_end_to_end": final.get("sps/end_to_end"),
            "curve": curve(rows)}


def plot(result: dict, png: pathlib.Path) -> None:
    """Rows: envs; columns: eval return vs env steps, vs wall time. One line per (rule, N)."""
    envs = list(result["envs"])
    with figure(png, ncols=2 * len(envs), figsize=(6.5 * len(envs) * 2, 4.4)) as axes:
        for e, env_id in enumerate(envs):
            for rule, style in zip(RULES, ("-", "--")):
                for k, n in enumerate(result["sizes"]):
                    runs = [r for r in result["runs"] if r["env"] == env_id and r["num_envs"] == n
                            and (r["rule"] == rule or n == result["sizes"][0])]
                    runs = [r for r in runs if r["curve"]]
                    if not runs:
                        continue
                    length = min(len(r["curve"]) for r in runs)
                    pts = np.array([r["curve"][:length] for r in runs])        # [seeds, points, 3]
                    ys = pts[:, :, 2]
                    for col, x in ((0, pts[:, :, 0].mean(0)), (1, pts[:, :, 1].mean(0))):
                        ax = axes[2 * e + col]
                        line, = ax.plot(x, ys.mean(0), style, marker=".", color=f"C{k}",
                                        label=f"{rule}, N = {n:,}")
                        ax.fill_between(x, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.12)
            for col, xlabel in ((0, "env steps"), (1, "wall time, s (eval excluded)")):
                ax = axes[2 * e + col]
                ax.set_xlabel(xlabel)
                ax.set_ylabel("greedy eval return (100 episodes)")
                ax.set_title(f"{env_id}: solid co-scaling, dashed minibatch grows", fontsize=9)
                ax.grid(alpha=0.3)
                ax.legend(fontsize=6)
        axes[1].set_xscale("log")
        if len(envs) > 1:
            axes[3].set_xscale("log")


def run(a) -> dict:
    out_root = pathlib.Path(a.run_dir)
    result = {"bench": "scaling", "machine": machine_info(), "load_avg_1m_start": loadavg_1min(),
              "sizes": a.sizes, "seeds": a.seeds, "env_steps_per_run": a.env_steps, "num_steps": a.num_steps,
              "epochs": a.epochs, "minibatches_at_smallest_n": a.minibatches, "eval_points": a.eval_points,
              "lr": a.lr, "rules": {
                  "co_scaling": f"minibatch_samples = {a.sizes[0]} * T / {a.minibatches} at every N",
                  "minibatch_grows": f"minibatches per epoch = {a.minibatches} at every N"},
              "paper_reference": "Beukman et al. 2026: with minibatch count co-scaled with N, PPO keeps "
                                 "improving up to 1M envs; with the minibatch growing with N it stalls",
              "envs": {}, "runs": []}
    for env_id in a.envs:
        for n in a.sizes:
            for rule in (RULES[:1] if n == a.sizes[0] else RULES):   # one run serves both rules at N_min
                for seed in a.seeds:
                    r = one_run(env_id, rule, n, seed, a, out_root)
                    result["runs"].append(r)
                    print(f"{env_id:12s} {rule:16s} N={n:>8,d} seed {seed}: eval return "
                          f"{r['final_eval_return']:8.1f}  updates {r['updates']:5d}  grad steps "
                          f"{r['gradient_steps']:6d}  {r['wall_s']:6.1f} s", flush=True)
        result["envs"][env_id] = {rule: verdict({n: [r["final_eval_return"] for r in result["runs"]
                                                     if r["env"] == env_id and r["num_envs"] == n
                                                     and (r["rule"] == rule or n == a.sizes[0])]
                                                 for n in a.sizes}) for rule in RULES}
    result["load_avg_1m_end"] = loadavg_1min()
    return result


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rl bench scaling", description=__doc__.split("\n")[0])
    p.add_argument("--envs", nargs="+", default=list(ENVS), choices=list(ENVS))
    p.add_argument("--sizes", nargs="+", type=int, default=[1024, 32768, 1048576])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--env-steps", type=int, default=8_388_608, help="env-step budget of every run")
    p.add_argument("--num-steps", type=int, default=2, help="rollout length T per env per update")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=2.5e-3, help="Adam learning rate, the same at every N and rule")
    p.add_argument("--minibatches", type=int, default=4, help="minibatches per epoch at the smallest N")
    p.add_argument("--eval-points", type=int, default=8)
    p.add_argument("--run-dir", default="runs/bench_scaling")
    p.add_argument("--quick", action="store_true", help="2 sizes, 1 seed, CartPole, 262k env steps")
    p.add_argument("--out", default="bench/results/scaling.json")
    a = p.parse_args(argv)
    if a.quick:
        a.envs, a.sizes, a.seeds, a.env_steps, a.eval_points = ["CartPole-v1"], [256, 4096], [0], 262_144, 4
    a.sizes = sorted(a.sizes)
    result = run(a)
    for env_id, rules in result["envs"].items():
        for rule, v in rules.items():
            means = ", ".join(f"{n}: {x['mean']:.1f}" for n, x in v["final_eval_return"].items())
            print(f"{env_id} {rule}: final eval return by N {{{means}}} -> {v['trend']}")
    png = write_results(a.out, result).with_suffix(".png")
    plot(result, png)
    print(f"wrote {a.out} and {png}; {json.dumps(result['machine'])}")
    return 0
