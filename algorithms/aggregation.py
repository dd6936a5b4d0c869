"""Loss aggregation: per-token loss [N, T] + mask -> scalar. One function, one place (SPECS §1).

Micro-batching. When a step's batch is split into micro-batches whose gradients are accumulated,
pass the GLOBAL normalisers of the whole batch (``loss_normalizers(full_mask)``) as ``num_tokens``
and ``num_seqs`` to every micro-batch call; then

    sum over micro-batches of aggregate_loss(mb) == aggregate_loss(full batch)

for every mode, whatever the split or the padding of each micro-batch. Without them each call
normalises by its own counts (right for a single, unsplit batch). With data parallelism, sum the
counts over ranks as well and the sum of the ranks' losses is the global loss (DDP averages grads,
so scale by world size accordingly).

Sequence counts: a sequence with no unmasked token contributes nothing and is not counted.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from algorithms.registry import Registry
from algorithms.segments import masked_sum

__all__ = ["LOSS_AGGREGATIONS", "aggregate_loss", "loss_normalizers"]

AggregationFn = Callable[..., Tensor]
LOSS_AGGREGATIONS: Registry = Registry("loss aggregation")


def loss_normalizers(mask: Tensor) -> tuple[float, float]:
    """Global counts to pass to every micro-batch: (num_tokens, num_seqs).

    num_tokens = sum(mask); num_seqs = #rows with at least one unmasked token.
    Shapes: mask [N, T] -> (float, float).
    Example: loss_normalizers(tensor([[1, 1], [0, 0], [1, 0]])) -> (3.0, 2.0)
    """
    m = mask.bool()
    return float(m.sum()), float(m.any(dim=-1).sum())


def _local_seqs(mask: Tensor) -> Tensor:
    return mask.any(dim=-1).sum()


def _divide(total: Tensor, count: float | Tensor) -> Tensor:
    count = torch.as_tensor(count, dtype=total.dtype, device=total.device)
    return total / count.clamp_min(1)


@LOSS_AGGREGATIONS.register("token-mean")
def token_mean(per_token: Tensor, mask: Tensor, max_len: int | None = None,
               num_tokens: float | None = None, num_seqs: float | None = None) -> Tensor:
    """L = sum_{i,t} m_it l_it / sum_{i,t} m_it  (all tokens weigh the same; DAPO, Yu et al. 2025).

    Shapes: per_token, mask [N, T] -> scalar.
    Example: token_mean(tensor([[1., 3.], [5., 0.]]), tensor([[1, 1], [1, 0]])) -> 9/3 = 3.
    """
    total = masked_sum(per_token, mask)
    return _divide(total, mask.sum() if num_tokens is None else num_tokens)


@LOSS_AGGREGATIONS.register("seq-mean-token-mean")
def seq_mean_token_mean(per_token: Tensor, mask: Tensor, max_len: int | None = None,
                        num_tokens: float | None = None, num_seqs: float | None = None) -> Tensor:
    """L = (1/N) sum_i [ sum_t m_it l_it / sum_t m_it ]  (GRPO paper, Shao et al. 2024).

    Shapes: per_token, mask [N, T] -> scalar.
    Example: seq_mean_token_mean(tensor([[1., 3.], [5., 0.]]), tensor([[1, 1], [1, 0]]))
             -> (2 + 5) / 2 = 3.5
    """
    seq_len = mask.sum(dim=-1).clamp_min(1).to(per_token.dtype)
    per_seq = masked_sum(per_token, mask, dim=-1) / seq_len
    return _divide(per_seq.sum(), _local_seqs(mask) if num_seqs is None else num_seqs)


@LOSS_AGGREGATIONS.register("seq-mean-token-sum")
def seq_mean_token_sum(per_token: Tensor, mask: Tensor, max_len: int | None = None,
                       num_tokens: float | None = None, num_seqs: float | None = None) -> Tensor:
    """L = (1/N) sum_i sum_t m_it l_it  (longer sequences weigh more).

    Shapes: per_token, mask [N, T] -> scalar.
    Example: seq_mean_token_sum(tensor([[1., 3.], [5., 0.]]), tensor([[1, 1], [1, 0]]))
             -> (4 + 5) / 2 = 4.5
    """
    per_seq = masked_sum(per_token, mask, dim=-1)
    return _divide(per_seq.sum(), _local_seqs(mask) if num_seqs is None else num_seqs)


@LOSS_AGGREGATIONS.register("seq-mean-token-sum-norm")
def seq_mean_token_sum_norm(per_token: Tensor, mask: Tensor, max_len: int | None = None,
                            num_tokens: float | None = None,
                            num_seqs: float | None = None) -> Tensor:
    """L = (1/N) sum_i [ sum_t m_it l_it / L_max ]  (Dr.GRPO, Liu et al. 2025: a constant length
    normaliser removes the length bias). L_max = `max_len`, the max generation length (required:
    the padded width of a micro-batch is not a constant).

    Shapes: per_token, mask [N, T] -> scalar.
    Example: seq_mean_token_sum_norm(tensor([[1., 3.], [5., 0.]]), tensor([[1, 1], [1, 0]]),
             max_len=4) -> (4/4 + 5/4) / 2 = 1.125
    """
    if max_len is None or max_len <= 0:
        raise ValueError("loss aggregation 'seq-mean-token-sum-norm' needs max_len > 0 "
                         f"(the max generation length, e.g. max_new_tokens); got {max_len!r}")
    per_seq = masked_sum(per_token, mask, dim=-1) / max_len
    return _divide(per_seq.sum(), _local_seqs(mask) if num_seqs is None else num_seqs)


def aggregate_loss(per_token: Tensor, mask: Tensor, mode: str, max_len: int | None = None,
                   num_tokens: float | None = None, num_seqs: float | None = None) -> Tensor:
    """Reduce a per-token loss to a scalar with the aggregation `mode` (a LOSS_AGGREGATIONS name):

        token-mean               sum(m*l) / num_tokens
        seq-mean-token-mean      sum_i [sum_t m*l / sum_t m] / num_seqs
        seq-mean-token-sum       sum_i [sum_t m*l] / num_seqs
        seq-mean-token-sum-norm  sum_i [sum_t m*l / max_len] / num_seqs       (Dr.GRPO)

    num_tokens / num_seqs: GLOBAL counts over the whole (split) batch, see the module docstring;
    None = this call's own counts. Unknown mode -> UnknownNameError listing the valid modes.

    Shapes: per_token [N, T], mask [N, T] (bool or 0/1) -> scalar.
    Example: aggregate_loss(l, m, "token-mean", num_tokens=1024.)
    """
    fn = LOSS_AGGREGATIONS.get(mode)
    if per_token.shape != mask.shape or per_token.dim() != 2:
        raise ValueError(f"per_token {tuple(per_token.shape)} and mask {tuple(mask.shape)} must "
                         "both be [num_samples, max_len]")
    return fn(per_token, mask, max_len=max_len, num_tokens=num_tokens, num_seqs=num_seqs)
