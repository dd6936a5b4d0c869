"""The DPO learner (SPECS.md §3, Rafailov et al. 2023): the policy + AdamW of `Learner`, with DPO's
summed sequence log-probs and update. The reference is the policy's own initial weights: its log-probs
are computed once by the driver (`reference_logps`) and passed back in every step.

Sharded (`ShardedDPOLearner`, N ranks driven by rl/workers/learner_group.py:DPOGroup): each rank gets
whole pairs of the step, balanced by tokens; a micro-batch's loss is scaled by its share of the
WHOLE step's pairs, so the ranks' summed gradients equal the single learner's.

Example: DPOLearnerActor.remote("tiny-llama", beta=0.1).dpo_step.remote(pairs, ref_chosen, ref_rejected)
"""
from __future__ import annotations

import ray
import torch

from algorithms.losses import dpo_loss
from rl.data.prefs import EncodedPairs
from rl.types import index_chunks, right_pad
from rl.workers.devices import compute_autocast
from rl.workers.distributed import ShardedLearner
from rl.workers.learner import Learner, completion_logprobs

LEARNER_CPUS = 0.5


class DPOLearner(Learner):
    """The policy + AdamW of rl.workers.learner.Learner, with DPO's sequence log-probs and update."""

    def __init__(self, model_name: str, dtype: str = "float32", seed: int = 0, lr: float = 1e-6,
                 weight_decay: float = 0.0, max_grad_norm: float = 1.0, warmup_steps: int = 0,
                 beta: float = 0.1, microbatch_pairs: int = 8, num_threads: int | None = None, pad_id: int = 2,
                 master_dtype: str = "float32", gradient_checkpointing: bool = False):
        super().__init__(model_name, dtype, seed, lr=lr, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
                         warmup_steps=warmup_steps, num_threads=num_threads, pad_id=pad_id, master_dtype=master_dtype,
                         gradient_checkpointing=gradient_checkpointing)
        self.beta, self.microbatch_pairs = beta, microbatch_pairs

    def sequence_logps(self, pairs: EncodedPairs) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed completion log-probs (chosen [B], rejected [B]); each pair's prompt prefilled once."""
        seqs = [s for c, r in zip(pairs.chosen_ids, pairs.rejected_ids) for s in (c, r)]
        ids, mask = (t.to(self.device) for t in right_pad(seqs, self.pad_id, torch.long))
        group_ids = torch.arange(len(pairs), device=self.device).repeat_interleave(2)  # [2B]: chosen, rejected of i
        with compute_autocast(self.device, self.dtype, self.master_dtype):
            logp = completion_logprobs(self.model, pairs.prompt_ids, ids, mask, group_ids, 1.0, self.pad_id)
        summed = (logp * mask).sum(-1)
        return summed[0::2].cpu(), summed[1::2].cpu()

    def reference_logps(self, pairs: EncodedPairs) -> tuple[list[float], list[float]]:
        """The current (initial) policy's summed log-probs: the frozen reference of the run."""
        chosen, rejected = [], []
        with torch.no_grad():
            for idx in index_chunks(len(pairs), self.microbatch_pairs):
                c, r = self.sequence_logps(pairs.select(idx))
                chosen += c.tolist()
                rejected += r.tolist()
        return chosen, rejected

    def dpo_step(self, pairs: EncodedPairs, ref_chosen: list[float], ref_rejected: list[float]) -> dict:
        """One optimizer step on `pairs`, accumulated over micro-batches of `microbatch_pairs`."""
        self.opt.zero_grad(set_to_none=True)
        acc: dict[str, float] = {}
        for idx in index_chunks(len(pairs), self.microbatch_pairs):
            self._micro_loss(pairs, idx, ref_chosen, ref_rejected, len(pairs), acc).backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.opt.step()
        self.sched.step()
        return {**_rename(acc), "grad_norm": float(grad_norm), "lr": self.sched.get_last_lr()[0]}

    def _micro_loss(self, pairs, idx, ref_chosen, ref_rejected, step_pairs: int, acc: dict) -> torch.Tensor:
        """The DPO loss of pairs[idx] times its share of the step's `step_pairs` (so any split of the
        step into micro-batches and ranks sums to the step's mean); its metrics, weighted, into acc."""
        c, r = self.sequence_logps(pairs.select(idx))
        loss, m = dpo_loss(c, r, torch.tensor([ref_chosen[i] for i in idx]),
                           torch.tensor([ref_rejected[i] for i in idx]), self.beta)
        share = len(idx) / step_pairs
        for k, v in {"loss": loss.detach(), **m, "logp/chosen": c.detach().mean(),
                     "logp/rejected": r.detach().mean()}.items():
            acc[k] = acc.get(k, 0.0) + float(v) * share
        return loss * share

    def eval_pairs(self, pairs: EncodedPairs, ref_chosen: list[float], ref_rejected: list[float]) -> dict:
        """Held-out pairs: DPO loss, implicit-reward accuracy and margin, and logp_accuracy (the
        policy itself gives the chosen reply a higher summed log-prob than the rejected one)."""
        if len(pairs) == 0:
            return {}
        c_all, r_all = [], []
        with torch.no_grad():
            for idx in index_chunks(len(pairs), self.microbatch_pairs):
                c, r = self.sequence_logps(pairs.select(idx))
                c_all.append(c)
                r_all.append(r)
        return pair_metrics(torch.cat(c_all), torch.cat(r_all), ref_chosen, ref_rejected, self.beta)


