"""`rl route`: send each prompt to the model with the best cost-aware V0 score (SPECS §5).

Each model m is described only by a context C_m of (prompt, reward) pairs (its rollouts.jsonl or a
JSONL of {prompt, reward}) and a cost per call c_m. V0 predicts p_m(x) = P(success | x, C_m); the
router sends x to argmax_m beta * p_m(x) + (1 - beta)(1 - c_m normalised) (mode `scores`), or, as
in the paper, to argmax_m V0(x, C_m^beta) with relabelled context rewards
r^beta = beta * r + (1 - beta)(1 - c_m normalised) (mode `relabel`). Sweeping beta traces the
accuracy/cost Pareto front. Query prompts found in a model's file are held out of its context and
their outcomes there are the truth (realised accuracy); otherwise accuracy is V0's prediction.

Example:
    rl route --predictor v0.pt --contexts small/rollouts.jsonl big/rollouts.jsonl --costs 1 10 \\
        --betas 0 0.25 0.5 0.75 1 --out runs/route
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import torch

from allocation.routing import normalise_costs, pareto_table, relabel_rewards
from rl.v0.data import aggregate, read_outcomes
from rl.v0.predictor import predict_success


def load_context(path: str | Path, reward_range: tuple[float, float] = (0.0, 1.0),
                 last_steps: int | None = None) -> dict[str, float]:
    """{prompt: mean reward in [0, 1]} from a rollouts.jsonl or a {prompt, reward} JSONL.

    last_steps: keep only rows of the last N steps (the current policy); rows without a step stay.
    """
    rows = read_outcomes(path)
    if last_steps is not None:
        steps = [r["step"] for r in rows if r["step"] is not None]
        if steps:
            first = max(steps) - last_steps + 1
            rows = [r for r in rows if r["step"] is None or r["step"] >= first]
    if not rows:
        raise ValueError(f"{path}: empty context (no rows with a prompt and a reward)")
    return aggregate(rows, reward_range)


def read_queries(path: str | Path) -> list[str]:
    """Query prompts: a JSONL with a 'prompt' field per row, or a text file with one per line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--queries: {path}: no such file")
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if path.suffix in (".jsonl", ".json"):
        return [str(json.loads(ln)["prompt"]) for ln in lines]
    return lines


def _pareto_flags(rows: list[dict]) -> None:
    for row in rows:
        row["pareto"] = not any(
            o["accuracy"] >= row["accuracy"] and o["mean_cost"] <= row["mean_cost"]
            and (o["accuracy"] > row["accuracy"] or o["mean_cost"] < row["mean_cost"]) for o in rows)


def route_table(predictor_path: str, contexts: list[dict[str, float]], queries: list[str],
                costs: Sequence[float], betas: Sequence[float], mode: str = "scores",
                max_context: int = 256) -> dict:
    """Predict p [M, Q] per model from its context (queries held out of it), route per beta.

    Returns {rows: pareto_table rows (+ source), pred [M][Q], truth [M][Q] (None = unknown),
    accuracy_source: realised | predicted | mixed, single_model: [{accuracy, cost}]}.
    Example: route_table("v0.pt", [ctx_small, ctx_big], qs, [1, 10], [0, 1])["rows"][0]["model_share"]
    """
    if len(contexts) != len(costs):
        raise ValueError(f"{len(contexts)} models but {len(costs)} costs: give one cost per model")
    if mode not in ("scores", "relabel"):
        raise ValueError(f"--mode must be 'scores' or 'relabel', got {mode!r}")
    if not queries:
        raise ValueError("no query prompts to route")
    qset = set(queries)
    ctx_pairs = []
    for m, ctx in enumerate(contexts):
        pairs = [(p, r) for p, r in ctx.items() if p not in qset][:max_context]
        if not pairs:
            raise ValueError(f"model {m}: empty context once the query prompts are held out")
        ctx_pairs.append(pairs)
    pred = torch.tensor([predict_success(predictor_path, queries, pairs) for pairs in ctx_pairs])
    known = torch.tensor([[q in ctx for q in queries] for ctx in contexts])
    truth = torch.tensor([[ctx.get(q, 0.0) for q in queries] for ctx in contexts])
    truth = torch.where(known, truth, pred)                                 # [M, Q]
    source = "realised" if bool(known.all()) else "predicted" if not bool(known.any()) else "mixed"
    if mode == "scores":
        rows = pareto_table(pred, truth, costs, betas)
    else:
        norm = normalise_costs(costs)
        rows = []
        for beta in betas:
            pred_b = torch.tensor([predict_success(predictor_path, queries, list(zip(
                [p for p, _ in pairs],
                relabel_rewards(torch.tensor([r for _, r in pairs]), norm[m], beta).tolist())))
                for m, pairs in enumerate(ctx_pairs)])
            row = pareto_table(pred_b, truth, costs, [1.0])[0]
            rows.append({**row, "beta": float(beta)})
        _pareto_flags(rows)
    for row in rows:
        row["accuracy_source"] = source
    single = [{"accuracy": float(truth[m].mean()), "cost": float(costs[m])} for m in range(len(costs))]
    return {"rows": rows, "pred": pred.tolist(), "truth": [[ctx.get(q) for q in queries] for ctx in contexts],
            "accuracy_source": source, "single_model": single, "queries": queries, "mode": mode}


