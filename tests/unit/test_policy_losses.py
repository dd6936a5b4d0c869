"""GSPO, CISPO and the rollout corrections (SPECS §11): hand-computed values in every loss aggregation
mode, gradient checks, and the published cross-checks (SkyRL's clipped-surrogate ratios, verl's IcePop)."""
import math

import pytest
import torch

from algorithms.aggregation import aggregate_loss
from algorithms.losses import clipped_surrogate
from algorithms.policy_losses import POLICY_LOSSES, cispo_policy_loss, gspo_policy_loss
from algorithms.registry import UnknownNameError
from algorithms.rollout_correction import (ROLLOUT_CORRECTIONS, effective_sample_fraction,
                                           icepop_weights)

D = torch.float64
CLIP = {"eps_low": 0.2, "eps_high": 0.28, "dual_clip_c": 3.0}
MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def _t(x):
    return torch.tensor(x, dtype=D)


def _agg_all(per_tok, mask):
    return {mode: float(aggregate_loss(per_tok.detach(), mask, mode, max_len=4)) for mode in MODES}


def _check_modes(got, want):
    for mode in MODES:
        assert got[mode] == pytest.approx(want[mode], abs=1e-12), mode


# -- ppo ------------------------------------------------------------------------------------------

def test_registry_ppo_equals_the_existing_function_exactly():
    gen = torch.Generator().manual_seed(1)
    logp, old = torch.randn(4, 5, generator=gen), torch.randn(4, 5, generator=gen)
    mask = torch.ones(4, 5)
    for adv in (torch.randn(4, generator=gen), torch.randn(4, 5, generator=gen)):
        loss, clipped = POLICY_LOSSES.get("ppo")(logp, old, adv, mask, **CLIP)
        ref_loss, ref_clipped = clipped_surrogate(logp, old, adv, 0.2, 0.28, 3.0)
        assert torch.equal(loss, ref_loss) and torch.equal(clipped, ref_clipped)


def test_skyrl_ratios_cross_check():
    # SkyRL's policy-loss test inputs: ratios [0.5, 1, 10], per-token advantages [1, -1, -4], eps 0.2
    #   t0: A=1,  rho .5: max(-.5, -clip(.5)=-.8)    = -0.5  (unclipped)
    #   t1: A=-1, rho 1:  max(1, 1)                  =  1.0
    #   t2: A=-4, rho 10: max(40, 4 * 1.2 = 4.8)     = 40.0  (unclipped: A < 0, ratio above the band)
    #   dual clip c=3 caps t2 at -A c = 12 -> [-0.5, 1, 12]; token-mean 12.5/3 = 4.1667 (40.5/3 = 13.5 without)
    ratio, adv, mask = _t([[0.5, 1.0, 10.0]]), _t([[1.0, -1.0, -4.0]]), torch.ones(1, 3)
    for c, want, mean in ((None, [-0.5, 1.0, 40.0], 13.5), (3.0, [-0.5, 1.0, 12.0], 12.5 / 3)):
        loss, clipped = POLICY_LOSSES.get("ppo")(ratio.log(), torch.zeros_like(ratio), adv, mask,
                                                 eps_low=0.2, eps_high=0.2, dual_clip_c=c)
        torch.testing.assert_close(loss, _t([want]))
        assert clipped.tolist() == [[False, False, c is not None]]
        assert float(aggregate_loss(loss, mask, "token-mean")) == pytest.approx(mean)


def test_ppo_every_aggregation_mode():
    # rho [[1.5, 1.1, .5], [.5, 1.5, 5 (padding)]], A = [1, -1], eps .2/.28, c = 3 (test_algorithms_losses):
    # loss [[-1.28, -1.1, -.5], [.8, 1.5, 3]]; row sums -2.88 (3 tokens) and 2.3 (2 tokens)
    ratio, mask = _t([[1.5, 1.1, 0.5], [0.5, 1.5, 5.0]]), torch.tensor([[1, 1, 1], [1, 1, 0]])
    loss, _ = POLICY_LOSSES.get("ppo")(ratio.log(), torch.zeros_like(ratio), _t([1.0, -1.0]), mask, **CLIP)
    _check_modes(_agg_all(loss, mask), {
        "token-mean": (-2.88 + 2.3) / 5,                       # -0.116
        "seq-mean-token-mean": (-2.88 / 3 + 2.3 / 2) / 2,      # 0.095
        "seq-mean-token-sum": (-2.88 + 2.3) / 2,               # -0.29
        "seq-mean-token-sum-norm": (-2.88 / 4 + 2.3 / 4) / 2,  # -0.0725
    })


