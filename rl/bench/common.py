"""What the benchmarks share: timing, spreads, machine info, the results file, GRPO arms, arm plots.

Not a bench itself (`rl.cli._bench_names` skips it). Example:

    times_s = time_calls(lambda: solve(), repeats=100)
    write_results("bench/results/x.json", {"ours": spread(times_s), "machine": machine_info("cpus")})
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def time_calls(fn: Callable[[], object], repeats: int, warmup: bool = False) -> list[float]:
    """Wall seconds of `repeats` calls of `fn` (perf_counter), after one untimed call if `warmup`."""
    if warmup:
        fn()
    times_s = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times_s.append(time.perf_counter() - start)
    return times_s


def spread(values: Sequence[float]) -> dict[str, float]:
    """{"median", "mean", "min", "max"} of a non-empty sequence, e.g. step times."""
    return {"median": statistics.median(values), "mean": statistics.fmean(values),
            "min": min(values), "max": max(values)}


def matmul_gflops(size: int = 1024, min_s: float = 1.0) -> float:
    """Measured fp32 GEMM rate of this machine (GFLOP/s, 2 * size^3 per call) with torch.mm on
    size x size matrices at the current torch thread count, one warm-up call excluded: the compute
    roof the MLP figures are read against."""
    import torch
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    iters, start = 0, time.perf_counter()
    while iters < 3 or time.perf_counter() - start < min_s:
        torch.mm(a, b)
        iters += 1
    return 2 * size ** 3 * iters / (time.perf_counter() - start) / 1e9


def mean_of(rows: Sequence[dict], key: str) -> float:
    """Mean of `row[key]` over metrics rows (every row must have the key)."""
    return sum(r[key] for r in rows) / len(rows)


def loadavg_1min() -> float:
    """The 1-minute load average: timings on a shared machine are read next to it."""
    return os.getloadavg()[0]


_MACHINE: dict[str, Callable[[], Any]] = {
    "cpus": os.cpu_count, "platform": platform.platform, "machine": platform.machine,
    "system": platform.system, "processor": platform.processor, "python": platform.python_version,
    "loadavg_1min": loadavg_1min}


def machine_info(*fields: str) -> dict[str, Any]:
    """The named facts about this machine (all of them when none are named), in the order asked:
    cpus, platform, machine, system, processor, python, loadavg_1min."""
    unknown = [f for f in fields if f not in _MACHINE]
    if unknown:
        raise KeyError(f"unknown machine fields {unknown}; valid: {sorted(_MACHINE)}")
    return {f: _MACHINE[f]() for f in fields or _MACHINE}


def timestamp() -> str:
    """Local time of the run, as the results files record it: '2025-01-31 12:00:00'."""
    return time.strftime("%Y-%m-%d %H:%M:%S")


def write_results(path: str | Path, payload: dict, indent: int = 2) -> Path:
    """Write `payload` as JSON (non-JSON values via str) to `path`, creating its folder."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=indent, default=str) + "\n")
    return out


def add_study_args(parser: argparse.ArgumentParser, name: str) -> None:
    """--seed, --runs-dir (runs/<name>_study) and --out (bench/results/<name>.json) of an arm study."""
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs-dir", default=f"runs/{name}_study")
    parser.add_argument("--out", default=f"bench/results/{name}.json")


@dataclass(frozen=True)
class ArmRun:
    """One GRPO run of a study arm: its config, the driver's summary and its metrics rows."""
    cfg: Any
    summary: dict
    rows: list[dict]

    @property
    def evals(self) -> dict[str, dict]:
        """The driver's held-out evals around training, as the bench results name them."""
        return {"eval_before": self.summary.get("before", {}), "eval_after": self.summary.get("after", {})}


def run_grpo_arm(name: str, out_dir: Path, overrides: Sequence[str], recipe: str | None = None) -> ArmRun:
    """Train `rl.drivers.grpo.train` in out_dir/name (no wandb, no checkpoints) from `recipe`
    (None: the defaults) plus `overrides`, and read back its metrics.jsonl."""
    from rl.config import load_config
    from rl.drivers.grpo import train
    from rl.run.logging import read_metrics
    cfg = load_config(recipe, [f"run.name={name}", f"run.output_dir={out_dir}", "run.wandb_mode=disabled",
                               "run.checkpoint_every_steps=0", *overrides])
    summary = train(cfg)
    return ArmRun(cfg, summary if isinstance(summary, dict) else {},
                  read_metrics(Path(out_dir) / name / "metrics.jsonl"))


def greedy_accuracy(evals: dict, default: float = float("nan")) -> float:
    """Held-out greedy accuracy from one of an arm's eval dicts (`eval_before` / `eval_after`)."""
    return evals.get("eval/greedy_accuracy", default)


@contextmanager
def figure(png: Path, ncols: int = 2, figsize: tuple[float, float] = (10, 3.4)) -> Iterator[Any]:
    """A 1 x ncols matplotlib figure (Agg) whose axes are yielded, saved to `png` on exit."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, ncols, figsize=figsize)
    try:
        yield ax
        fig.tight_layout()
        fig.savefig(png, dpi=90)
    finally:
        plt.close(fig)


def plot_arm_curves(ax, curves: dict[str, Sequence[float]], title: str) -> None:
    """One line per arm over steps on `ax`, labelled by arm, with a legend."""
    for arm, ys in curves.items():
        ax.plot(ys, label=arm)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.legend()
