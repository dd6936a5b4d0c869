"""explained_variance: hand-computed values, masking, the constant-target case."""
import math

import pytest
import torch

from algorithms.metrics import explained_variance


def test_explained_variance_hand_computed():
    t = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(t, t) == 1.0
    assert explained_variance(torch.zeros(4), t) == pytest.approx(0.0)  # Var[t - 0] / Var[t] = 1
    # pred [1, 1, 3, 3]: resid [0, 1, 0, 1], Var = .25; Var[t] = 1.25 (population) -> 1 - .2 = .8
    assert explained_variance(torch.tensor([1.0, 1.0, 3.0, 3.0]), t) == pytest.approx(0.8)
    # a constant offset is not penalised (variance of the residual): pred = t + 5 -> 1
    assert explained_variance(t + 5, t) == pytest.approx(1.0)
    # worse than the mean: pred = -t, resid 2t, Var = 4 * 1.25 -> 1 - 4 = -3
    assert explained_variance(-t, t) == pytest.approx(-3.0)
    assert math.isnan(explained_variance(t, torch.ones(4)))


def test_explained_variance_ignores_masked_entries():
    # [S, T] token values with padding; the padded entries hold garbage that must not count
    pred = torch.tensor([[1.0, 1.0, 99.0], [3.0, 3.0, -50.0]])
    target = torch.tensor([[1.0, 2.0, 7.0], [3.0, 4.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    assert explained_variance(pred, target, mask) == pytest.approx(0.8)  # the case above
    assert explained_variance(pred, target, mask.bool()) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="pred"):
        explained_variance(pred[:, :2], target)
