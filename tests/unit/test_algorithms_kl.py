"""KL estimators k1/k2/k3 and the approx_kl diagnostic: hand-computed values, exact expectations,
clamping."""
import math

import pytest
import torch

from algorithms.kl import KL_ESTIMATORS, approx_kl, kl_penalty
from algorithms.registry import UnknownNameError

D = torch.float64


def test_hand_computed():
    logp = torch.tensor([[-1.0, -2.0, -0.5]], dtype=D)
    ref = torch.tensor([[-2.0, -1.0, -0.5]], dtype=D)
    # x = logp - ref = [1, -1, 0]
    torch.testing.assert_close(kl_penalty(logp, ref, "k1"),
                               torch.tensor([[1.0, -1.0, 0.0]], dtype=D))
    # .5 x^2 = [.5, .5, 0]
    torch.testing.assert_close(kl_penalty(logp, ref, "k2"),
                               torch.tensor([[0.5, 0.5, 0.0]], dtype=D))
    # ref - logp = [-1, 1, 0]: e^-1 + 1 - 1 = 0.367879;  e^1 - 1 - 1 = 0.718282;  1 - 0 - 1 = 0
    torch.testing.assert_close(kl_penalty(logp, ref, "k3"),
                               torch.tensor([[math.exp(-1), math.e - 2, 0.0]], dtype=D))


def test_k1_and_k3_are_unbiased_in_expectation():
    # exact expectation over a 4-token vocabulary under pi: E_pi[k1] = E_pi[k3] = KL(pi || ref)
    pi = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=D)
    ref = torch.tensor([0.25, 0.25, 0.4, 0.1], dtype=D)
    kl = (pi * (pi / ref).log()).sum()
    for kind in ("k1", "k3"):
        est = (pi * kl_penalty(pi.log(), ref.log(), kind)).sum()
        torch.testing.assert_close(est, kl)
    # k2 is biased but non-negative
    assert (kl_penalty(pi.log(), ref.log(), "k2") >= 0).all()
    assert (kl_penalty(pi.log(), ref.log(), "k3") >= 0).all()


def test_log_ratio_is_clamped():
    logp = torch.tensor([[50.0, -50.0]])
    ref = torch.zeros(1, 2)
    torch.testing.assert_close(kl_penalty(logp, ref, "k1"), torch.tensor([[20.0, -20.0]]))
    torch.testing.assert_close(kl_penalty(logp, ref, "k2"), torch.tensor([[200.0, 200.0]]))
    k3 = kl_penalty(logp, ref, "k3")
    # x = 20: e^-20 + 20 - 1 ~ 19;  x = -20: e^20 - 20 - 1, finite
    assert torch.isfinite(k3).all()
    assert k3[0, 0].item() == pytest.approx(19.0, abs=1e-6)
    assert k3[0, 1].item() == pytest.approx(math.exp(20) - 21, rel=1e-6)


def test_registry_and_errors():
    assert KL_ESTIMATORS.names() == ["k1", "k2", "k3"]
    with pytest.raises(UnknownNameError, match="k1, k2, k3"):
        kl_penalty(torch.zeros(1, 1), torch.zeros(1, 1), "k4")
    with pytest.raises(ValueError):
        kl_penalty(torch.zeros(1, 2), torch.zeros(1, 3), "k1")


def test_gradient_of_k3_and_no_mutation():
    logp = torch.tensor([[-1.0, -0.2]], dtype=D, requires_grad=True)
    ref = torch.tensor([[-1.5, -0.2]], dtype=D)
    ref0 = ref.clone()
    kl_penalty(logp, ref, "k3").sum().backward()
    # d/dlogp [e^(ref-logp) - (ref-logp) - 1] = -e^(ref-logp) + 1: [1 - e^-.5, 0]
    torch.testing.assert_close(logp.grad, torch.tensor([[1 - math.exp(-0.5), 0.0]], dtype=D))
    assert torch.equal(ref, ref0)


def test_approx_kl_hand_computed():
    # r = pi/pi_old = [2, .5, 1, e^10]; per token (r - 1) - log r:
    #   r 2 : 1 - log 2 = .306853;   r .5 : -.5 + log 2 = .193147;   r 1 : 0
    # masked [1, 1, 1, 0]: (.306853 + .193147 + 0) / 3 = .5 / 3 (the huge last ratio never counts)
    old = torch.tensor([[-1.0, -1.0], [-1.0, -11.0]], dtype=D)
    logp = old + torch.tensor([[math.log(2), math.log(0.5)], [0.0, 10.0]], dtype=D)
    mask = torch.tensor([[1, 1], [1, 0]])
    assert approx_kl(logp, old, mask).item() == pytest.approx(0.5 / 3)
    assert approx_kl(logp[0], old[0]).item() == pytest.approx(0.25)  # no mask: every entry
    # CleanRL's formula, and the k3 estimator of KL(pi_old || pi_theta)
    r = (logp - old).exp()
    torch.testing.assert_close(approx_kl(logp[0], old[0]), ((r[0] - 1) - (logp[0] - old[0])).mean())
    torch.testing.assert_close(approx_kl(logp, old), kl_penalty(old, logp, "k3").mean())
    assert approx_kl(old, old).item() == 0.0 and approx_kl(logp, old, torch.zeros_like(mask)).item() == 0.0


def test_approx_kl_is_unbiased_for_kl_old_to_new():
    # exact expectation over samples of pi_old: E_old[approx_kl] = KL(pi_old || pi_theta)
    old = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=D)
    new = torch.tensor([0.25, 0.25, 0.4, 0.1], dtype=D)
    per_token = torch.stack([approx_kl(new.log()[i], old.log()[i]) for i in range(4)])
    torch.testing.assert_close((old * per_token).sum(), (old * (old / new).log()).sum())
