"""Execution-plan search for one RLHF iteration (ReaLHF §5, Mei et al. 2024; SPECS.md §8).

The iteration is a dataflow graph of model calls (PPO: actor generate -> ref / reward / critic
inference -> actor / critic train; GRPO: no critic). A plan gives every call a candidate =
(device mesh, Strategy(dp, tp, pp)); meshes are contiguous, aligned blocks of the cluster (a
power-of-two slice of one node, or a power-of-two run of whole nodes). Where one model's
consecutive calls (cyclically: train -> next generate) use different candidates, a reallocation
node moves its weights (cost: bytes into each destination node over intra/inter-node links).
Makespan = list schedule of the graph in topological order: a node starts when its inputs are
done and every device of its mesh(es) is free, so calls on disjoint meshes run concurrently.
Memory per device = resident state (optimizer of trained models on their train mesh, weights of
frozen models) + the largest transient need of a call placed there; above capacity = OOM.

Search: Metropolis-Hastings over candidate indices, one call changed per step, accepted with
min(1, exp(-beta * (cost' - cost) / cost_0)); an OOM plan costs 3x its makespan; the best valid
plan seen is kept. Seeded (random.Random(seed)): the same seed and iterations give the same plan.

Example: result = search(spec, seed=0, iters=20000)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from rollout.realloc.cluster import ClusterSpec
from rollout.realloc.cost_model import (Call, Hardware, LlamaShape, Strategy, call_memory_bytes,
                                        call_seconds)

OOM_PENALTY = 3.0


@dataclass(frozen=True)
class Candidate:
    start: int  # first device (node-major numbering)
    size: int
    strategy: Strategy

    def devices(self) -> range:
        return range(self.start, self.start + self.size)


@dataclass(frozen=True)
class CallNode:
    name: str
    model: str  # role: actor | critic | ref | reward
    call: Call
    deps: tuple[str, ...]
    trains: bool = False


@dataclass
class Evaluation:
    makespan_s: float
    oom: bool
    peak_gib: dict = field(default_factory=dict)  # call name -> peak GiB on its mesh
    times_s: dict = field(default_factory=dict)  # node name -> duration
    realloc_s: dict = field(default_factory=dict)


def dataflow_graph(spec: ClusterSpec) -> list[CallNode]:
    """The calls of one iteration, in a topological order."""
    w, roles = spec.workload, spec.models
    gen = Call("generate", w.batch_seqs, w.prompt_len, w.gen_len)
    inf = Call("inference", w.batch_seqs, w.prompt_len, w.gen_len)
    train = Call("train", w.batch_seqs, w.prompt_len, w.gen_len, w.minibatches)
    nodes = [CallNode("actor_gen", "actor", gen, ())]
    inputs = ["actor_gen"]
    for role in ("ref", "reward", "critic"):
        if role in roles:
            nodes.append(CallNode(f"{role}_inf", role, inf, ("actor_gen",)))
            inputs.append(f"{role}_inf")
    nodes.append(CallNode("actor_train", "actor", train, tuple(inputs), trains=True))
    if "critic" in roles:
        nodes.append(CallNode("critic_train", "critic", train, tuple(inputs), trains=True))
    return nodes


def meshes(hw: Hardware) -> list[tuple[int, int]]:
    """(start, size): power-of-two slices inside a node, aligned; power-of-two runs of nodes."""
    out = []
    size = 1
    while size < hw.gpus_per_node:
        if hw.gpus_per_node % size == 0:
            out += [(node * hw.gpus_per_node + off, size) for node in range(hw.nodes)
                    for off in range(0, hw.gpus_per_node, size)]
        size *= 2
    k = 1
    while k <= hw.nodes:
        out += [(first * hw.gpus_per_node, k * hw.gpus_per_node) for first in range(0, hw.nodes - k + 1, k)]
        k *= 2
    if (0, hw.num_gpus) not in out:
        out.append((0, hw.num_gpus))
    return out


def strategies(size: int, shape: LlamaShape, hw: Hardware, batch_seqs: int) -> list[Strategy]:
    """All dp*tp*pp == size with tp inside a node and dividing the heads, pp <= layers."""
    out = []
    for tp in range(1, min(size, hw.gpus_per_node) + 1):
        if size % tp or shape.heads % tp:
            continue
        for pp in range(1, min(size // tp, shape.layers) + 1):
            if (size // tp) % pp:
                continue
            dp = size // (tp * pp)
            if dp <= batch_seqs:
                out.append(Strategy(dp, tp, pp))
    return out


def candidates(node: CallNode, spec: ClusterSpec) -> list[Candidate]:
    shape, hw = spec.models[node.model], spec.hardware
    return [Candidate(start, size, s) for start, size in meshes(hw)
            for s in strategies(size, shape, hw, node.call.batch_seqs)]


def _shard_ranges(start: int, size: int, s: Strategy) -> np.ndarray:
    """[size, 4]: (layer_lo, layer_hi, tp_lo, tp_hi) as fractions of the model each mesh rank holds."""
    rank = np.arange(size)
    tp_idx, pp_idx = rank % s.tp, rank // (s.tp * s.dp)
    return np.stack([pp_idx / s.pp, (pp_idx + 1) / s.pp, tp_idx / s.tp, (tp_idx + 1) / s.tp], axis=1)


def realloc_seconds(shape: LlamaShape, src: Candidate, dst: Candidate, hw: Hardware) -> float:
    """Time to move a model from layout `src` to `dst`: max over destination nodes of
    inter-node bytes / inter bw + intra-node bytes / intra bw (ReaLHF: cost from the bytes each
    destination node receives). A device keeps what its old shard already covers; the rest comes
    from inside its node in proportion to the share of the model the node's source devices hold.
    """
    if src == dst:
        return 0.0
    total = shape.num_params * hw.param_bytes
    g = hw.gpus_per_node
    s_box = _shard_ranges(src.start, src.size, src.strategy)
    d_box = _shard_ranges(dst.start, dst.size, dst.strategy)
    s_nodes = (src.start + np.arange(src.size)) // g
    shards = src.strategy.tp * src.strategy.pp
    rank = np.arange(src.size)
    shard_id = (rank // (src.strategy.tp * src.strategy.dp)) * src.strategy.tp + rank % src.strategy.tp
    held = np.unique(s_nodes * shards + shard_id) // shards  # one entry per distinct shard per node
    cover = np.minimum(1.0, np.bincount(held, minlength=hw.nodes) / shards)
    need = total * (d_box[:, 1] - d_box[:, 0]) * (d_box[:, 3] - d_box[:, 2])
    local = np.zeros(dst.size)
    lo, hi = max(src.start, dst.start), min(src.start + src.size, dst.start + dst.size)
    if lo < hi:  # devices in both meshes keep the overlap of their old and new shard
        sb, db = s_box[lo - src.start:hi - src.start], d_box[lo - dst.start:hi - dst.start]
        layers = np.clip(np.minimum(sb[:, 1], db[:, 1]) - np.maximum(sb[:, 0], db[:, 0]), 0, None)
        cols = np.clip(np.minimum(sb[:, 3], db[:, 3]) - np.maximum(sb[:, 2], db[:, 2]), 0, None)
        local[lo - dst.start:hi - dst.start] = total * layers * cols
    d_nodes = (dst.start + np.arange(dst.size)) // g
    rest = need - local
    intra = np.bincount(d_nodes, weights=rest * cover[d_nodes], minlength=hw.nodes)
    inter = np.bincount(d_nodes, weights=rest * (1.0 - cover[d_nodes]), minlength=hw.nodes)
    worst = float((intra / (hw.intra_node_gbytes_per_s * 1e9) + inter / (hw.inter_node_gbytes_per_s * 1e9)).max())
    return worst + hw.link_latency_us * 1e-6


class PlanModel:
    """Precomputed per-candidate costs of every call; evaluates whole plans."""

    def __init__(self, spec: ClusterSpec, rules=None):
        """rules: None (every candidate), or an object with allows(node, candidate) -> bool,
        check({call: candidate}) -> reason | None and ties() -> {call: call whose candidate it takes}
        (rollout/realloc/executable.py: what rl train runs)."""
        self.spec, self.hw, self.rules = spec, spec.hardware, rules
        self.nodes = dataflow_graph(spec)
        self.cands = [[c for c in candidates(n, spec) if rules is None or rules.allows(n, c)] for n in self.nodes]
        self.seconds = [[call_seconds(spec.models[n.model], n.call, c.strategy, self.hw) for c in cs]
                        for n, cs in zip(self.nodes, self.cands)]
        self.memory = [[call_memory_bytes(spec.models[n.model], n.call, c.strategy, self.hw) for c in cs]
                       for n, cs in zip(self.nodes, self.cands)]
        self._realloc: dict = {}
        self._index = [{c: j for j, c in enumerate(cs)} for cs in self.cands]
        self.capacity = self.hw.device_memory_gib * 2 ** 30

    def realloc(self, model: str, a: Candidate, b: Candidate) -> float:
        key = (model, a.start, a.size, a.strategy, b.start, b.size, b.strategy)
        if key not in self._realloc:
            self._realloc[key] = realloc_seconds(self.spec.models[model], a, b, self.hw)
        return self._realloc[key]

    def _memory(self, plan: list[int]) -> tuple[bool, dict]:
        """Per-device resident + transient bytes over the segments cut by the plan's meshes."""
        resident, transient = [], []
        for i, (node, idx) in enumerate(zip(self.nodes, plan)):
            c, mem = self.cands[i][idx], self.memory[i][idx]
            frozen = sum(1 for n in self.nodes if n.model == node.model) == 1 and not node.trains
            keep = mem["optimizer"] if node.trains else (mem["params"] if frozen else 0.0)
            resident.append((c.start, c.start + c.size, keep))
            transient.append((c.start, c.start + c.size, sum(mem.values()) - keep, node.name))
        cuts = sorted({x for s, e, *_ in resident for x in (s, e)})
        peak, oom = {n.name: 0.0 for n in self.nodes}, False
        for lo, hi in zip(cuts, cuts[1:]):
            base = sum(k for s, e, k in resident if s <= lo and hi <= e)
            for s, e, t, name in transient:
                if s <= lo and hi <= e:
                    total = base + t
                    peak[name] = max(peak[name], total / 2 ** 30)
                    oom |= total > self.capacity
        return oom, peak

    def normalize(self, plan: list[int]) -> list[int]:
        """The plan with every tied call on its leader's candidate (rules.ties(); no rules: as is)."""
        out = list(plan)
        if self.rules is None:
            return out
        names = [n.name for n in self.nodes]
        for follower, leader in self.rules.ties().items():
            if follower in names and leader in names:
                i, j = names.index(follower), names.index(leader)
                same = self._index[i].get(self.cands[j][plan[j]])
                out[i] = out[i] if same is None else same
        return out

    def evaluate(self, plan: list[int], detail: bool = False) -> Evaluation:
        """List-schedule the graph (plus reallocation nodes) and check memory."""
        plan = self.normalize(plan)
        free = np.zeros(self.hw.num_gpus)  # device -> time it becomes free
        done, times, reallocs = {}, {}, {}
        last = {}  # model -> (candidate, finish of its last call, mesh)
        cand_of = {n.name: self.cands[i][plan[i]] for i, n in enumerate(self.nodes)}
        if self.rules is not None and self.rules.check(cand_of) is not None:
            return Evaluation(math.inf, True)  # not executable: never kept, never accepted from a valid plan
        for i, node in enumerate(self.nodes):
            c = cand_of[node.name]
            ready = max((done[d] for d in node.deps), default=0.0)
            if node.model in last and last[node.model][0] != c:
                prev, prev_done = last[node.model]
                ready = max(ready, self._run(free, [prev, c], prev_done, self.realloc(node.model, prev, c),
                                             reallocs, f"{node.model}:{node.name}"))
            dur = self.seconds[i][plan[i]]
            done[node.name] = self._run(free, [c], ready, dur, times, node.name)
            last[node.model] = (c, done[node.name])
        for i, node in enumerate(self.nodes):  # back to the first call's layout for the next iteration
            first = next(cand_of[n.name] for n in self.nodes if n.model == node.model)
            c = cand_of[node.name]
            if node.trains and c != first:
                self._run(free, [c, first], done[node.name], self.realloc(node.model, c, first),
                          reallocs, f"{node.model}:next")
        makespan = float(free.max())
        oom, peak = self._memory(plan)
        return Evaluation(makespan, oom, peak, times, reallocs)

    @staticmethod
    def _run(free: np.ndarray, cands: list[Candidate], ready: float, dur: float, log: dict, name: str) -> float:
        """Start when inputs are ready and every device of the meshes is free; occupy them."""
        start = max([ready] + [float(free[c.start:c.start + c.size].max()) for c in cands])
        for c in cands:
            free[c.start:c.start + c.size] = start + dur
        log[name] = dur
        return start + dur

    def cost(self, plan: list[int]) -> tuple[float, Evaluation]:
        ev = self.evaluate(plan)
        return ev.makespan_s * (OOM_PENALTY if ev.oom else 1.0), ev

    def index(self, i: int, cand: Candidate) -> int | None:
        """Position of `cand` among call i's candidates (None: not a candidate)."""
        return self._index[i].get(cand)

    def plan_of(self, choice: dict[str, Candidate]) -> list[int]:
        return [self._index[i][choice[n.name]] for i, n in enumerate(self.nodes)]
