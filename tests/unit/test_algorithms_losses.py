"""Clipped surrogate (clip-higher, dual clip), the policy-loss registry, value loss and DPO:
hand-computed values."""
import math

import pytest
import torch

from algorithms.losses import POLICY_LOSSES, clipped_surrogate, dpo_loss, ppo_policy_loss, value_loss
from algorithms.registry import UnknownNameError

D = torch.float64


def _surrogate(ratios, advantages, **kw):
    ratio = torch.tensor([ratios], dtype=D)
    adv = torch.tensor(advantages, dtype=D)
    return clipped_surrogate(ratio.log(), torch.zeros_like(ratio), adv, **kw)


def test_surrogate_positive_advantage_branches():
    # defaults eps_low .2, eps_high .28 -> clip range [.8, 1.28]; A = 1, L = max(-rho, -clip(rho))
    # rho 1.5 : max(-1.5, -1.28) = -1.28  clipped
    # rho 1.1 : max(-1.1, -1.1)  = -1.1   not clipped
    # rho 0.5 : max(-0.5, -0.8)  = -0.5   not clipped (pessimistic bound keeps the unclipped term)
    # rho 1.25: inside [.8, 1.28] -> -1.25
    loss, clipped = _surrogate([1.5, 1.1, 0.5, 1.25], [1.0])
    torch.testing.assert_close(loss, torch.tensor([[-1.28, -1.1, -0.5, -1.25]], dtype=D))
    assert clipped.tolist() == [[True, False, False, False]]
    # A = 2, rho 1.5: -2 * 1.28 = -2.56
    loss, _ = _surrogate([1.5], [2.0])
    torch.testing.assert_close(loss, torch.tensor([[-2.56]], dtype=D))


def test_surrogate_negative_advantage_and_dual_clip():
    # A = -1, L = max(rho, clip(rho)), then dual clip min(L, -A * c) = min(L, 3)
    # rho 0.5: max(.5, .8) = .8     clipped (PPO clip, lower side)
    # rho 1.5: max(1.5, 1.28) = 1.5 not clipped
    # rho 5  : max(5, 1.28) = 5 -> min(5, 3) = 3   dual clip
    loss, clipped = _surrogate([0.5, 1.5, 5.0], [-1.0])
    torch.testing.assert_close(loss, torch.tensor([[0.8, 1.5, 3.0]], dtype=D))
    assert clipped.tolist() == [[True, False, True]]
    # A = -2, rho 4: max(8, 2.56) = 8 -> min(8, 2 * 3 = 6) = 6
    loss, _ = _surrogate([4.0], [-2.0])
    torch.testing.assert_close(loss, torch.tensor([[6.0]], dtype=D))
    # no dual clip: stays 5
    loss, clipped = _surrogate([5.0], [-1.0], dual_clip_c=None)
    torch.testing.assert_close(loss, torch.tensor([[5.0]], dtype=D))
    assert clipped.tolist() == [[False]]
    # dual clip never touches A > 0: rho 5, A = 1 -> max(-5, -1.28) = -1.28
    loss, _ = _surrogate([5.0], [1.0], dual_clip_c=3.0)
    torch.testing.assert_close(loss, torch.tensor([[-1.28]], dtype=D))
    with pytest.raises(ValueError, match="> 1"):
        _surrogate([1.0], [1.0], dual_clip_c=1.0)


def test_clip_higher_asymmetry():
    # A = 1, rho 1.25: eps_high .28 lets it through (-1.25); symmetric .2 clips it (-1.2)
    loss_hi, c_hi = _surrogate([1.25], [1.0], eps_low=0.2, eps_high=0.28)
    loss_sym, c_sym = _surrogate([1.25], [1.0], eps_low=0.2, eps_high=0.2)
    torch.testing.assert_close(loss_hi, torch.tensor([[-1.25]], dtype=D))
    torch.testing.assert_close(loss_sym, torch.tensor([[-1.2]], dtype=D))
    assert (c_hi.item(), c_sym.item()) == (False, True)
    # lower side uses eps_low only: A = -1, rho .75 -> clip at .8 gives .8; eps_low .28 gives .75
    loss_lo, _ = _surrogate([0.75], [-1.0], eps_low=0.2, eps_high=0.28)
    loss_lo2, _ = _surrogate([0.75], [-1.0], eps_low=0.28, eps_high=0.28)
    torch.testing.assert_close(loss_lo, torch.tensor([[0.8]], dtype=D))
    torch.testing.assert_close(loss_lo2, torch.tensor([[0.75]], dtype=D))


