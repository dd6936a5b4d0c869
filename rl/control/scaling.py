"""Scaling study over the number of parallel envs (Beukman et al. 2026, SPECS §10): the same
recipe trained at each N in `control.sweep_num_envs` with the co-scaling rule (absolute
`minibatch_samples`, so minibatches per epoch = N * num_steps // minibatch_samples; lr, epochs,
clip fixed) and the same env-step budget, then one plot of return vs env steps, one curve per N.

Writes runs/<name>/n<N>/ (a normal run each), runs/<name>/scaling.json and scaling.png.
Example: run_scaling(cfg, train_one)   # train_one(cfg) -> final metrics of one run
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Callable

from rl.config import Config
from rl.run.logging import read_metrics


def run_scaling(cfg: Config, train_one: Callable[[Config], dict]) -> dict[str, float]:
    control = cfg.control
    run_dir = pathlib.Path(cfg.run.output_dir) / cfg.run.name
    run_dir.mkdir(parents=True, exist_ok=True)
    curves: dict[int, list[tuple[float, float]]] = {}
    summary: dict[str, float] = {}
    for n in control.sweep_num_envs:
        one = dataclasses.replace(cfg, control=dataclasses.replace(control, num_envs=int(n), sweep_num_envs=[]),
                                  run=dataclasses.replace(cfg.run, output_dir=str(run_dir), name=f"n{n}"))
        final = train_one(one)
        rows = read_metrics(run_dir / f"n{n}" / "metrics.jsonl")
        curves[n] = [(r["env_steps"], r["return/mean_100"]) for r in rows
                     if isinstance(r.get("return/mean_100"), (int, float)) and "env_steps" in r]
        for key in ("return/mean_100", "eval/mean_return", "sps/end_to_end", "ppo/approx_kl",
                    "ppo/num_minibatches", "time/total_s"):
            if key in final:
                summary[f"n{n}/{key}"] = final[key]
    (run_dir / "scaling.json").write_text(json.dumps(
        {"summary": summary, "curves": {str(k): v for k, v in curves.items()}}, indent=1))
    plot_scaling(curves, run_dir / "scaling.png", control.env_id)
    return summary


def plot_scaling(curves: dict[int, list[tuple[float, float]]], png: pathlib.Path,
                 title: str) -> pathlib.Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for n, pts in sorted(curves.items()):
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=f"N = {n:,}")
    ax.set_xlabel("env steps")
    ax.set_ylabel("mean return (last 100 episodes)")
    ax.set_title(f"{title}: return vs env steps per number of envs", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png
