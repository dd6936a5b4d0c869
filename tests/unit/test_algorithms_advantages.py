"""Advantage estimators: hand-computed values, unequal and size-1 groups, registry contract."""
import math

import pytest
import torch

from algorithms.advantages import (ADVANTAGE_ESTIMATORS, dr_grpo_advantages, grpo_advantages,
                                   reinforce_pp_baseline_advantages, rloo_advantages)
from algorithms.registry import UnknownNameError

D = torch.float64
# Groups, shuffled: id 0 = {1, 0, 0, 1} (size 4), id 9 = {2, 1} (size 2), id 5 = {0.5} (size 1),
# id 4 = {1, 0, 0} (size 3).
IDS = torch.tensor([9, 0, 5, 0, 9, 0, 0, 4, 4, 4])
R = torch.tensor([2.0, 1.0, 0.5, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0], dtype=D)
S2 = math.sqrt(2)


def test_grpo_hand_computed():
    # id 0: mean .5, pop std .5 -> (1-.5)/.5 = 1, (0-.5)/.5 = -1
    # id 9: mean 1.5, pop std .5 -> +1, -1
    # id 5: size 1 -> 0 (0 / (0 + eps))
    # id 4: mean 1/3, pop var (4/9 + 1/9 + 1/9)/3 = 2/9, std sqrt(2)/3:
    #       (2/3)/(sqrt(2)/3) = sqrt(2);  (-1/3)/(sqrt(2)/3) = -1/sqrt(2)
    expected = torch.tensor([1, 1, 0, -1, -1, -1, 1, S2, -1 / S2, -1 / S2], dtype=D)
    torch.testing.assert_close(grpo_advantages(R, IDS), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ADVANTAGE_ESTIMATORS.get("grpo")(R, IDS), expected,
                               atol=1e-5, rtol=1e-5)


def test_grpo_eps_is_added_to_std():
    # single group {1, 0}: std .5, eps .5 -> (.5)/(.5 + .5) = .5
    out = grpo_advantages(torch.tensor([1.0, 0.0]), torch.tensor([3, 3]), eps=0.5)
    torch.testing.assert_close(out, torch.tensor([0.5, -0.5]))


def test_dr_grpo_hand_computed():
    # r - group mean, no std: id 0 +-.5, id 9 +-.5, id 5 0, id 4 {2/3, -1/3, -1/3}
    expected = torch.tensor([.5, .5, 0, -.5, -.5, -.5, .5, 2 / 3, -1 / 3, -1 / 3], dtype=D)
    torch.testing.assert_close(dr_grpo_advantages(R, IDS), expected)
    torch.testing.assert_close(grpo_advantages(R, IDS, norm_by_std=False), expected)
    torch.testing.assert_close(ADVANTAGE_ESTIMATORS.get("dr_grpo")(R, IDS), expected)


def test_rloo_hand_computed_and_leave_one_out_identity():
    # id 0 (G=4): 4/3 * (+-.5) = +-2/3; check: 1 - mean(0, 0, 1) = 2/3, 0 - mean(1, 0, 1) = -2/3
    # id 9 (G=2): 2 * (+-.5) = +-1;     check: 2 - 1 = 1
    # id 5 (G=1): 0 (no baseline)
    # id 4 (G=3): 3/2 * {2/3, -1/3, -1/3} = {1, -.5, -.5}; check: 1 - mean(0, 0) = 1
    expected = torch.tensor([1, 2 / 3, 0, -2 / 3, -1, -2 / 3, 2 / 3, 1, -.5, -.5], dtype=D)
    torch.testing.assert_close(rloo_advantages(R, IDS), expected)
    # slow leave-one-out loop on the same data
    slow = []
    for i, (r, g) in enumerate(zip(R.tolist(), IDS.tolist())):
        others = [R[j].item() for j in range(len(R)) if IDS[j] == g and j != i]
        slow.append(r - sum(others) / len(others) if others else 0.0)
    torch.testing.assert_close(rloo_advantages(R, IDS), torch.tensor(slow, dtype=D))


def test_reinforce_pp_baseline_hand_computed():
    r = torch.tensor([1.0, 0.0, 2.0, 2.0, 3.0], dtype=D)
    ids = torch.tensor([0, 0, 1, 1, 2])
    # a = r - group mean = [.5, -.5, 0, 0, 0]; batch mean 0;
    # pop std = sqrt((.25 + .25) / 5) = sqrt(.1) -> .5 / sqrt(.1) = 1.5811388
    k = 0.5 / math.sqrt(0.1)
    out = reinforce_pp_baseline_advantages(r, ids)
    torch.testing.assert_close(out, torch.tensor([k, -k, 0, 0, 0], dtype=D), atol=1e-5, rtol=1e-5)
    assert out.mean().abs() < 1e-12
    assert out.pow(2).mean().sqrt().item() == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(ADVANTAGE_ESTIMATORS.get("reinforce_pp_baseline")(r, ids), out)


def test_slow_loop_parity_grpo_random():
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 12, (150,), generator=gen) * 7
    r = torch.randint(0, 3, (150,), generator=gen).to(D) / 2
    slow = []
    for i in range(150):
        xs = [r[j].item() for j in range(150) if ids[j] == ids[i]]
        m = sum(xs) / len(xs)
        s = math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))
        slow.append((r[i].item() - m) / (s + 1e-6))
    torch.testing.assert_close(grpo_advantages(r, ids), torch.tensor(slow, dtype=D))


def test_registry_names_and_typo():
    assert ADVANTAGE_ESTIMATORS.names() == ["dr_grpo", "grpo", "reinforce_pp_baseline", "rloo"]
    with pytest.raises(UnknownNameError, match="did you mean 'grpo'") as err:
        ADVANTAGE_ESTIMATORS.get("grpoo")
    assert "rloo" in str(err.value)


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"])
def test_contract_permutation_relabel_and_no_mutation(name):
    fn = ADVANTAGE_ESTIMATORS.get(name)
    r, ids = R.clone(), IDS.clone()
    out = fn(r, ids, eps=1e-6)
    assert out.shape == R.shape and out.dtype == R.dtype
    assert torch.equal(r, R) and torch.equal(ids, IDS)
    # permuting samples permutes advantages; relabelling groups changes nothing
    perm = torch.randperm(len(R), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(fn(R[perm], IDS[perm]), out[perm])
    torch.testing.assert_close(fn(R, IDS * 1000 - 7), out)
    # all-equal rewards -> zero advantage everywhere
    assert torch.all(fn(torch.ones(6), torch.tensor([0, 0, 1, 1, 1, 2])) == 0)


def test_integer_rewards_and_bad_shapes():
    out = grpo_advantages(torch.tensor([1, 0]), torch.tensor([0, 0]))
    assert out.dtype.is_floating_point
    with pytest.raises(ValueError, match="1-D"):
        grpo_advantages(torch.zeros(2, 2), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="num_samples"):
        rloo_advantages(torch.zeros(3), torch.tensor([0, 0]))
