"""Loss aggregation: hand-computed values per mode and micro-batch invariance with global counts."""
import pytest
import torch

from algorithms.aggregation import LOSS_AGGREGATIONS, aggregate_loss, loss_normalizers
from algorithms.registry import UnknownNameError

D = torch.float64
MODES = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]
# Row 0: tokens {1, 3}; row 1: token {5}; the masked entry holds 100 and must never count.
L = torch.tensor([[1.0, 3.0], [5.0, 100.0]], dtype=D)
M = torch.tensor([[1, 1], [1, 0]])


def test_registry_holds_exactly_the_four_modes():
    assert LOSS_AGGREGATIONS.names() == sorted(MODES)


@pytest.mark.parametrize("mode,expected", [
    ("token-mean", 9 / 3),                          # (1 + 3 + 5) / 3 tokens = 3
    ("seq-mean-token-mean", (2 + 5) / 2),           # row means 4/2 = 2 and 5/1 = 5 -> 3.5
    ("seq-mean-token-sum", (4 + 5) / 2),            # row sums 4 and 5 -> 4.5
    ("seq-mean-token-sum-norm", (4 / 4 + 5 / 4) / 2),  # row sums / max_len 4 -> 1.125
])
def test_hand_computed(mode, expected):
    out = aggregate_loss(L, M, mode, max_len=4)
    assert out.dim() == 0
    assert out.item() == pytest.approx(expected)


def test_row_without_tokens_is_not_a_sequence():
    per_token = torch.tensor([[1.0, 3.0], [7.0, 7.0]])
    mask = torch.tensor([[True, True], [False, False]])
    assert loss_normalizers(mask) == (2.0, 1.0)
    assert aggregate_loss(per_token, mask, "token-mean").item() == 2.0          # 4 / 2
    assert aggregate_loss(per_token, mask, "seq-mean-token-mean").item() == 2.0  # 2 / 1 seq
    assert aggregate_loss(per_token, mask, "seq-mean-token-sum").item() == 4.0   # 4 / 1 seq
    # an all-empty micro-batch contributes 0, not NaN
    assert aggregate_loss(per_token, torch.zeros_like(mask), "token-mean").item() == 0.0


def _batch():
    gen = torch.Generator().manual_seed(0)
    per_token = torch.randn(8, 6, generator=gen, dtype=D)
    lengths = torch.tensor([6, 1, 3, 0, 5, 2, 6, 4])  # right padding, one empty row
    mask = torch.arange(6)[None, :] < lengths[:, None]
    return per_token, mask


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("micro_batch_size", [8, 4, 1])
def test_micro_batch_invariance(mode, micro_batch_size):
    """1 x 8 == 2 x 4 == 8 x 1 when each call gets the global counts of the full batch."""
    per_token, mask = _batch()
    full = aggregate_loss(per_token, mask, mode, max_len=6)
    num_tokens, num_seqs = loss_normalizers(mask)
    assert (num_tokens, num_seqs) == (27.0, 7.0)  # 6+1+3+0+5+2+6+4 tokens, one row empty
    total = torch.zeros((), dtype=D)
    for start in range(0, 8, micro_batch_size):
        mb = slice(start, start + micro_batch_size)
        # each micro-batch is trimmed to its own padded width, as a collator would do
        width = max(int(mask[mb].sum(-1).max()), 1)
        total = total + aggregate_loss(per_token[mb, :width], mask[mb, :width], mode, max_len=6,
                                       num_tokens=num_tokens, num_seqs=num_seqs)
    torch.testing.assert_close(total, full)


def test_micro_batch_gradients_accumulate_to_full_batch_gradient():
    per_token, mask = _batch()
    w_full = torch.ones(8, 6, dtype=D, requires_grad=True)
    aggregate_loss(per_token * w_full, mask, "seq-mean-token-mean").backward()
    num_tokens, num_seqs = loss_normalizers(mask)
    w_acc = torch.ones(8, 6, dtype=D, requires_grad=True)
    for start in range(0, 8, 4):
        mb = slice(start, start + 4)
        aggregate_loss(per_token[mb] * w_acc[mb], mask[mb], "seq-mean-token-mean",
                       num_tokens=num_tokens, num_seqs=num_seqs).backward()
    torch.testing.assert_close(w_acc.grad, w_full.grad)


def test_local_counts_alone_would_break_token_mean():
    # why the global counts exist: micro-batch means of unequal token counts do not add up
    per_token, mask = _batch()
    full = aggregate_loss(per_token, mask, "token-mean")
    halves = sum(aggregate_loss(per_token[s], mask[s], "token-mean") / 2
                 for s in (slice(0, 4), slice(4, 8)))
    assert not torch.allclose(halves, full)


def test_errors_explain_themselves():
    with pytest.raises(UnknownNameError) as err:
        aggregate_loss(L, M, "token_mean")
    for mode in MODES:
        assert mode in str(err.value)
    with pytest.raises(ValueError, match="max_len"):
        aggregate_loss(L, M, "seq-mean-token-sum-norm")
    with pytest.raises(ValueError, match="num_samples, max_len"):
        aggregate_loss(L, M[:, :1], "token-mean")


def test_inputs_not_mutated():
    per_token, mask = _batch()
    p0, m0 = per_token.clone(), mask.clone()
    for mode in MODES:
        aggregate_loss(per_token, mask, mode, max_len=6)
    assert torch.equal(per_token, p0) and torch.equal(mask, m0)