# -- gspo -----------------------------------------------------------------------------------------
# Per-token log-ratios and their mean over the mask (row 1's padded 9.0 is ignored):
#   row 0 [.3, -.1, .1] -> .1, s0 = e^.1 = 1.10517;  A = -1, band [.85, 1.05]: A < 0, s above -> unclipped, L = s0
#   row 1 [-.4, 0, pad] -> -.2, s1 = e^-.2 = .81873; A = +1: s below the band, A > 0 -> unclipped, L = -s1
#   row 2 [.5, .5, .5]  -> .5, s2 = e^.5 = 1.64872;  A = +2: clipped at 1.05 -> L = -2 * 1.05 = -2.1
G_LOG_RATIO = [[0.3, -0.1, 0.1], [-0.4, 0.0, 9.0], [0.5, 0.5, 0.5]]
G_MASK = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1]])
G_ADV = [-1.0, 1.0, 2.0]
G_EPS = {"eps_low": 0.15, "eps_high": 0.05, "dual_clip_c": 3.0}
G_LOGP = [[-1.0, -2.0, -0.5], [-0.7, -1.3, -2.0], [-0.2, -3.0, -1.1]]


def _gspo_inputs():
    logp = _t(G_LOGP).requires_grad_(True)
    return logp, (logp - _t(G_LOG_RATIO)).detach()


def test_gspo_values_and_clip_flags():
    logp, old = _gspo_inputs()
    loss, clipped = gspo_policy_loss(logp, old, _t(G_ADV), G_MASK, **G_EPS)
    s0, s1 = math.exp(0.1), math.exp(-0.2)
    want = [[s0] * 3, [-s1, -s1], [-2.1] * 3]
    for i, row in enumerate(want):
        torch.testing.assert_close(loss[i, :len(row)], _t(row))
    assert clipped.tolist() == [[False] * 3, [False, False, False], [True] * 3]


def test_gspo_every_aggregation_mode():
    # row sums 3 s0 (3 tok), -2 s1 (2 tok), -6.3 (3 tok); 8 tokens, 3 sequences
    logp, old = _gspo_inputs()
    loss, _ = gspo_policy_loss(logp, old, _t(G_ADV), G_MASK, **G_EPS)
    s0, s1 = math.exp(0.1), math.exp(-0.2)
    total = 3 * s0 - 2 * s1 - 6.3  # -4.621949
    _check_modes(_agg_all(loss, G_MASK), {
        "token-mean": total / 8,                      # -0.577744
        "seq-mean-token-mean": (s0 - s1 - 2.1) / 3,   # -0.604520
        "seq-mean-token-sum": total / 3,              # -1.540650
        "seq-mean-token-sum-norm": total / 4 / 3,     # -0.385162
    })


def test_gspo_token_form_has_the_sequence_level_gradient():
    # The paper's objective (1/G) sum_i max(-A_i s_i, -A_i clip(s_i)), with s_i differentiable, vs the
    # token form under seq-mean-token-mean. By hand: d/dlogp_t = (1/3)(-A_i) s_i / |y_i| on unclipped rows:
    #   row 0: s0 / 9 on each token; row 1: -s1 / 6 on its 2 tokens, 0 on padding; row 2 clipped: 0
    logp, old = _gspo_inputs()
    loss, _ = gspo_policy_loss(logp, old, _t(G_ADV), G_MASK, **G_EPS)
    (g_token,) = torch.autograd.grad(aggregate_loss(loss, G_MASK, "seq-mean-token-mean"), logp)

    m = G_MASK.to(D)
    s = torch.exp(((logp - old) * m).sum(-1) / m.sum(-1))
    adv = _t(G_ADV)
    seq_loss = torch.maximum(-adv * s, -adv * s.clamp(0.85, 1.05)).mean()
    (g_seq,) = torch.autograd.grad(seq_loss, logp)
    torch.testing.assert_close(g_token, g_seq)
    s0, s1 = math.exp(0.1), math.exp(-0.2)
    torch.testing.assert_close(g_token, _t([[s0 / 9] * 3, [-s1 / 6, -s1 / 6, 0.0], [0.0] * 3]))
    assert float(seq_loss.detach()) == pytest.approx(float(aggregate_loss(loss.detach(), G_MASK, "seq-mean-token-mean")))