def test_surrogate_gradients():
    # d/dlogp of -A*rho = -A*rho where unclipped; 0 where a clip decided the value
    ratio = torch.tensor([[1.5, 1.1, 5.0]], dtype=D)
    logp = ratio.log().requires_grad_()
    adv = torch.tensor([[1.0, 1.0, -1.0]], dtype=D)
    loss, clipped = clipped_surrogate(logp, torch.zeros_like(ratio), adv)
    loss.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -1.1, 0.0]], dtype=D))
    assert clipped.tolist() == [[True, False, True]]
    # on-policy: rho = 1, loss = -A, gradient = -A
    lp = torch.zeros(2, 3, dtype=D, requires_grad=True)
    a = torch.tensor([0.5, -2.0], dtype=D)
    loss, clipped = clipped_surrogate(lp, lp.detach(), a)
    torch.testing.assert_close(loss, -a[:, None].expand(2, 3))
    loss.sum().backward()
    torch.testing.assert_close(lp.grad, -a[:, None].expand(2, 3))
    assert not clipped.any()


def test_advantage_broadcast_and_log_ratio_clamp():
    gen = torch.Generator().manual_seed(0)
    logp, old = torch.randn(3, 5, generator=gen), torch.randn(3, 5, generator=gen)
    adv = torch.randn(3, generator=gen)
    a, ca = clipped_surrogate(logp, old, adv)
    b, cb = clipped_surrogate(logp, old, adv[:, None].expand(3, 5))
    torch.testing.assert_close(a, b)
    assert torch.equal(ca, cb)
    # log-ratio 100 is clamped to 20: with A = -1 and no dual clip the loss is exp(20), finite
    loss, _ = clipped_surrogate(torch.tensor([[100.0]]), torch.zeros(1, 1), torch.tensor([-1.0]),
                                dual_clip_c=None)
    assert torch.isfinite(loss).all()
    assert loss.item() == pytest.approx(math.exp(20), rel=1e-5)


def test_value_loss_hand_computed():
    # eps_v = .5
    # V 2,   Vold 1, R 3: (2-3)^2 = 1; Vclip 1.5 -> 2.25; .5 * 2.25 = 1.125
    # V 1.2, Vold 1, R 0: 1.44; Vclip 1.2 (inside) -> 1.44; .72
    # V 3,   Vold 1, R 3: 0; Vclip 1.5 -> 2.25; 1.125 (clip keeps it pessimistic)
    # V 0,   Vold 1, R 3: 9; Vclip .5 -> 6.25; .5 * 9 = 4.5
    v = torch.tensor([2.0, 1.2, 3.0, 0.0], dtype=D)
    v_old = torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=D)
    ret = torch.tensor([3.0, 0.0, 3.0, 3.0], dtype=D)
    torch.testing.assert_close(value_loss(v, v_old, ret, 0.5),
                               torch.tensor([1.125, 0.72, 1.125, 4.5], dtype=D))
    # no clip: .5 * (V - R)^2 = [.5, .72, 0, 4.5]
    torch.testing.assert_close(value_loss(v, v_old, ret, None),
                               torch.tensor([0.5, 0.72, 0.0, 4.5], dtype=D))
    # works on [T, B]
    assert value_loss(v.reshape(2, 2), v_old.reshape(2, 2), ret.reshape(2, 2), 0.5).shape == (2, 2)


def test_dpo_hand_computed():
    pc = torch.tensor([-1.0, -3.0], dtype=D, requires_grad=True)
    pr = torch.tensor([-2.0, -1.0], dtype=D)
    rc = torch.tensor([-1.5, -2.0], dtype=D)
    rr = torch.tensor([-1.5, -2.0], dtype=D)
    loss, m = dpo_loss(pc, pr, rc, rr, beta=0.1)
    # sample 1: r_w = .1 * (-1 + 1.5) = .05,  r_l = .1 * (-2 + 1.5) = -.05, margin .1
    #           -log sigmoid(.1) = log(1 + e^-.1) = log(1.904837) = 0.644397
    # sample 2: r_w = .1 * (-3 + 2) = -.1,    r_l = .1 * (-1 + 2) = .1,    margin -.2
    #           -log sigmoid(-.2) = log(1 + e^.2) = log(2.221403) = 0.798139
    # mean: (0.644397 + 0.798139) / 2 = 0.721268
    assert loss.item() == pytest.approx(0.721268, abs=1e-6)
    exact = (math.log1p(math.exp(-0.1)) + math.log1p(math.exp(0.2))) / 2
    assert loss.item() == pytest.approx(exact)
    assert m["reward_accuracy"].item() == pytest.approx(0.5)
    assert m["margin"].item() == pytest.approx((0.1 - 0.2) / 2)
    assert m["chosen_reward"].item() == pytest.approx((0.05 - 0.1) / 2)
    assert m["rejected_reward"].item() == pytest.approx((-0.05 + 0.1) / 2)
    assert all(not v.requires_grad for v in m.values())
    # dL/dpc_i = -beta * sigmoid(-margin_i) / B: [-.1 * sigmoid(-.1) / 2, -.1 * sigmoid(.2) / 2]
    loss.backward()
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    torch.testing.assert_close(pc.grad, torch.tensor([-0.1 * sig(-0.1) / 2, -0.1 * sig(0.2) / 2],
                                                     dtype=D))


