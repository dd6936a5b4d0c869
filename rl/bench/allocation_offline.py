"""`rl bench allocation --offline DATA_DIR`: expected effective gradients of uniform 8 vs Knapsack-RL
and V0's U(B, p) budgets on real per-prompt success rates (the V0 records, no model, no rollouts).

DATA_DIR holds `context.jsonl` / `train.jsonl` rows {"id", "score", "model", "step"}; `score` is
the mean of +-1 rewards over 10 rollouts, so p = (score + 1) / 2 (shared/data/v0_dapomath/README.md).
For each policy (model, step) the allocators budget a batch of its prompts at the same total,
samples_per_prompt x prompts, with N_low <= N_i <= N_up, and each budget is scored in expectation:
a prompt with success rate p given N rollouts has a non-zero GRPO gradient (a mixed group) with
    P(mixed) = 1 - p^N - (1 - p)^N
    expected effective samples = sum_i N_i P(mixed_i)        (SPECS §4 effective_gradient_ratio
    expected effective prompts = sum_i P(mixed_i)             = samples / total; prompts / M)
Regimes (what the allocator sees): "true_p" the recorded p; "one_visit" the KnapsackState estimate
after one earlier visit of 8 simulated Bernoulli(p) rollouts (seeded, averaged over --draws);
"context_mean" a constant prediction, the mean p of the policy's other context rows; with
--v0-predictor, "v0" V0's prediction from the policy's context and "knn" the kNN-on-embeddings one
(rl/bench/_v0_regime.py).
Prompt sets: "context" (the policy's 512 context rows; its predictor is cross-fitted over two
seeded halves, each half predicted by the other's mean), "queries" (the policy's train.jsonl
rows, predicted by the mean of all its context rows) and, with --v0-predictor, "heldout" (the
prompts `rl value train` held out for every policy: V0 never saw them; context = the policy's
context rows of the kept prompts).

Example: rl bench allocation --offline shared/data/v0_dapomath --draws 20 --seed 0 \
             --v0-predictor runs/v0_authors/v0.pt --v0-split runs/v0_authors/v0_split
"""
from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from allocation.budgets import knapsack_budgets, v0_budgets
from allocation.knapsack import KnapsackState
from rl.bench.common import figure, write_results

Allocator = Callable[[Sequence[float], int], list[int]]
FILES = {"context": "context.jsonl", "queries": "train.jsonl"}
REGIMES = ("true_p", "one_visit", "context_mean")
LEARNED = ("v0", "knn")  # regimes of the "heldout" set only
PAPER_REFERENCE = ("Knapsack RL (Li et al., 2025): effective-gradient ratio +20-40% vs uniform during "
                   "training (SPECS.md §4)")

# ---------------------------------------------------------------------------------------------
# Pure maths


def success_rate(score: float) -> float:
    """p = (score + 1) / 2 for a mean of +-1 rewards. Example: success_rate(0.6) = 0.8."""
    return (float(score) + 1.0) / 2.0


def mixed_probability(p: Sequence[float], n: Sequence[int] | int) -> np.ndarray:
    """P(a group of N Bernoulli(p) rewards is not all equal) = 1 - p^N - (1 - p)^N, per prompt.

    Shapes: p [M], n [M] or scalar -> [M]. Example: mixed_probability([0, 0.5, 1], 8)
    -> [0, 1 - 2 * 0.5^8, 0] = [0, 0.9921875, 0].
    """
    rates = np.asarray(p, dtype=float)
    counts = np.broadcast_to(np.asarray(n, dtype=float), rates.shape)
    return 1.0 - rates ** counts - (1.0 - rates) ** counts


def expected_effective(p: Sequence[float], budgets: Sequence[int]) -> dict[str, float]:
    """Expected effective samples/prompts of `budgets` [M] on true rates `p` [M], and their shares.

    Example: expected_effective([0.5], [2]) -> samples 1.0, ratio 0.5, prompts 0.5, prompt ratio 0.5.
    """
    n = np.asarray(budgets, dtype=float)
    mixed = mixed_probability(p, n)
    samples, prompts = float((n * mixed).sum()), float(mixed.sum())
    return {"expected_effective_samples": samples, "expected_effective_gradient_ratio": samples / float(n.sum()),
            "expected_effective_prompts": prompts, "expected_effective_prompt_ratio": prompts / len(n),
            "rollouts_total": int(n.sum()), "budget_min": int(n.min()), "budget_max": int(n.max())}


