"""DAPO overlong shaping and dynamic-sampling filter: hand-computed values."""
import pytest
import torch

from algorithms.advantages import grpo_advantages
from algorithms.dapo import informative_group_mask, informative_groups, overlong_penalty


def test_overlong_penalty_hand_computed():
    # L_max 20, L_cache 4 -> soft zone (16, 20]; ((20 - 4) - |y|) / 4
    # 0 -> 0; 16 -> 0; 17 -> -1/4; 18 -> -2/4; 20 -> -4/4; 21 -> -1 (beyond); 100 -> -1
    lengths = torch.tensor([0, 16, 17, 18, 20, 21, 100])
    out = overlong_penalty(lengths, max_len=20, cache_len=4)
    assert out.dtype.is_floating_point
    torch.testing.assert_close(out, torch.tensor([0.0, 0.0, -0.25, -0.5, -1.0, -1.0, -1.0]))
    assert torch.equal(lengths, torch.tensor([0, 16, 17, 18, 20, 21, 100]))


def test_overlong_penalty_edges():
    # cache 0: hard cut at max_len
    torch.testing.assert_close(overlong_penalty(torch.tensor([20, 21]), 20, 0),
                               torch.tensor([0.0, -1.0]))
    # float lengths: 19 in (16, 20] -> (16 - 19) / 4 = -.75
    torch.testing.assert_close(overlong_penalty(torch.tensor([19.0], dtype=torch.float64), 20, 4),
                               torch.tensor([-0.75], dtype=torch.float64))
    with pytest.raises(ValueError, match="cache_len"):
        overlong_penalty(torch.tensor([1]), 20, 25)


# id 4: {1, 1} equal; id 9: {0, 1} informative; id 1: size 1; id 3: {2, 2, 2} equal;
# id 8: {0, 1e-10} equal within atol 1e-8
IDS = torch.tensor([4, 9, 4, 9, 1, 3, 3, 3, 8, 8])
R = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.5, 2.0, 2.0, 2.0, 0.0, 1e-10], dtype=torch.float64)


def test_informative_mask_and_groups():
    mask = informative_group_mask(R, IDS)
    assert mask.dtype == torch.bool
    assert mask.tolist() == [False, True, False, True, False, False, False, False, False, False]
    assert list(informative_groups(R, IDS)) == [9]
    # with atol 0 the 1e-10 spread counts
    assert list(informative_groups(R, IDS, atol=0.0)) == [8, 9]
    assert informative_group_mask(R, IDS, atol=0.0).tolist()[-2:] == [True, True]


def test_informative_matches_nonzero_grpo_advantage():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 20, (120,), generator=gen)
    r = torch.randint(0, 2, (120,), generator=gen).float()
    r0, ids0 = r.clone(), ids.clone()
    adv = grpo_advantages(r, ids)
    mask = informative_group_mask(r, ids)
    assert torch.equal(mask, adv != 0)
    assert set(informative_groups(r, ids)) == set(ids[mask].tolist())
    assert torch.equal(r, r0) and torch.equal(ids, ids0)