def pair_metrics(c: torch.Tensor, r: torch.Tensor, ref_chosen: list[float], ref_rejected: list[float],
                 beta: float) -> dict[str, float]:
    """eval_pairs/* of summed log-probs chosen c [B], rejected r [B] against the reference's."""
    loss, m = dpo_loss(c, r, torch.tensor(ref_chosen), torch.tensor(ref_rejected), beta)
    out = {"loss": float(loss), **{k: float(v) for k, v in _rename(m).items()},
           "logp_accuracy": float((c > r).float().mean())}
    return {f"eval_pairs/{k}": v for k, v in out.items()}


def _rename(m: dict) -> dict:
    names = {"chosen_reward": "reward/chosen", "rejected_reward": "reward/rejected"}
    return {names.get(k, k): v for k, v in m.items()}


DPOLearnerActor = ray.remote(num_cpus=LEARNER_CPUS, max_restarts=0)(DPOLearner)


class ShardedDPOLearner(ShardedLearner, DPOLearner):
    """One rank of a sharded DPO policy (FSDP2 / DDP as rl/workers/distributed.py): the process group,
    checkpoints and full-weight export of ShardedLearner, DPO's loss. Every forward is a collective,
    so a rank with fewer micro-batches runs the missing ones on a dummy (loss * 0)."""

    def dpo_shard(self, pairs: EncodedPairs, ref_chosen: list[float], ref_rejected: list[float],
                  step_pairs: int) -> dict:
        """One optimizer step; pairs: this rank's whole pairs of a step of `step_pairs` pairs (maybe
        none). -> the single learner's metrics for the whole step (the same on every rank)."""
        self.opt.zero_grad(set_to_none=True)
        chunks = index_chunks(len(pairs), self.microbatch_pairs) if len(pairs) else []
        n_micro = self._max_over_ranks(len(chunks))
        acc: dict[str, float] = {}
        for i in range(n_micro):
            with self._grad_sync(i == n_micro - 1):
                loss = self._micro_loss(pairs, chunks[i], ref_chosen, ref_rejected, step_pairs, acc) \
                    if i < len(chunks) else self._idle_loss()
                (loss * self.world_size).backward()  # the wrappers average over ranks; we want the sum
        grad_norm = self._clip_and_step(self.max_grad_norm)
        return {**_rename(self._sum_over_ranks(acc)), "grad_norm": grad_norm, "lr": self.sched.get_last_lr()[0]}

    def sequence_logps_shard(self, pairs: EncodedPairs) -> tuple[list[float], list[float]]:
        """Summed log-probs of this rank's pairs (no grad), in step with the other ranks' forwards."""
        chunks = index_chunks(len(pairs), self.microbatch_pairs) if len(pairs) else []
        chosen, rejected = [], []
        with torch.no_grad():
            for i in range(self._max_over_ranks(len(chunks))):
                if i >= len(chunks):
                    self._idle_loss()
                    continue
                c, r = self.sequence_logps(pairs.select(chunks[i]))
                chosen += c.tolist()
                rejected += r.tolist()
        return chosen, rejected


ShardedDPOLearnerActor = ray.remote(num_cpus=LEARNER_CPUS, max_restarts=0)(ShardedDPOLearner)