def visit_estimates(p: Sequence[float], rollouts: int, rng: np.random.Generator,
                    window: int = 16, min_seen: int = 8) -> list[float | None]:
    """KnapsackState's estimate of each p after one visit of `rollouts` simulated Bernoulli(p_i) rewards.

    Shapes: p [M] -> [M] (None where fewer than `min_seen` rollouts were seen).
    Example: visit_estimates([0.0, 1.0], 8, np.random.default_rng(0)) -> [0.0, 1.0].
    """
    rewards = (rng.random((len(p), rollouts)) < np.asarray(p, dtype=float)[:, None]).astype(float)
    keys = [str(i) for i in range(len(p))]
    state = KnapsackState(window=window, min_seen=min_seen)
    state.update(keys, rewards.tolist())
    return state.estimates(keys)


def cross_fit_means(p: Sequence[float], rng: np.random.Generator) -> list[float]:
    """Constant predictor, cross-fitted: a seeded half of the prompts is predicted by the other half's mean.

    No prompt's own p enters its prediction. Shapes: [M >= 2] -> [M].
    Example: cross_fit_means([0.0, 1.0], rng) -> [1.0, 0.0].
    """
    rates = np.asarray(p, dtype=float)
    fold = np.zeros(len(rates), dtype=bool)
    fold[rng.permutation(len(rates))[: len(rates) // 2]] = True
    return np.where(fold, rates[~fold].mean(), rates[fold].mean()).tolist()


def uniform_budgets(p: Sequence[float], total_budget: int) -> list[int]:
    """total // M each (the caller keeps the total a multiple of M). Example: ([0.1, 0.9], 16) -> [8, 8]."""
    return [total_budget // len(p)] * len(p)


def allocators(n_low: int, n_up: int) -> dict[str, Allocator]:
    """The compared allocators as (p_seen [M], total_budget) -> budgets [M]: the repo's pure solvers."""
    return {"uniform": uniform_budgets,
            "knapsack": partial(knapsack_budgets, n_low=n_low, n_up=n_up),
            "v0_ubp": partial(v0_budgets, n_low=n_low, n_up=n_up)}


def compare(p_true: Sequence[float], p_seen: Sequence[float | None], total_budget: int,
            allocs: dict[str, Allocator]) -> dict[str, dict[str, float]]:
    """Each allocator budgets from `p_seen` and is scored on `p_true`; adds ratios vs uniform.

    Example: compare([0.5, 1.0], [0.5, 1.0], 8, allocators(2, 6))["knapsack"]["budget_max"] -> 6.
    """
    out = {name: expected_effective(p_true, fn(p_seen, total_budget)) for name, fn in allocs.items()}
    base = out["uniform"]
    for row in out.values():
        for key in ("expected_effective_gradient_ratio", "expected_effective_prompt_ratio"):
            row[key.replace("expected_", "gain_vs_uniform_", 1)] = (row[key] / base[key] if base[key] > 0
                                                                     else float("nan"))
    return out


def mean_rows(rows: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per allocator and key, the mean over draws; adds the std of the effective-gradient ratio.

    Example: mean_rows([{"a": {"x": 1.0}}, {"a": {"x": 3.0}}]) -> {"a": {"x": 2.0}}.
    """
    out = {}
    for name in rows[0]:
        out[name] = {k: float(np.mean([r[name][k] for r in rows])) for k in rows[0][name]}
        if "expected_effective_gradient_ratio" in rows[0][name]:
            out[name]["expected_effective_gradient_ratio_std_over_draws"] = float(
                np.std([r[name]["expected_effective_gradient_ratio"] for r in rows]))
    return out


def regimes(p_true: Sequence[float], p_context: Sequence[float], allocs: dict[str, Allocator],
            samples_per_prompt: int, draws: int, rng: np.random.Generator,
            predicted: dict[str, Sequence[float]] | None = None) -> dict[str, dict]:
    """{regime: {allocator: metrics}} for one prompt set at total samples_per_prompt x M; each
    `predicted` estimate (name -> p_hat [M]) is one more regime."""
    total = samples_per_prompt * len(p_true)
    visits = [compare(p_true, visit_estimates(p_true, 8, rng), total, allocs) for _ in range(draws)]
    out = {"true_p": compare(p_true, p_true, total, allocs), "one_visit": mean_rows(visits),
           "context_mean": compare(p_true, p_context, total, allocs)}
    for name, p_hat in (predicted or {}).items():
        out[name] = compare(p_true, p_hat, total, allocs)
    return out

# ---------------------------------------------------------------------------------------------
# Data layout and the bench


def read_policies(data_dir: str | Path) -> dict[str, dict[str, list[float]]]:
    """{"<model>@step<step>": {"context": [p...], "queries": [p...]}} from DATA_DIR's two files.

    Rows keep file order; p = (score + 1) / 2. Example: read_policies("shared/data/v0_dapomath")
    ["Qwen3-4B-Instruct@step16"]["context"][:2] -> [0.0, 0.9].
    """
    out: dict[str, dict[str, list[float]]] = {}
    for part, name in FILES.items():
        for line in (Path(data_dir) / name).read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                policy = out.setdefault(f"{row['model']}@step{row['step']}", {k: [] for k in FILES})
                policy[part].append(success_rate(row["score"]))
    return out


def run(data_dir: str | Path, draws: int = 20, seed: int = 0, samples_per_prompt: int = 8,
        n_low: int = 2, n_up: int = 64, heldout: dict[str, dict[str, list[float]]] | None = None) -> dict:
    """The results file's dict: per policy and prompt set, {regime: {allocator: metrics}}.
    `heldout`: `rl.bench._v0_regime.heldout_predictions` (policy -> p_true, v0, knn, context_mean)."""
    allocs = allocators(n_low, n_up)
    policies = {}
    for i, (policy, sets) in enumerate(read_policies(data_dir).items()):  # file order: model, step
        rng = np.random.default_rng([seed, i])
        ctx, queries = sets["context"], sets["queries"]
        entry = {"prompts": {k: len(v) for k, v in sets.items()},
                 "mean_p": {k: float(np.mean(v)) if v else None for k, v in sets.items()},
                 "context": regimes(ctx, cross_fit_means(ctx, rng), allocs, samples_per_prompt, draws, rng)}
        if queries:
            entry["queries"] = regimes(queries, [float(np.mean(ctx))] * len(queries), allocs,
                                       samples_per_prompt, draws, rng)
        if heldout and policy in heldout:
            h = heldout[policy]
            entry["prompts"]["heldout"] = len(h["p_true"])
            entry["mean_p"]["heldout"] = float(np.mean(h["p_true"]))
            entry["heldout"] = regimes(h["p_true"], h["context_mean"], allocs, samples_per_prompt, draws, rng,
                                       {k: h[k] for k in LEARNED})
        policies[policy] = entry
    return {"bench": "allocation_offline", "data_dir": Path(data_dir).name, "seed": seed,
            "draws_one_visit": draws, "samples_per_prompt_uniform": samples_per_prompt,
            "samples_per_prompt_min": n_low, "samples_per_prompt_max": n_up,
            "one_visit_rollouts": 8, "knapsack_alpha": 0.9,
            "allocators": {"uniform": "N_i = samples_per_prompt_uniform",
                           "knapsack": "allocation.budgets.knapsack_budgets (greedy + p=0/p=1 rules)",
                           "v0_ubp": "allocation.budgets.v0_budgets (greedy on U(B,p))"},
            "regimes": {"true_p": "recorded p (10 rollouts per prompt in the data)",
                        "one_visit": "KnapsackState estimate from 8 simulated Bernoulli(p) rollouts",
                        "context_mean": "context-mean predictor (a constant per policy)",
                        "v0": "heldout set: sigmoid(V0(prompt, the policy's context)), prompts unseen in training",
                        "knn": "heldout set: mean p of the 16 nearest context prompts (embeddings)"},
            "v0_prediction_included": bool(heldout),
            "true_p_note": "p is itself the 10-rollout success rate of the data, treated as the truth",
            "paper_reference": PAPER_REFERENCE, "policies": policies}


def plot(result: dict, png: Path) -> None:
    """Bars per policy, uniform and each (regime, allocator): the expected effective-gradient ratio
    (share of samples in mixed groups). Left: the context prompts (true p, one visit, context mean);
    right, when V0 ran: the held-out prompts with V0's and kNN's predictions as two more regimes."""
    import matplotlib
    sets = ["context"] + (["heldout"] if result.get("v0_prediction_included") else [])
    key = "expected_effective_gradient_ratio"
    policies = list(result["policies"])
    with figure(png, ncols=len(sets), figsize=(8 * len(sets), 4.6)) as axes:
        for ax, prompt_set in zip(np.atleast_1d(axes), sets):
            names = REGIMES + (LEARNED if prompt_set == "heldout" else ())
            bars = [("uniform", "true_p")] + [(a, r) for r in names for a in ("knapsack", "v0_ubp")]
            width = 0.8 / len(bars)
            for j, (alloc, regime) in enumerate(bars):
                ys = [result["policies"][p][prompt_set][regime][alloc][key] for p in policies]
                label = "uniform 8" if alloc == "uniform" else f"{alloc} / {regime}"
                ax.bar(np.arange(len(policies)) + (j - len(bars) / 2 + 0.5) * width, ys, width, label=label,
                       color=matplotlib.colormaps["tab20"](j % 20))
            ticks = [p.replace("@", "\n").replace("-Distill-", "-Distill-\n") for p in policies]
            ax.set_xticks(range(len(policies)), ticks, fontsize=6)
            ax.set_ylim(0, 1.2)
            ax.set_ylabel(key.replace("_", " "))
            ax.legend(fontsize=6, ncol=4, loc="upper center")
            ax.set_title(f"{result['data_dir']}: {prompt_set} prompts, same total budget, N in "
                         f"[{result['samples_per_prompt_min']}, {result['samples_per_prompt_max']}]", fontsize=9)


def report(result: dict) -> None:
    """One line per policy, prompt set and regime: the effective-gradient ratio of Knapsack / V0
    budgets and their gains vs uniform."""
    print(f"{'policy':40s} {'set':8s} {'uniform':>7s}  {'regime':13s} {'knapsack':>16s} {'v0_ubp':>16s}")
    for policy, entry in result["policies"].items():
        for prompt_set in ("context", "queries", "heldout"):
            if prompt_set not in entry:
                continue
            res = entry[prompt_set]
            uni = res["true_p"]["uniform"]["expected_effective_gradient_ratio"]
            for regime, row in res.items():
                cells = " ".join(f"{row[a]['expected_effective_gradient_ratio']:.3f} "
                                 f"({row[a]['gain_vs_uniform_effective_gradient_ratio'] - 1:+6.1%})"
                                 for a in ("knapsack", "v0_ubp"))
                print(f"{policy[:40]:40s} {prompt_set:8s} {uni:7.3f}  {regime:13s} {cells}")
    print(f"reference: {result['paper_reference']}")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rl bench allocation --offline", description=__doc__.split("\n")[0])
    p.add_argument("--offline", required=True, metavar="DATA_DIR", help="folder with context.jsonl, train.jsonl")
    p.add_argument("--draws", type=int, default=20, help="simulated earlier visits averaged in one_visit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples-per-prompt", type=int, default=8, help="uniform N; total = this x prompts")
    p.add_argument("--n-low", type=int, default=2)
    p.add_argument("--n-up", type=int, default=64)
    p.add_argument("--v0-predictor", metavar="V0.PT", help="`rl value train` output: adds the heldout set")
    p.add_argument("--v0-split", metavar="DIR", help="its validation split (default: <V0>_split/ beside it)")
    p.add_argument("--embed-cache", help="embedding cache folder, as for `rl value eval`")
    p.add_argument("--out", default="bench/results/allocation_offline.json")
    a = p.parse_args(argv)
    heldout = None
    if a.v0_predictor:
        from rl.bench._v0_regime import heldout_predictions  # torch + the embedder: only when asked
        split = a.v0_split or Path(a.v0_predictor).with_name(Path(a.v0_predictor).stem + "_split")
        heldout = heldout_predictions(a.v0_predictor, split, a.embed_cache)
    result = run(a.offline, a.draws, a.seed, a.samples_per_prompt, a.n_low, a.n_up, heldout)
    report(result)
    plot(result, write_results(a.out, result).with_suffix(".png"))
    return 0
