"""N sharded learner actors driven as one learner: the calls a driver makes on a single learner,
blocking (`train_step`, `export_full`, `save`, `load`, `save_hf`, `close`).

Per call of `train_step` the batch is cut into minibatches exactly as `Learner.train_step` cuts it
(`batch.chunks(minibatch_samples)`); each minibatch's groups are spread over the ranks by
`shard_minibatch` (whole groups, balanced by forward tokens) and every rank gets its part plus the
minibatch's global normalisers; each rank micro-batches its own part (rl/workers/distributed.py).

Example:
    group = LearnerGroup("tiny-llama", world_size=2, strategy="fsdp", lr=1e-5, num_threads=1)
    metrics = group.train_step(batch, advantages)      # == Learner("tiny-llama", lr=1e-5).train_step(...)
    buckets = group.export_full(32 << 20)
    group.close()
"""
from __future__ import annotations

import dataclasses
import heapq
import time

import ray
import torch

from algorithms.aggregation import loss_normalizers
from rl.data.prefs import EncodedPairs
from rl.types import RolloutBatch
from rl.workers.critic import ShardedCriticActor
from rl.workers.distributed import ShardedLearnerActor
from rl.workers.dpo_learner import ShardedDPOLearnerActor, pair_metrics
from rl.workers.realloc import Reallocation, reshard_sync
from rl.workers.weight_sync import engine_label, get_within, sync_weights, verify