def test_gspo_padding_values_do_not_leak():
    # a huge or infinite padded log-prob changes neither the sequence ratio nor the gradient
    logp, old = _gspo_inputs()
    loss, _ = gspo_policy_loss(logp, old, _t(G_ADV), G_MASK, **G_EPS)
    bad = logp.detach().clone()
    bad[1, 2] = -1e30
    bad.requires_grad_(True)
    loss2, _ = gspo_policy_loss(bad, old, _t(G_ADV), G_MASK, **G_EPS)
    a, b = (aggregate_loss(x, G_MASK, "token-mean") for x in (loss, loss2))
    assert float(a.detach()) == float(b.detach())
    (g,) = torch.autograd.grad(b, bad)
    assert torch.isfinite(g).all() and g[1, 2] == 0


# -- cispo ----------------------------------------------------------------------------------------
# r row 0 [1.5, 1.1, .5], A = 1;  row 1 [.5, 1.5, 5 (pad)], A = -1;  band [.8, 1.28]
#   w = sg[clip(r)] = [[1.28, 1.1, .8], [.8, 1.28, 1.28]]; logp [[-1, -2, -.5], [-1, -1, -1]]
#   L = -w A logp: row 0 [1.28, 2.2, .4] (sum 3.88), row 1 -w = [-.8, -1.28, pad] (sum -2.08)
C_RATIO = [[1.5, 1.1, 0.5], [0.5, 1.5, 5.0]]
C_LOGP = [[-1.0, -2.0, -0.5], [-1.0, -1.0, -1.0]]
C_MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])


def _cispo_inputs():
    logp = _t(C_LOGP).requires_grad_(True)
    old = (logp - _t(C_RATIO).log()).detach().requires_grad_(True)
    return logp, old


def test_cispo_values_modes_and_flags():
    logp, old = _cispo_inputs()
    loss, clipped = cispo_policy_loss(logp, old, _t([1.0, -1.0]), C_MASK, **CLIP)
    torch.testing.assert_close(loss[0], _t([1.28, 2.2, 0.4]))
    torch.testing.assert_close(loss[1, :2], _t([-0.8, -1.28]))
    assert clipped.tolist() == [[True, False, True], [True, True, False]]
    _check_modes(_agg_all(loss, C_MASK), {
        "token-mean": (3.88 - 2.08) / 5,                       # 0.36
        "seq-mean-token-mean": (3.88 / 3 - 2.08 / 2) / 2,      # 0.126667
        "seq-mean-token-sum": (3.88 - 2.08) / 2,               # 0.9
        "seq-mean-token-sum-norm": (3.88 / 4 - 2.08 / 4) / 2,  # 0.225
    })


def test_cispo_weight_carries_no_gradient():
    # dL/dlogp = -w A exactly (the weight is a constant), nothing flows into old_logprobs, and a
    # clipped token keeps its gradient (PPO would zero row 0's first token)
    logp, old = _cispo_inputs()
    loss, _ = cispo_policy_loss(logp, old, _t([1.0, -1.0]), C_MASK, **CLIP)
    g_logp, g_old = torch.autograd.grad(loss.sum(), [logp, old], allow_unused=True)
    torch.testing.assert_close(g_logp, _t([[-1.28, -1.1, -0.8], [0.8, 1.28, 1.28]]))
    assert g_old is None


def test_cispo_upper_clip_only_as_minimax():
    # eps_low = 1: no lower clip, so r = .5 keeps weight .5
    logp, old = _cispo_inputs()
    loss, clipped = cispo_policy_loss(logp, old, _t([1.0, -1.0]), C_MASK, eps_low=1.0, eps_high=0.28)
    torch.testing.assert_close(loss[0], _t([1.28, 2.2, 0.25]))
    assert clipped.tolist() == [[True, False, False], [False, True, False]]


# -- the registry ---------------------------------------------------------------------------------

def test_every_policy_loss_keeps_the_contract():
    gen = torch.Generator().manual_seed(0)
    logp, old = torch.randn(3, 4, generator=gen), torch.randn(3, 4, generator=gen)
    adv, mask = torch.randn(3, generator=gen), torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]])
    copies = [t.clone() for t in (logp, old, adv, mask)]
    assert {"ppo", "gspo", "cispo"} <= set(POLICY_LOSSES.names())
    for name in POLICY_LOSSES.names():
        for a in (adv, adv[:, None].expand(3, 4)):
            loss, clipped = POLICY_LOSSES.get(name)(logp, old, a, mask, **CLIP)
            assert loss.shape == (3, 4) and clipped.dtype == torch.bool, name
            assert not clipped[mask == 0].any(), name
            for mode in MODES:
                assert torch.isfinite(aggregate_loss(loss, mask, mode, max_len=4)), (name, mode)
    for before, after in zip(copies, (logp, old, adv, mask)):
        assert torch.equal(before, after)
    with pytest.raises(UnknownNameError, match="valid: cispo, gspo, ppo"):
        POLICY_LOSSES.get("gpso")