def test_dpo_beta_zero_and_shape_check():
    z = torch.zeros(3)
    loss, m = dpo_loss(z - 1, z, z, z, beta=0.0)
    assert loss.item() == pytest.approx(math.log(2))  # -log sigmoid(0)
    assert m["reward_accuracy"].item() == 0.0  # ties are not wins
    with pytest.raises(ValueError, match="one shape"):
        dpo_loss(z, z[:2], z, z)


def test_losses_do_not_mutate_inputs():
    gen = torch.Generator().manual_seed(3)
    ts = [torch.randn(4, 6, generator=gen) * 30 for _ in range(3)]  # large: exercises the clamp
    adv = torch.randn(4, generator=gen)
    copies = [t.clone() for t in ts] + [adv.clone()]
    clipped_surrogate(ts[0], ts[1], adv)
    value_loss(ts[0], ts[1], ts[2], 0.2)
    dpo_loss(ts[0][:, 0], ts[1][:, 0], ts[2][:, 0], ts[0][:, 1])
    for before, after in zip(copies, ts + [adv]):
        assert torch.equal(before, after)


CLIP = {"eps_low": 0.2, "eps_high": 0.28, "dual_clip_c": 3.0}


def test_registered_ppo_loss_hand_computed():
    # row 0, A = 1,  rho [1.5, 1.1, .5]: max(-rho, -clip(rho, .8, 1.28)) = [-1.28, -1.1, -.5]
    # row 1, A = -1, rho [.5, 1.5, 5]:   max(rho, clip(rho)) = [.8, 1.5, 5] -> dual min(., 3) = [.8, 1.5, 3]
    # clip flags [[T, F, F], [T, F, T]], restricted to the mask: the padded last token of row 1 drops out
    ratio = torch.tensor([[1.5, 1.1, 0.5], [0.5, 1.5, 5.0]], dtype=D)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    fn = POLICY_LOSSES.get("ppo")
    assert fn is ppo_policy_loss
    loss, clipped = fn(ratio.log(), torch.zeros_like(ratio), torch.tensor([1.0, -1.0], dtype=D), mask, **CLIP)
    torch.testing.assert_close(loss, torch.tensor([[-1.28, -1.1, -0.5], [0.8, 1.5, 3.0]], dtype=D))
    assert clipped.tolist() == [[True, False, False], [True, False, False]]
    with pytest.raises(ValueError, match="mask"):
        fn(ratio.log(), torch.zeros_like(ratio), torch.ones(2, dtype=D), mask[:, :2], **CLIP)


def test_every_registered_policy_loss_keeps_the_contract():
    # fn(logprobs, old_logprobs, advantages [S] or [S, T], mask, *, eps_low, eps_high, dual_clip_c)
    # -> (per-token loss [S, T], clipped [S, T] bool, False on masked-out tokens); inputs untouched
    gen = torch.Generator().manual_seed(0)
    logp, old = torch.randn(3, 4, generator=gen), torch.randn(3, 4, generator=gen)
    adv, mask = torch.randn(3, generator=gen), torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]])
    copies = [t.clone() for t in (logp, old, adv, mask)]
    assert "ppo" in POLICY_LOSSES.names()
    for name in POLICY_LOSSES.names():
        for a in (adv, adv[:, None].expand(3, 4)):
            loss, clipped = POLICY_LOSSES.get(name)(logp, old, a, mask, **CLIP)
            assert loss.shape == (3, 4) and clipped.shape == (3, 4) and clipped.dtype == torch.bool, name
            assert not clipped[mask == 0].any(), name
    for before, after in zip(copies, (logp, old, adv, mask)):
        assert torch.equal(before, after)


def test_policy_loss_registry_rejects_duplicates_and_lists_valid_names():
    with pytest.raises(ValueError, match="already registered"):
        POLICY_LOSSES.register("ppo")(ppo_policy_loss)
    with pytest.raises(UnknownNameError, match=r"unknown policy loss 'ppo2' \(did you mean 'ppo'\?\); valid: .*ppo"):
        POLICY_LOSSES.get("ppo2")