def shard_minibatch(group_token_counts: list[int], world_size: int) -> list[list[int]]:
    """Whole groups onto ranks, balanced by tokens: greedy largest-first onto the lightest rank (ties:
    the lower group index first, the lower rank first), then each rank's groups in ascending order.

    Deterministic; every group is assigned exactly once; like any list schedule, the heaviest rank
    exceeds the lightest by at most the largest group: max_load - min_load <= max(group_token_counts).
    Shapes: group_token_counts [num_groups] -> [world_size][groups of that rank].
    Example: shard_minibatch([5, 1, 4, 2], 2) -> [[0, 1], [2, 3]]   (loads 6 and 6)
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    order = sorted(range(len(group_token_counts)), key=lambda g: (-group_token_counts[g], g))
    heap = [(0, r) for r in range(world_size)]  # (load, rank): the lightest rank on top
    plan: list[list[int]] = [[] for _ in range(world_size)]
    for g in order:
        load, r = heapq.heappop(heap)
        plan[r].append(g)
        heapq.heappush(heap, (load + group_token_counts[g], r))
    return [sorted(groups) for groups in plan]


def group_token_counts(mb: RolloutBatch) -> list[int]:
    """Forward tokens per group: its prompt once (the prefill is shared) plus its completion tokens."""
    completion = torch.zeros(len(mb.prompt_ids), dtype=torch.long).index_add_(
        0, mb.group_ids, mb.completion_mask.sum(1).long())
    return [len(p) + int(c) for p, c in zip(mb.prompt_ids, completion)]


def plan_shards(batch: RolloutBatch, per_sample: tuple[torch.Tensor, ...], minibatch_samples: int, world_size: int,
                mask: str = "train_mask") -> tuple[list[list[tuple | None]], list[tuple[float, float]]]:
    """-> (parts[rank][minibatch]: that rank's (groups, *per_sample tensors of their samples) or None,
    normalizers[minibatch]: (num_tokens, num_seqs) of the whole minibatch's `mask`). Minibatches as
    `Learner.train_step` cuts them. per_sample: e.g. (advantages,) [S] or (old_values, returns) [S, T]."""
    parts: list[list[tuple | None]] = [[] for _ in range(world_size)]
    normalizers = []
    for mb, rows in batch.chunks(minibatch_samples):
        normalizers.append(loss_normalizers(getattr(mb, mask)))
        for r, groups in enumerate(shard_minibatch(group_token_counts(mb), world_size)):
            if not groups:
                parts[r].append(None)
                continue
            mine = torch.isin(mb.group_ids, torch.tensor(groups))  # select_groups keeps sample order
            parts[r].append((mb.select_groups(groups), *[t[rows][mine] for t in per_sample]))
    return parts, normalizers


def split_groups(batch: RolloutBatch, world_size: int) -> list[tuple[RolloutBatch | None, torch.Tensor]]:
    """The whole batch's groups over the ranks (balanced by tokens): per rank (its sub-batch or None,
    the boolean [S] mask of its samples in the batch)."""
    out = []
    for groups in shard_minibatch(group_token_counts(batch), world_size):
        mine = torch.isin(batch.group_ids, torch.tensor(groups, dtype=torch.long))
        out.append((batch.select_groups(groups) if groups else None, mine))
    return out


class LearnerGroup:
    """`world_size` ShardedLearner actors in one default process group, used like one learner.

    learner_kwargs go to every rank's `Learner` (lr, minibatch_samples, microbatch_samples, loss, ...).
    actor_options: one dict of Ray options per rank (e.g. a placement-group scheduling strategy).
    """

    actor_class, minibatches = ShardedLearnerActor, True

    def __init__(self, model_name: str, world_size: int, strategy: str = "fsdp", backend: str = "auto",
                 num_cpus: float = 0.5, num_gpus: float = 0.0, timeout_s: float = 300.0,
                 actor_options: list[dict] | None = None, **learner_kwargs):
        options = actor_options or [{} for _ in range(world_size)]
        if len(options) != world_size:
            raise ValueError(f"actor_options has {len(options)} entries for {world_size} ranks")
        self.world_size, self.timeout_s = world_size, timeout_s
        self.actors = [self.actor_class.options(num_cpus=num_cpus, num_gpus=num_gpus, **opts)
                       .remote(model_name, **learner_kwargs) for opts in options]
        try:
            host, port = ray.get(self.actors[0].open_group.remote(world_size, timeout_s))
            ray.get([a.setup_group.remote(host, port, r, world_size, backend, strategy, timeout_s)
                     for r, a in enumerate(self.actors)])
            self.minibatch_samples = ray.get(self.actors[0].minibatch_size.remote()) if self.minibatches else None
        except BaseException:
            self.close()
            raise

    def _all(self, method: str, *args) -> list:
        return ray.get([getattr(a, method).remote(*args) for a in self.actors])

    def train_step(self, batch: RolloutBatch, advantages: torch.Tensor) -> dict[str, float]:
        parts, normalizers = plan_shards(batch, (advantages,), self.minibatch_samples, self.world_size)
        metrics = ray.get([a.train_shard.remote(p, normalizers) for a, p in zip(self.actors, parts)])
        return metrics[0]

    def export_full(self, bucket_bytes: int) -> list:
        """The full weights as WeightBuckets (gathered one parameter at a time; from rank 0)."""
        return self._all("export_full", bucket_bytes)[0]

    def save(self, path: str) -> None:
        self._all("save", path)

    def offload(self, optimizer: bool = True, params: bool = False) -> float:
        return sum(self._all("offload", optimizer, params))

    def onload(self) -> float:
        return sum(self._all("onload"))

    def load(self, path: str) -> None:
        self._all("load", path)

    def save_hf(self, path: str, tokenizer_name: str) -> str:
        return self._all("save_hf", path, tokenizer_name)[0]

    def close(self) -> None:
        """Tear the process group down on every rank, then kill the actors (also after a failure)."""
        try:
            ray.get([a.teardown.remote() for a in self.actors], timeout=min(60.0, self.timeout_s))
        except Exception:  # a dead or hung rank: the kills below still free everything
            pass
        for a in self.actors:
            ray.kill(a)
        self.actors = []

    def sync(self, engines: list, version: int, sync) -> dict[str, float]:
        """Full fp32 weights into every engine, streamed one bucket at a time (the ranks gather one
        bucket, rank 0 ships it, the engines apply it, then the next: neither a rank nor the object
        store ever holds the whole model), then verified (rl/workers/weight_sync.py). The sharded
        path runs `sync.mode: full` over the object store."""
        def checksum(dtype):
            return get_within([a.weights_checksum.remote(dtype) for a in self.actors], self._labels(),
                              float(sync.timeout_s), "report its weights checksum")[0]

        if sync.transport == "reshard":  # every engine takes its pieces from the ranks holding them
            self._realloc = getattr(self, "_realloc", None) or Reallocation(sync.backend)
            return reshard_sync(self._realloc, self.actors, engines, version, sync,
                                lambda bad: self._stream([engines[i] for i in bad], version, sync), checksum)
        t0 = time.time()
        nbytes = self._stream(engines, version, sync)
        verified = verify(engines, version, checksum,
                          lambda bad: self._stream([engines[i] for i in bad], version, sync), sync)
        return {"sync/bytes": float(nbytes), "sync/density": 1.0, "sync/mode": 0.0, "sync/full": 1.0,
                "sync/transport": 0.0, **verified, "time/sync_s": time.time() - t0}

    def _labels(self) -> list[str]:
        return [f"learner rank {r}" for r in range(self.world_size)]

    def _stream(self, engines: list, version: int, sync) -> int:
        timeout_s, nbytes = float(sync.timeout_s), 0
        plan = get_within([self.actors[0].bucket_plan.remote(int(sync.bucket_mb * 2**20))], self._labels()[:1],
                          timeout_s, "plan the buckets")[0]
        engine_labels = [engine_label(i, e) for i, e in enumerate(engines)]
        for k, names in enumerate(plan):
            refs = [a.export_bucket.remote(names) for a in self.actors]
            get_within(refs, self._labels(), timeout_s, f"gather bucket {k} of version {version}")
            nbytes += sum(b.nbytes for b in ray.get(refs[0]))
            get_within([e.update_weights.remote(refs[0], version, k == len(plan) - 1) for e in engines],
                       engine_labels, timeout_s, f"take bucket {k} of version {version}")
            del refs  # this bucket leaves the object store before the next is gathered
        return nbytes

    def __enter__(self) -> "LearnerGroup":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ActorLearner:
    """One learner actor behind the same blocking interface as a LearnerGroup (train_step, sync, actors,
    close), so a driver is written once for 1 or N learners."""

    def __init__(self, actor):
        self.actor, self.actors = actor, [actor]

    def train_step(self, batch: RolloutBatch, advantages: torch.Tensor) -> dict[str, float]:
        return ray.get(self.actor.train_step.remote(batch, advantages))

    def sync(self, engines: list, version: int, sync) -> dict[str, float]:
        if sync.transport != "reshard":
            return sync_weights(self.actor, engines, version, sync)
        self._realloc = getattr(self, "_realloc", None) or Reallocation(sync.backend)
        plain = dataclasses.replace(sync, transport="object_store", verify=False)

        def checksum(dtype):
            return get_within([self.actor.weights_checksum.remote(dtype)], ["the learner"], float(sync.timeout_s),
                              "report its weights checksum")[0]
        return reshard_sync(self._realloc, [self.actor], engines, version, sync,
                            lambda bad: sync_weights(self.actor, [engines[i] for i in bad], version, plain), checksum)

    def offload(self, optimizer: bool = True, params: bool = False) -> float:
        return ray.get(self.actor.offload.remote(optimizer, params))

    def onload(self) -> float:
        return ray.get(self.actor.onload.remote())

    def close(self) -> None:
        pass


class DPOGroup(LearnerGroup):
    """`world_size` ShardedDPOLearner ranks used like one DPO learner (the driver's blocking calls):
    each call's pairs are spread over the ranks whole, balanced by tokens (`shard_minibatch`)."""

    actor_class, minibatches = ShardedDPOLearnerActor, False

    def __init__(self, model_name: str, world_size: int, beta: float = 0.1, **kwargs):
        super().__init__(model_name, world_size, beta=beta, **kwargs)
        self.beta = beta

    def _split(self, pairs: EncodedPairs) -> list[list[int]]:
        tokens = [len(p) + len(c) + len(r) for p, c, r in zip(pairs.prompt_ids, pairs.chosen_ids, pairs.rejected_ids)]
        return shard_minibatch(tokens, self.world_size)

    def dpo_step(self, pairs: EncodedPairs, ref_chosen: list[float], ref_rejected: list[float]) -> dict:
        shards = self._split(pairs)
        return ray.get([a.dpo_shard.remote(pairs.select(ix), [ref_chosen[i] for i in ix],
                                           [ref_rejected[i] for i in ix], len(pairs))
                        for a, ix in zip(self.actors, shards)])[0]

    def reference_logps(self, pairs: EncodedPairs) -> tuple[list[float], list[float]]:
        """The current policy's summed log-probs of every pair, in pair order."""
        shards = self._split(pairs)
        chosen, rejected = [0.0] * len(pairs), [0.0] * len(pairs)
        for ix, (c, r) in zip(shards, ray.get([a.sequence_logps_shard.remote(pairs.select(ix))
                                               for a, ix in zip(self.actors, shards)])):
            for i, ci, ri in zip(ix, c, r):
                chosen[i], rejected[i] = ci, ri
        return chosen, rejected

    def eval_pairs(self, pairs: EncodedPairs, ref_chosen: list[float], ref_rejected: list[float]) -> dict:
        if len(pairs) == 0:
            return {}
        c, r = self.reference_logps(pairs)
        return pair_metrics(torch.tensor(c), torch.tensor(r), ref_chosen, ref_rejected, self.beta)

    def export_weights(self, bucket_bytes: int) -> list:
        return self.export_full(bucket_bytes)


class ActorDPO:
    """One DPO learner actor behind DPOGroup's blocking interface."""

    def __init__(self, actor):
        self.actor, self.actors = actor, [actor]

    def dpo_step(self, pairs, ref_chosen, ref_rejected) -> dict:
        return ray.get(self.actor.dpo_step.remote(pairs, ref_chosen, ref_rejected))

    def reference_logps(self, pairs) -> tuple[list[float], list[float]]:
        return ray.get(self.actor.reference_logps.remote(pairs))

    def eval_pairs(self, pairs, ref_chosen, ref_rejected) -> dict:
        return ray.get(self.actor.eval_pairs.remote(pairs, ref_chosen, ref_rejected))

    def export_weights(self, bucket_bytes: int):
        return self.actor.export_weights.remote(bucket_bytes)

    def close(self) -> None:
        pass


class CriticGroup(LearnerGroup):
    """`world_size` ShardedCritic ranks used like one critic: `values_pending`/`values_collect` (the
    driver overlaps them with the reference's log-probs) and `train_pending` (refs: the critic trains
    while the policy does; every rank returns the same metrics)."""

    actor_class = ShardedCriticActor

    def values_pending(self, batch: RolloutBatch):
        splits = split_groups(batch, self.world_size)
        return batch.completion_mask.shape, splits, [a.values_shard.remote(sub) for a, (sub, _) in zip(self.actors, splits)]

    @staticmethod
    def values_collect(pending) -> torch.Tensor:
        shape, splits, refs = pending
        out = torch.zeros(shape, dtype=torch.float32)
        for (_, mine), v in zip(splits, ray.get(refs)):
            if v is not None:
                out[mine] = v
        return out

    def train_pending(self, batch: RolloutBatch, old_values: torch.Tensor, returns: torch.Tensor) -> list:
        parts, normalizers = plan_shards(batch, (old_values, returns), self.minibatch_samples, self.world_size,
                                         mask="completion_mask")
        return [a.train_shard.remote(p, normalizers) for a, p in zip(self.actors, parts)]


class ActorCritic:
    """One critic actor behind CriticGroup's interface."""

    def __init__(self, actor):
        self.actor, self.actors = actor, [actor]

    def values_pending(self, batch: RolloutBatch):
        return self.actor.values.remote(batch)

    @staticmethod
    def values_collect(pending) -> torch.Tensor:
        return ray.get(pending)

    def train_pending(self, batch: RolloutBatch, old_values: torch.Tensor, returns: torch.Tensor) -> list:
        return [self.actor.train_step.remote(batch, old_values, returns)]

    def close(self) -> None:
        pass
