"""Segment and masked reductions: hand-computed values, unequal/size-1 groups, slow-loop parity."""
import math

import pytest
import torch

from algorithms.segments import (broadcast_to_samples, group_sizes, masked_mean, masked_sum, masked_whiten,
                                 segment_index, segment_max, segment_mean, segment_min, segment_std,
                                 segment_sum)

D = torch.float64
# Unsorted, non-contiguous ids; sizes 3 (id 7), 2 (id 3), 1 (id 10).
IDS = torch.tensor([7, 3, 7, 10, 3, 7])
VALS = torch.tensor([1.0, 2.0, 3.0, 10.0, 4.0, 5.0], dtype=D)


def test_segment_index_orders_groups_by_sorted_id():
    inverse, num_groups = segment_index(IDS)
    # sorted distinct ids: [3, 7, 10] -> 7 is group 1, 3 is group 0, 10 is group 2
    assert num_groups == 3
    assert inverse.dtype == torch.long
    assert inverse.tolist() == [1, 0, 1, 2, 0, 1]


def test_segment_sum_mean_hand_computed():
    # id 3: 2 + 4 = 6; id 7: 1 + 3 + 5 = 9; id 10: 10
    assert segment_sum(VALS, IDS).tolist() == [6.0, 9.0, 10.0]
    # means: 6/2 = 3, 9/3 = 3, 10/1 = 10
    assert segment_mean(VALS, IDS).tolist() == [3.0, 3.0, 10.0]


def test_segment_std_population_and_unbiased():
    # id 3: {2, 4}, mean 3, squared devs {1, 1}: pop var 2/2 = 1, unbiased 2/1 = 2
    # id 7: {1, 3, 5}, mean 3, squared devs {4, 0, 4}: pop var 8/3, unbiased 8/2 = 4
    # id 10: size 1 -> 0 for both
    pop = segment_std(VALS, IDS)
    torch.testing.assert_close(pop, torch.tensor([1.0, math.sqrt(8 / 3), 0.0], dtype=D))
    unb = segment_std(VALS, IDS, unbiased=True)
    torch.testing.assert_close(unb, torch.tensor([math.sqrt(2), 2.0, 0.0], dtype=D))
    assert not torch.isnan(unb).any()


def test_segment_min_max():
    assert segment_max(VALS, IDS).tolist() == [4.0, 5.0, 10.0]
    assert segment_min(VALS, IDS).tolist() == [2.0, 1.0, 10.0]


def test_broadcast_and_group_sizes():
    per_group = torch.tensor([30.0, 70.0, 100.0])  # for ids 3, 7, 10
    assert broadcast_to_samples(per_group, IDS).tolist() == [70.0, 30.0, 70.0, 100.0, 30.0, 70.0]
    assert group_sizes(IDS).tolist() == [3, 2, 3, 1, 2, 3]
    with pytest.raises(ValueError, match="distinct groups"):
        broadcast_to_samples(torch.zeros(2), IDS)


def test_trailing_dims_reduce_per_column():
    vals = torch.stack([VALS, 2 * VALS], dim=1)  # [6, 2]
    assert segment_sum(vals, IDS).tolist() == [[6.0, 12.0], [9.0, 18.0], [10.0, 20.0]]
    torch.testing.assert_close(segment_std(vals, IDS)[:, 1], 2 * segment_std(VALS, IDS))


def test_negative_and_huge_ids():
    ids = torch.tensor([-5, 2**40, -5, 0])
    vals = torch.tensor([1.0, 2.0, 3.0, 4.0])
    # sorted ids: -5, 0, 2**40
    assert segment_sum(vals, ids).tolist() == [4.0, 4.0, 2.0]
    assert group_sizes(ids).tolist() == [2, 1, 2, 1]


def test_slow_loop_parity_random_groups():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 9, (200,), generator=gen) * 13 - 40  # uneven sizes, gaps in ids
    vals = torch.randn(200, generator=gen, dtype=D)
    uniq = sorted(set(ids.tolist()))
    exp_sum, exp_mean, exp_std = [], [], []
    for g in uniq:
        xs = [v for v, i in zip(vals.tolist(), ids.tolist()) if i == g]
        m = sum(xs) / len(xs)
        exp_sum.append(sum(xs))
        exp_mean.append(m)
        exp_std.append(math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs)))
    torch.testing.assert_close(segment_sum(vals, ids), torch.tensor(exp_sum, dtype=D))
    torch.testing.assert_close(segment_mean(vals, ids), torch.tensor(exp_mean, dtype=D))
    torch.testing.assert_close(segment_std(vals, ids), torch.tensor(exp_std, dtype=D))


def test_std_is_stable_with_large_offset_in_fp32():
    # E[x^2] - E[x]^2 would lose these +-1 deviations entirely at 1e4 in fp32.
    vals = torch.tensor([1e4 + 1, 1e4 - 1, 1e4 + 1, 1e4 - 1], dtype=torch.float32)
    torch.testing.assert_close(segment_std(vals, torch.zeros(4, dtype=torch.long)),
                               torch.tensor([1.0]))


def test_bad_inputs_raise():
    with pytest.raises(TypeError):
        segment_sum(VALS, IDS.double())
    with pytest.raises(ValueError, match="num_samples"):
        segment_sum(VALS[:3], IDS)
    with pytest.raises(ValueError, match="1-D"):
        segment_index(IDS.reshape(2, 3))


def test_masked_sum_and_mean_hand_computed():
    x = torch.tensor([[1.0, 3.0, 9.0], [2.0, 100.0, float("inf")]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # masked-out inf/100 must not leak: row sums 1+3 = 4 and 2
    assert masked_sum(x, mask, dim=-1).tolist() == [4.0, 2.0]
    assert masked_mean(x, mask, dim=-1).tolist() == [2.0, 2.0]
    assert masked_mean(x, mask).item() == pytest.approx(6.0 / 3)  # (1 + 3 + 2) / 3
    assert masked_mean(x, mask.bool(), dim=0).tolist() == [1.5, 3.0, 0.0]  # empty column -> 0


def test_masked_whiten_hand_computed():
    x = torch.tensor([1.0, 5.0, 7.0], dtype=D)
    mask = torch.tensor([True, True, False])
    # unmasked {1, 5}: mean 3, population var 4, std 2 -> {-2/2, 2/2} = {-1, 1}; masked -> 0
    torch.testing.assert_close(masked_whiten(x, mask), torch.tensor([-1.0, 1.0, 0.0], dtype=D))
    # scale only: (x - 3) / 2 + 3 = {2, 4}
    torch.testing.assert_close(masked_whiten(x, mask, shift_mean=False),
                               torch.tensor([2.0, 4.0, 0.0], dtype=D))


def test_inputs_not_mutated():
    vals, ids = VALS.clone(), IDS.clone()
    x = torch.tensor([[1.0, 3.0], [2.0, 5.0]])
    mask = torch.tensor([[1, 0], [1, 1]])
    x0, m0 = x.clone(), mask.clone()
    for fn in (segment_sum, segment_mean, segment_std, segment_max, segment_min):
        fn(vals, ids)
    group_sizes(ids)
    broadcast_to_samples(torch.ones(3), ids)
    masked_mean(x, mask)
    masked_whiten(x, mask)
    assert torch.equal(vals, VALS) and torch.equal(ids, IDS)
    assert torch.equal(x, x0) and torch.equal(mask, m0)
