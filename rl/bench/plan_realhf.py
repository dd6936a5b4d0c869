"""ReaLHF's settings in `rl bench plan`: searched plan vs the best heuristic, per-call breakdown.

For each spec in REALHF_SPECS (recipes/clusters/realhf-*.yaml, sources in their headers) the plan
is searched twice: with the spec's cost model ("with_gemm_width": narrow tensor-parallel matmul
shards reach less of the compute ceiling) and with that term off ("without_gemm_width": the
model of the earlier results). Each run reports the makespan of every plan, the gain of the
searched plan over the best heuristic, and the per-call times (generate, inference and train per
model, reallocation) of the searched plan and of the best heuristic.

Example: nice -n 19 rl bench plan --realhf-only
"""
from __future__ import annotations

import dataclasses

from rollout.realloc.cluster import load_cluster_spec
from rollout.realloc.planner import PlanModel
from rollout.realloc.search import SearchResult, plan_cluster

REALHF_SPECS = ["recipes/clusters/realhf-7b-8gpu.yaml", "recipes/clusters/realhf-13b-16gpu.yaml",
                "recipes/clusters/realhf-34b-32gpu.yaml", "recipes/clusters/realhf-70b-64gpu.yaml",
                "recipes/clusters/realhf-70bx4-128gpu.yaml", "recipes/clusters/realhf-7b-8gpu-a100.yaml"]


def breakdown(model: PlanModel, result: SearchResult) -> dict:
    """Per call: mesh size, dp/tp/pp and seconds; reallocations; makespan."""
    calls = {}
    for i, node in enumerate(model.nodes):
        c = model.cands[i][result.plan[i]]
        calls[node.name] = {"gpus": c.size, "first_gpu": c.start, "dp_tp_pp": str(c.strategy),
                            "s": round(model.seconds[i][result.plan[i]], 3)}
    ev = result.evaluation
    realloc = {k: round(v, 3) for k, v in ev.realloc_s.items() if v > 0}
    return {"makespan_s": round(ev.makespan_s, 3), "calls": calls, "realloc_s": realloc,
            "realloc_total_s": round(sum(ev.realloc_s.values()), 3)}


def plan_one(spec, seed: int, iters: int, time_budget_s: float) -> dict:
    model = PlanModel(spec)
    results = plan_cluster(model, seed=seed, iters=iters, time_budget_s=time_budget_s)
    out = {"makespan_s": {k: None if r.evaluation is None else round(r.evaluation.makespan_s, 3)
                          for k, r in results.items()}, "iters": results["mh"].iterations}
    heur = [r for k, r in results.items() if k != "mh" and r.evaluation is not None]
    mh = results["mh"]
    if mh.evaluation is None or not heur:
        return out
    best = min(heur, key=lambda r: r.evaluation.makespan_s)
    out["best_heuristic"] = best.name
    out["gain_pct"] = round(100.0 * (best.evaluation.makespan_s - mh.evaluation.makespan_s)
                            / best.evaluation.makespan_s, 2)
    out["searched"] = breakdown(model, mh)
    out["heuristic"] = breakdown(model, best)
    return out


def _print(name: str, label: str, r: dict) -> None:
    if "gain_pct" not in r:
        print(f"  {name:<22}{label:<20} no valid plan")
        return
    print(f"  {name:<22}{label:<20} searched {r['searched']['makespan_s']:8.2f} s   "
          f"{r['best_heuristic']:<10}{r['heuristic']['makespan_s']:8.2f} s   gain {r['gain_pct']:+6.1f}%")
    for plan in ("heuristic", "searched"):
        cells = "  ".join(f"{k} {v['dp_tp_pp']}@{v['gpus']} {v['s']:.1f}s" for k, v in r[plan]["calls"].items())
        print(f"      {plan:<10} {cells}  realloc {r[plan]['realloc_total_s']:.2f}s")


def realhf_section(seed: int = 0, iters: int = 20000, time_budget_s: float = 20.0) -> dict:
    """Every ReaLHF setting with and without the GEMM-width term."""
    out = {"specs": {}, "model_terms": {
        "with_gemm_width": "roofline (compute vs weight+KV bytes per decode step), tp/dp/pp communication, "
                           "reallocation bytes over links, concurrent calls on disjoint meshes, and the "
                           "compute ceiling scaled by w/(w+gemm_half_width) for local matmul width w = hidden/tp",
        "without_gemm_width": "the same with gemm_half_width = 0 (tensor parallelism costs no compute efficiency)"}}
    print("ReaLHF settings: searched plan vs best heuristic (per-call: dp/tp/pp@gpus seconds)")
    for path in REALHF_SPECS:
        spec = load_cluster_spec(path)
        off = dataclasses.replace(spec, hardware=dataclasses.replace(spec.hardware, gemm_half_width=0.0))
        entry = {"spec": path, "gemm_half_width": spec.hardware.gemm_half_width,
                 "models_b": {k: round(v.num_params / 1e9, 1) for k, v in spec.models.items()},
                 "gpus": spec.hardware.num_gpus, "workload": dataclasses.asdict(spec.workload)}
        for label, s in (("without_gemm_width", off), ("with_gemm_width", spec)):
            entry[label] = plan_one(s, seed, iters, time_budget_s)
            _print(spec.name, label, entry[label])
        out["specs"][spec.name] = entry
    return out