# -- rollout corrections --------------------------------------------------------------------------

def _w_inputs(w, mask=None):
    w = _t(w)
    engine = torch.full_like(w, -1.0)
    return engine + w.log(), engine, torch.ones_like(w) if mask is None else mask


def test_verl_icepop_published_example():
    # verl: w = [0.4, 0.8, 6.0], band [0.5, 5.0] -> [0, 0.8, 0], 2 of 3 tokens masked
    torch.testing.assert_close(icepop_weights(_t([0.4, 0.8, 6.0]), 0.5, 5.0), _t([0.0, 0.8, 0.0]))
    c = ROLLOUT_CORRECTIONS.get("icepop")(*_w_inputs([[0.4, 0.8, 6.0]]), low=0.5, high=5.0)
    torch.testing.assert_close(c.weights, _t([[0.0, 0.8, 0.0]]))
    assert c.kept.tolist() == [[False, True, False]]
    assert c.metrics["mismatch/masked_frac"] == pytest.approx(2 / 3)
    assert c.metrics["mismatch/is_weight_mean"] == pytest.approx(0.8 / 3)
    assert c.metrics["mismatch/is_weight_max"] == pytest.approx(0.8)
    assert c.metrics["mismatch/ess_frac"] == pytest.approx(0.64 / (3 * 0.64))  # one token carries all: 1/3


def test_tis_truncates_and_metrics_are_hand_computed():
    # w = [.5, 1.5, 3, (pad 9)], C = 2 -> [.5, 1.5, 2, 0]; |log w| mean = (log 2 + log 1.5 + log 3) / 3
    # k3 = w - 1 - log w: (.5 - 1 + log 2) + (.5 - log 1.5) + (2 - log 3), mean over 3
    # weight mean 4/3, max 2, ESS (4)^2 / (3 * (.25 + 2.25 + 4)) = 16 / 19.5
    mask = torch.tensor([[1, 1, 1, 0]])
    learner, engine, _ = _w_inputs([[0.5, 1.5, 3.0, 9.0]])
    c = ROLLOUT_CORRECTIONS.get("tis")(learner, engine, mask, cap=2.0)
    torch.testing.assert_close(c.weights, _t([[0.5, 1.5, 2.0, 0.0]]))
    assert torch.equal(c.old_logprobs, learner) and c.kept.tolist() == [[True, True, True, False]]
    m = c.metrics
    assert m["mismatch/logprob_abs_diff"] == pytest.approx((math.log(2) + math.log(1.5) + math.log(3)) / 3)
    k3 = (-0.5 + math.log(2)) + (0.5 - math.log(1.5)) + (2 - math.log(3))
    assert m["mismatch/kl"] == pytest.approx(k3 / 3)
    assert m["mismatch/is_weight_mean"] == pytest.approx(4 / 3)
    assert m["mismatch/is_weight_max"] == pytest.approx(2.0)
    assert m["mismatch/ess_frac"] == pytest.approx(16 / 19.5)
    assert m["mismatch/masked_frac"] == 0.0


