"""`rl plan CLUSTER.yaml [...]`: search an execution plan for one RLHF iteration (ReaLHF-style).

Prints the chosen plan (call, mesh, dp/tp/pp, estimated time, peak memory per device), its
estimated makespan next to the heuristic baselines (all calls colocated with the best single
strategy; generation/inference on one half and training on the other), and writes JSON keyed by
the spec's name (default bench/results/plan.json, other specs' entries are kept).
A bad spec (unknown key, missing field, wrong type) prints one line naming the key and exits 2.

`--recipe RECIPE --out plan.yaml` plans one recipe on the spec's hardware, searching only what
`rl train` executes, and writes an executable plan (rl/tools/plan_recipe.py); `--calibrate RUN_DIR`
refits the cost model on a finished run's measured per-call times (rl/tools/plan_calibrate.py).

Example: rl plan recipes/clusters/llama7b-8gpu.yaml --seed 0 --iters 20000
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rollout.realloc.cluster import ClusterSpecError, load_cluster_spec
from rollout.realloc.planner import PlanModel
from rollout.realloc.search import SearchResult, plan_cluster

EXIT_CONFIG = 2


def _mesh(start: int, size: int, gpus_per_node: int) -> str:
    node, off = divmod(start, gpus_per_node)
    if size < gpus_per_node:
        return f"node {node} gpus {off}-{off + size - 1}"
    last = node + size // gpus_per_node - 1
    return f"node {node}" if last == node else f"nodes {node}-{last}"


def plan_rows(model: PlanModel, result: SearchResult) -> list[dict]:
    rows = []
    for i, node in enumerate(model.nodes):
        c = model.cands[i][result.plan[i]]
        rows.append({"call": node.name, "model": node.model, "mesh": _mesh(c.start, c.size, model.hw.gpus_per_node),
                     "gpus": c.size, "dp": c.strategy.dp, "tp": c.strategy.tp, "pp": c.strategy.pp,
                     "est_s": round(model.seconds[i][result.plan[i]], 3),
                     "peak_gib": round(result.evaluation.peak_gib[node.name], 1)})
    return rows


def _print_table(rows: list[dict], realloc: dict) -> None:
    print(f"{'call':<14}{'mesh':<20}{'gpus':>5}  {'dp/tp/pp':<10}{'est. s':>9}{'peak GiB':>10}")
    for r in rows:
        print(f"{r['call']:<14}{r['mesh']:<20}{r['gpus']:>5}  {r['dp']}/{r['tp']}/{r['pp']:<6}"
              f"{r['est_s']:>9.2f}{r['peak_gib']:>10.1f}")
    for name, sec in realloc.items():
        if sec > 0:
            print(f"{'realloc ' + name:<39}{sec:>9.2f}")


def run_plan(path: str, seed: int, iters: int, time_budget_s: float) -> dict:
    """Plan one spec and print it; returns the JSON entry."""
    t0 = time.perf_counter()
    spec = load_cluster_spec(path)
    model = PlanModel(spec)
    results = plan_cluster(model, seed=seed, iters=iters, time_budget_s=time_budget_s)
    elapsed = time.perf_counter() - t0
    hw = spec.hardware
    print(f"== {spec.name}: {hw.nodes} x {hw.gpus_per_node} GPUs, {spec.workload.algorithm}, "
          f"models {', '.join(f'{k}={v.num_params / 1e9:.1f}B' for k, v in spec.models.items())}")
    mh = results["mh"]
    entry = {"spec": path, "seed": seed, "iters": mh.iterations, "accepted": mh.accepted,
             "search_s": round(elapsed, 2), "makespan_s": {}}
    for name, r in results.items():
        entry["makespan_s"][name] = None if r.evaluation is None else round(r.evaluation.makespan_s, 3)
    if mh.evaluation is None:
        print("no valid (in-memory) plan found")
        return entry
    rows = plan_rows(model, mh)
    _print_table(rows, mh.evaluation.realloc_s)
    entry["plan"] = rows
    entry["realloc_s"] = {k: round(v, 3) for k, v in mh.evaluation.realloc_s.items()}
    heur = {k: v for k, v in entry["makespan_s"].items() if k != "mh" and v is not None}
    print(f"estimated makespan: {mh.evaluation.makespan_s:.2f} s  (MH, seed {seed}, {mh.iterations} iters, "
          f"{elapsed:.1f} s)")
    for name, value in heur.items():
        gain = 100.0 * (value - mh.evaluation.makespan_s) / value
        print(f"  {name:<10} {value:8.2f} s   plan is {gain:+.1f}% faster")
    for name, r in results.items():
        if r.evaluation is None and name != "mh":
            print(f"  {name:<10}      OOM   (no strategy fits in memory)")
    if heur:
        best = min(heur.values())
        entry["improvement_over_best_heuristic_pct"] = round(100.0 * (best - mh.evaluation.makespan_s) / best, 2)
        print(f"improvement over the best heuristic: {entry['improvement_over_best_heuristic_pct']:+.1f}%")
    return entry


def main_plan(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rl plan", description=__doc__.split("\n")[0])
    p.add_argument("specs", nargs="*", help="cluster spec YAML(s), e.g. recipes/clusters/llama7b-8gpu.yaml")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iters", type=int, default=20000, help="Metropolis-Hastings steps")
    p.add_argument("--time-budget-s", type=float, default=20.0, help="stop the search after this long")
    p.add_argument("--out", default=None, help="JSON file, entries keyed by spec name (default "
                   "bench/results/plan.json); with --recipe: the plan YAML (default plan.yaml)")
    p.add_argument("--recipe", default=None, help="plan this recipe's workload, only what `rl train` runs; "
                   "writes an executable plan for `rl train RECIPE --plan PLAN.yaml`")
    p.add_argument("--calibrate", default=None, metavar="RUN_DIR", help="refit the cost model on a finished "
                   "run's per-call times (cluster: the run's plan, else the one spec given)")
    args = p.parse_args(argv)
    try:
        if args.calibrate:
            from rl.tools.plan_calibrate import run_calibrate
            if len(args.specs) > 1:
                p.error("--calibrate takes at most one cluster spec")
            return run_calibrate(args.calibrate, args.specs[0] if args.specs else None)
        if not args.specs:
            p.error("give a cluster spec (or --calibrate RUN_DIR)")
        if args.recipe:
            from rl.tools.plan_recipe import run_recipe_plan
            if len(args.specs) != 1:
                p.error("--recipe plans one cluster spec")
            return run_recipe_plan(args.specs[0], args.recipe, args.out or "plan.yaml", args.seed, args.iters,
                                   args.time_budget_s)
        out = "bench/results/plan.json" if args.out is None else args.out  # "": print only
        return _plan_specs(args.specs, args.seed, args.iters, args.time_budget_s, out)
    except ClusterSpecError as e:
        print(f"rl plan: cluster spec error: {e}", file=sys.stderr)
        return EXIT_CONFIG


def _plan_specs(specs: list[str], seed: int, iters: int, time_budget_s: float, out_path: str) -> int:
    entries = {}
    for path in specs:
        spec_name = load_cluster_spec(path).name
        entries[spec_name] = run_plan(path, seed, iters, time_budget_s)
    if not out_path:
        return 0
    out = Path(out_path)
    data = json.loads(out.read_text()) if out.exists() else {}
    data.setdefault("plans", {}).update(entries)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    return 0
