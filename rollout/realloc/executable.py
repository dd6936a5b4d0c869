"""The part of the planner's search space that `rl train` can execute (`rl plan --recipe`).

`rl train` runs each role in one layout:
- learner (actor_train): N FSDP2 / DDP data-parallel ranks, one device each: dp = N, tp = pp = 1;
- engines (actor_gen): M replicas of T devices: dp = M, tp = T, pp = 1; T = 1 for hf engines,
  a power of two for vLLM (tensor_parallel_size);
- inference calls run inside the actors that hold the model: the KL reference of GRPO in the
  learner (ref_inf = actor_train's candidate), PPO's reference in one reference actor (one
  device), critic_inf in the critic ranks (= critic_train's candidate, dp only);
- placement: an engine either has devices of its own (placement.mode: separate) or engine i
  shares learner rank i's device (placement.mode: colocated: same first device, M <= N, T = 1);
  a critic (and PPO's reference) either shares learner rank 0's device (critic.placement:
  colocated, one rank) or has its own. Roles with bundles of their own never share a device.

`allows` filters candidates per call; `ties` puts an inference call on the candidate of the call
whose actor runs it; `check` rejects plans whose calls do not fit together (PlanModel.evaluate
scores them as invalid). Example:
    model = PlanModel(spec, rules=Executable(engine="hf"))
    result = plan_executable(model, seed=0, iters=20000)
"""
from __future__ import annotations

from dataclasses import dataclass

from rollout.realloc.planner import Candidate, CallNode, PlanModel
from rollout.realloc.search import SearchResult, colocated, half_half, mh_search


def _overlap(a: Candidate, b: Candidate) -> bool:
    return a.start < b.start + b.size and b.start < a.start + a.size


def _shares_rank0(c: Candidate, learner: Candidate) -> bool:
    """One device, learner rank 0's."""
    return c.size == 1 and c.start == learner.start


@dataclass(frozen=True)
class Executable:
    engine: str = "hf"  # hf: tp 1 | vllm: tp a power of two
    reference: str = "learner"  # learner: GRPO's kl reference in the learner | actor: PPO's reference actor

    def allows(self, node: CallNode, c: Candidate) -> bool:
        s = c.strategy
        if s.pp != 1:
            return False
        if node.call.kind == "generate":
            return s.tp == 1 if self.engine == "hf" else s.tp & (s.tp - 1) == 0
        if node.name == "ref_inf" and self.reference == "actor":
            return c.size == 1 and s.tp == 1
        return s.tp == 1  # train and inference: data parallel ranks only

    def ties(self) -> dict[str, str]:
        """call -> the call whose devices and layout it runs on (same actors)."""
        return {"critic_inf": "critic_train", **({"ref_inf": "actor_train"} if self.reference == "learner" else {})}

    def check(self, choice: dict[str, Candidate]) -> str | None:
        """None when `rl train` can run the plan, else why not (one line)."""
        learner, gen = choice["actor_train"], choice["actor_gen"]
        if "ref_inf" in choice and self.reference == "learner" and choice["ref_inf"] != learner:
            return "ref_inf runs in the learner: same devices and layout as actor_train"
        if "critic_inf" in choice and choice["critic_inf"] != choice["critic_train"]:
            return "critic_inf runs in the critic ranks: same devices and layout as critic_train"
        own = {"engine": gen}  # roles with bundles of their own
        if _overlap(gen, learner):
            if not (gen.start == learner.start and gen.size <= learner.size and gen.strategy.tp == 1):
                return "a colocated engine i shares learner rank i's device (tp 1, at most one per rank)"
            own.pop("engine")
        critic = choice.get("critic_train")
        if critic is not None:
            if _overlap(critic, learner):
                if not _shares_rank0(critic, learner):
                    return "a colocated critic is one rank on learner rank 0's device"
            else:
                own["critic"] = critic
        ref = choice.get("ref_inf") if self.reference == "actor" else None
        if ref is not None:
            with_critic = critic is not None and "critic" not in own
            if with_critic and not _shares_rank0(ref, learner):
                return "with a colocated critic the reference shares learner rank 0's device"
            if not with_critic:
                own["reference"] = ref
        meshes = [learner, *own.values()]
        for i, a in enumerate(meshes):
            if any(_overlap(a, b) for b in meshes[i + 1:]):
                return "roles in bundles of their own cannot share devices"
        return None


def seed_plan(model: PlanModel) -> list[int] | None:
    """An executable start: every call colocated on the first device (or learner rank 0's)."""
    from rollout.realloc.cost_model import Strategy

    one = Candidate(0, 1, Strategy(1, 1, 1))
    plan = [model.index(i, one) for i in range(len(model.nodes))]
    return None if None in plan else plan


def plan_executable(model: PlanModel, seed: int = 0, iters: int = 20000,
                    time_budget_s: float | None = None) -> dict[str, SearchResult]:
    """The heuristics restricted to executable plans, then MH from the best executable start."""
    heuristics = [colocated(model), half_half(model)]
    starts = [h.plan for h in heuristics if h.evaluation is not None]
    one = seed_plan(model)
    if one is not None:
        starts.append(one)
    valid = [(model.cost(p)[0], p) for p in starts]
    valid = [(c, p) for c, p in valid if c < float("inf")]
    start = min(valid, key=lambda cp: cp[0])[1] if valid else None
    mh = mh_search(model, seed=seed, iters=iters, time_budget_s=time_budget_s, start=start)
    for r in heuristics + [mh]:
        r.plan = None if r.plan is None else model.normalize(r.plan)
    return {r.name: r for r in heuristics + [mh]}