def test_mis_drops_whole_sequences():
    # per-token log w row 0 [.1, .2, pad 5] -> sum .3, rho e^.3 = 1.3499 in [.5, 2]: kept, weight 1.3499
    # row 1 [.5, .5, .5] -> sum 1.5, rho 4.48 > 2: dropped; with reduce="mean" rho = e^.5 = 1.6487: kept
    log_w = _t([[0.1, 0.2, 5.0], [0.5, 0.5, 0.5]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    engine = torch.zeros_like(log_w)
    c = ROLLOUT_CORRECTIONS.get("mis")(log_w, engine, mask, low=0.5, high=2.0)
    r0 = math.exp(0.3)
    torch.testing.assert_close(c.weights, _t([[r0, r0, 0.0], [0.0, 0.0, 0.0]]))
    assert c.kept.tolist() == [[True, True, False], [False, False, False]]
    assert c.metrics["mismatch/masked_frac"] == pytest.approx(3 / 5)
    g = ROLLOUT_CORRECTIONS.get("mis")(log_w, engine, mask, low=0.5, high=2.0, reduce="mean")
    r0, r1 = math.exp(0.15), math.exp(0.5)
    torch.testing.assert_close(g.weights, _t([[r0, r0, 0.0], [r1, r1, r1]]))


def test_decoupled_drops_above_the_cap_and_clips_against_the_proximal_policy():
    # w = [.5, 1.5, 6], cap 5 -> [.5, 1.5, 0] (AReaL drops, tis would give 5); cap None keeps 6
    learner, engine, mask = _w_inputs([[0.5, 1.5, 6.0]])
    c = ROLLOUT_CORRECTIONS.get("decoupled")(learner, engine, mask, cap=5.0)
    torch.testing.assert_close(c.weights, _t([[0.5, 1.5, 0.0]]))
    torch.testing.assert_close(ROLLOUT_CORRECTIONS.get("decoupled")(learner, engine, mask, cap=None).weights,
                               _t([[0.5, 1.5, 6.0]]))
    # the whole objective: pi_theta / pi_old = [1.5, 1, 1], A = 1 -> PPO [-1.28, -1, -1] * w = [-.64, -1.5, 0]
    logp = c.old_logprobs + _t([[1.5, 1.0, 1.0]]).log()
    per_tok, _ = POLICY_LOSSES.get("ppo")(logp, c.old_logprobs, _t([1.0]), mask, **CLIP)
    torch.testing.assert_close(per_tok * c.weights, _t([[-0.64, -1.5, 0.0]]))


def test_none_reproduces_the_uncorrected_loss_bit_for_bit():
    gen = torch.Generator().manual_seed(2)
    logp, engine = torch.randn(3, 4, generator=gen), torch.randn(3, 4, generator=gen)
    learner = engine + 0.1 * torch.randn(3, 4, generator=gen)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    adv = torch.randn(3, generator=gen)
    c = ROLLOUT_CORRECTIONS.get("none")(learner, engine, mask)
    ref, _ = POLICY_LOSSES.get("ppo")(logp, engine, adv, mask, **CLIP)
    got, _ = POLICY_LOSSES.get("ppo")(logp, c.old_logprobs, adv, mask, **CLIP)
    for mode in MODES:
        assert torch.equal(aggregate_loss(got * c.weights, mask, mode, max_len=4),
                           aggregate_loss(ref, mask, mode, max_len=4))
    same = ROLLOUT_CORRECTIONS.get("none")(engine, engine, mask).metrics
    assert same["mismatch/logprob_abs_diff"] == 0 and same["mismatch/kl"] == 0
    assert same["mismatch/ess_frac"] == 1.0 and same["mismatch/is_weight_max"] == 1.0


def test_every_correction_keeps_the_contract():
    gen = torch.Generator().manual_seed(3)
    engine = torch.randn(3, 4, generator=gen, requires_grad=True)
    learner = (engine + 0.5 * torch.randn(3, 4, generator=gen)).detach().requires_grad_(True)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]])
    copies = [t.detach().clone() for t in (learner, engine, mask)]
    assert ROLLOUT_CORRECTIONS.names() == ["decoupled", "icepop", "mis", "none", "tis"]
    for name in ROLLOUT_CORRECTIONS.names():
        c = ROLLOUT_CORRECTIONS.get(name)(learner, engine, mask)
        assert c.weights.shape == (3, 4) and not c.weights.requires_grad and not c.old_logprobs.requires_grad
        assert c.kept.dtype == torch.bool and not c.kept[mask == 0].any(), name
        assert (c.weights[mask == 0] == 0).all() and (c.weights[~c.kept] == 0).all(), name
        assert set(c.metrics) == {"mismatch/logprob_abs_diff", "mismatch/kl", "mismatch/is_weight_mean",
                                  "mismatch/is_weight_max", "mismatch/ess_frac", "mismatch/masked_frac"}
        assert all(math.isfinite(v) for v in c.metrics.values()), name
    for before, after in zip(copies, (learner, engine, mask)):
        assert torch.equal(before, after)
    with pytest.raises(ValueError, match="band"):
        ROLLOUT_CORRECTIONS.get("icepop")(learner, engine, mask, low=2.0, high=1.0)
    with pytest.raises(ValueError, match="must all be"):
        ROLLOUT_CORRECTIONS.get("tis")(learner, engine[:, :2], mask)


def test_effective_sample_fraction_hand_computed():
    # (1 + 0 + 1 + 2)^2 / (4 * (1 + 0 + 1 + 4)) = 16 / 24; equal weights -> 1; all zero -> 0
    assert effective_sample_fraction(_t([1.0, 0.0, 1.0, 2.0]), torch.ones(4)) == pytest.approx(2 / 3)
    assert effective_sample_fraction(_t([3.0, 3.0]), torch.ones(2)) == pytest.approx(1.0)
    assert effective_sample_fraction(_t([0.0, 0.0]), torch.ones(2)) == 0.0
