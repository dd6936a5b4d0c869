"""Metropolis-Hastings plan search and the heuristic baselines it is compared against.

- colocated: every call on the whole cluster with one (dp, tp, pp), the best such single
  strategy (no reallocation: DeepSpeed-Chat / OpenRLHF-colocate style).
- half/half: generation and inference on one half of the cluster, training on the other half,
  the best pair of strategies (one per half; weights reallocated between the halves).
- mh: ReaLHF's search (SPECS.md §8), started from the best heuristic: one call's candidate is
  replaced per step (half the time by a neighbour: same mesh other strategy, or same strategy on
  another mesh of that size), accepted with min(1, exp(-beta * (cost' - cost) / cost_0)); OOM
  plans cost x3; the best valid plan is kept.

Example: best = mh_search(PlanModel(spec), seed=0, iters=20000)
"""
from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from dataclasses import dataclass

from rollout.realloc.planner import Candidate, Evaluation, PlanModel


@dataclass
class SearchResult:
    name: str
    plan: list[int] | None  # candidate index per call; None when no valid plan was found
    evaluation: Evaluation | None
    iterations: int = 0
    accepted: int = 0
    seconds: float = 0.0


def _best(model: PlanModel, name: str, plans) -> SearchResult:
    best = SearchResult(name, None, None)
    for plan in plans:
        ev = model.evaluate(plan)
        if not ev.oom and (best.evaluation is None or ev.makespan_s < best.evaluation.makespan_s):
            best.plan, best.evaluation = plan, ev
        best.iterations += 1
    return best


def _shared_strategies(model: PlanModel, start: int, size: int, nodes) -> list:
    """Strategies every given call may use on mesh (start, size)."""
    sets = [{c.strategy for c in model.cands[i] if (c.start, c.size) == (start, size)} for i in nodes]
    return sorted(set.intersection(*sets), key=lambda s: (s.dp, s.tp, s.pp)) if sets else []


def colocated(model: PlanModel) -> SearchResult:
    n = model.hw.num_gpus
    idx = range(len(model.nodes))
    plans = []
    for s in _shared_strategies(model, 0, n, idx):
        plans.append(model.plan_of({node.name: Candidate(0, n, s) for node in model.nodes}))
    return _best(model, "colocated", plans)


def half_half(model: PlanModel) -> SearchResult:
    n = model.hw.num_gpus
    if n < 2:
        return SearchResult("half/half", None, None)
    half = n // 2
    gen = [i for i, node in enumerate(model.nodes) if not node.trains]
    train = [i for i, node in enumerate(model.nodes) if node.trains]
    plans = []
    for sa in _shared_strategies(model, 0, half, gen):
        for sb in _shared_strategies(model, half, half, train):
            choice = {node.name: Candidate(half, half, sb) if node.trains else Candidate(0, half, sa)
                      for node in model.nodes}
            plans.append(model.plan_of(choice))
    return _best(model, "half/half", plans)


def _neighbours(model: PlanModel) -> list[dict]:
    """Per call: candidate index -> indices sharing its mesh or its (size, strategy)."""
    out = []
    for cands in model.cands:
        by_mesh, by_strategy = defaultdict(list), defaultdict(list)
        for j, c in enumerate(cands):
            by_mesh[(c.start, c.size)].append(j)
            by_strategy[(c.size, c.strategy)].append(j)
        out.append({j: by_mesh[(c.start, c.size)] + by_strategy[(c.size, c.strategy)]
                    for j, c in enumerate(cands)})
    return out


def mh_search(model: PlanModel, seed: int = 0, iters: int = 20000, beta: float = 30.0,
              time_budget_s: float | None = None, start: list[int] | None = None) -> SearchResult:
    """Metropolis-Hastings over per-call candidate indices; deterministic for (seed, iters)."""
    rng = random.Random(seed)
    t0 = time.perf_counter()
    cur = list(start) if start is not None else [rng.randrange(len(c)) for c in model.cands]
    cur_cost, ev = model.cost(cur)
    cost0 = cur_cost
    result = SearchResult("mh", None if ev.oom else list(cur), None if ev.oom else ev)
    near = _neighbours(model)
    it = 0
    for it in range(1, iters + 1):
        if time_budget_s is not None and it % 256 == 0 and time.perf_counter() - t0 > time_budget_s:
            break
        i = rng.randrange(len(model.nodes))
        j = rng.choice(near[i][cur[i]]) if rng.random() < 0.5 else rng.randrange(len(model.cands[i]))
        if j == cur[i]:
            continue
        new = list(cur)
        new[i] = j
        new_cost, new_ev = model.cost(new)
        if new_cost <= cur_cost or rng.random() < math.exp(-beta * (new_cost - cur_cost) / cost0):
            cur, cur_cost = new, new_cost
            result.accepted += 1
            if not new_ev.oom and (result.evaluation is None
                                   or new_ev.makespan_s < result.evaluation.makespan_s):
                result.plan, result.evaluation = list(new), new_ev
    result.iterations = it
    result.seconds = time.perf_counter() - t0
    return result


def plan_cluster(model: PlanModel, seed: int = 0, iters: int = 20000,
                 time_budget_s: float | None = None) -> dict[str, SearchResult]:
    """Both heuristics, then MH started from the better of them (or a random plan)."""
    heuristics = [colocated(model), half_half(model)]
    valid = [h for h in heuristics if h.evaluation is not None]
    start = min(valid, key=lambda h: h.evaluation.makespan_s).plan if valid else None
    mh = mh_search(model, seed=seed, iters=iters, time_budget_s=time_budget_s, start=start)
    return {r.name: r for r in heuristics + [mh]}