def plot_pareto(result: dict, names: list[str], png_path: Path) -> Path:
    """Accuracy vs mean cost per beta (Pareto rows joined) and each model alone."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter([r["mean_cost"] for r in rows], [r["accuracy"] for r in rows], c="C0", label="router")
    labels: dict[tuple, list[str]] = {}  # betas landing on the same point share one label
    for r in rows:
        labels.setdefault((r["mean_cost"], r["accuracy"]), []).append(f"{r['beta']:g}")
    for point, betas in labels.items():
        ax.annotate("β=" + ",".join(betas), point, fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = sorted((r["mean_cost"], r["accuracy"]) for r in rows if r["pareto"])
    ax.plot([f[0] for f in front], [f[1] for f in front], c="C0", alpha=0.6)
    for name, s in zip(names, result["single_model"]):
        ax.scatter([s["cost"]], [s["accuracy"]], marker="s", label=f"{name} only")
    ax.set_xlabel("mean cost per prompt")
    ax.set_ylabel(f"accuracy ({result['accuracy_source']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rl route", description="route prompts across models by V0 and cost")
    p.add_argument("--predictor", required=True, help="V0 predictor from `rl value train`")
    p.add_argument("--contexts", nargs="+", required=True, help="one rollouts.jsonl or {prompt, reward} JSONL per model")
    p.add_argument("--costs", nargs="+", type=float, required=True, help="cost per call, one per model")
    p.add_argument("--names", nargs="+", default=None, help="model names (default: m0, m1, ...)")
    p.add_argument("--betas", nargs="+", type=float, default=[0.0, 0.25, 0.5, 0.75, 0.9, 1.0])
    p.add_argument("--queries", default=None, help="prompts to route (JSONL with 'prompt', or text lines); "
                   "default: a held-out share of the prompts every context has")
    p.add_argument("--query-fraction", type=float, default=0.25)
    p.add_argument("--mode", choices=["scores", "relabel"], default="scores")
    p.add_argument("--max-context", type=int, default=256)
    p.add_argument("--last-steps", type=int, default=None, help="context = the last N steps of each run")
    p.add_argument("--reward-range", type=float, nargs=2, default=(0.0, 1.0), metavar=("LOW", "HIGH"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/route", help="folder for route.json and route.png")
    return p


def _queries(a, contexts: list[dict[str, float]]) -> list[str]:
    if a.queries:
        return read_queries(a.queries)
    common = sorted(set.intersection(*(set(c) for c in contexts)))
    if len(common) < 2:
        raise ValueError("the contexts share fewer than 2 prompts: pass --queries FILE")
    order = torch.randperm(len(common), generator=torch.Generator().manual_seed(a.seed)).tolist()
    return [common[i] for i in order[:max(1, round(a.query_fraction * len(common)))]]


def main_route(argv: list[str]) -> int:
    """`rl route --predictor v0.pt --contexts A B --costs 1 10 [--betas ...] [--queries F]`."""
    from rl.workers.models import ModelNotFoundError

    a = _parser().parse_args(argv)
    try:
        names = a.names or [f"m{i}" for i in range(len(a.contexts))]
        if len(names) != len(a.contexts) or len(a.costs) != len(a.contexts):
            raise ValueError(f"{len(a.contexts)} contexts, {len(a.costs)} costs, {len(names)} names: "
                             "give one cost (and name) per model")
        contexts = [load_context(p, tuple(a.reward_range), a.last_steps) for p in a.contexts]
        result = route_table(a.predictor, contexts, _queries(a, contexts), a.costs, a.betas,
                             a.mode, a.max_context)
    except (FileNotFoundError, ValueError, ModelNotFoundError) as e:
        print(f"rl route: error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    result["names"], result["costs"] = names, list(a.costs)
    (out / "route.json").write_text(json.dumps(result, indent=2))
    plot_pareto(result, names, out / "route.png")
    acc = f"accuracy ({result['accuracy_source']})"
    print(f"{len(result['queries'])} queries, mode {result['mode']}")
    print(f"{'beta':>5s} {acc:>22s} {'mean cost':>10s}  share per model ({', '.join(names)})  pareto")
    for r in result["rows"]:
        share = " ".join(f"{s:.2f}" for s in r["model_share"])
        print(f"{r['beta']:5.2f} {r['accuracy']:22.3f} {r['mean_cost']:10.3f}  {share:30s}  "
              f"{'*' if r['pareto'] else ''}")
    for name, s in zip(names, result["single_model"]):
        print(f"{name} only: accuracy {s['accuracy']:.3f}, cost {s['cost']:g}")
    print(f"wrote {out / 'route.json'} and {out / 'route.png'}")
    return 0
