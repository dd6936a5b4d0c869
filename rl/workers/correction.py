"""`algorithm.rollout_correction` at the learner: the proximal log-probs and the corrected batch.

At the start of a train step the learner recomputes, without gradients (`Learner.proximal_logprobs`), the log-probs of the batch's
sampled tokens under its current weights (the proximal policy pi_old); the registered correction
(algorithms/rollout_correction.py) compares them with the engine's (the behaviour policy pi_b) and
says what the policy loss's ratio is taken against (`RolloutBatch.old_logprobs`) and how each token's
loss is weighted (`RolloutBatch.loss_weights`). `none` skips the recompute: the learner's loss is then
the uncorrected one, bit for bit.

A sharded learner's ranks each correct their own rows; the forwards are collective (FSDP2 gathers the
parameters), so a rank with fewer micro-batches runs idle forwards, and the metrics are computed over
the tokens of all ranks (gathered).
"""
from __future__ import annotations

import dataclasses
from functools import partial

import torch

from algorithms.rollout_correction import ROLLOUT_CORRECTIONS, mismatch_metrics
from rl.types import RolloutBatch


def correction_from(name: str, params: dict | None):
    """The registered correction with its params bound, or None for `none` (no recompute)."""
    fn = ROLLOUT_CORRECTIONS.get(name)
    return None if name == "none" else partial(fn, **(params or {}))


def corrected(batch: RolloutBatch, prox: torch.Tensor, correction) -> tuple[RolloutBatch, object]:
    """The batch with `old_logprobs` and `loss_weights` from `correction(prox, engine, mask)`."""
    c = correction(prox, batch.logprobs, batch.train_mask)
    return dataclasses.replace(batch, old_logprobs=c.old_logprobs, loss_weights=c.weights), c


def correct_batch(learner, batch: RolloutBatch) -> tuple[RolloutBatch, dict[str, float]]:
    """A single learner: the whole batch corrected once per train step. -> (batch, mismatch metrics)"""
    if learner.correction is None:
        return batch, {}
    batch, c = corrected(batch, learner.proximal_logprobs(batch), learner.correction)
    return batch, c.metrics


def correct_parts(learner, parts: list) -> tuple[list, dict[str, float]]:
    """A sharded rank's minibatch parts [(batch, advantages) | None] corrected; the metrics over the
    tokens of every rank (the same dict on each rank)."""
    import torch.distributed as dist
    if learner.correction is None:
        return parts, {}
    counts = [0 if p is None else len(p[0].chunks(learner.microbatch_samples)) for p in parts]
    most = [0] * learner.world_size
    dist.all_gather_object(most, counts)
    out, mine = [], []
    for i, part in enumerate(parts):
        n = max(c[i] for c in most)
        if part is None:
            for _ in range(n):
                _idle_forward(learner)
            out.append(None)
            continue
        batch, c = corrected(part[0], learner.proximal_logprobs(part[0], lambda: _idle_forward(learner), n),
                             learner.correction)
        out.append((batch, part[1]))
        m = batch.train_mask.bool()
        mine.append(torch.stack([c.old_logprobs[m], batch.logprobs[m], c.weights[m], c.kept[m].float()]))
    return out, _gathered_metrics(mine, learner.world_size)


def _idle_forward(learner) -> None:
    with torch.no_grad():
        learner._idle_loss()


def _gathered_metrics(mine: list[torch.Tensor], world_size: int) -> dict[str, float]:
    import torch.distributed as dist
    local = torch.cat(mine, dim=1) if mine else torch.zeros(4, 0)
    every: list = [None] * world_size
    dist.all_gather_object(every, local)
    rows = torch.cat(every, dim=1)
    if rows.shape[1] == 0:
        return {}
    lp, ep, w, kept = (r.unsqueeze(0) for r in rows)
    return mismatch_metrics(lp, ep, torch.ones_like(lp, dtype=torch.bool), w, kept.bool())
