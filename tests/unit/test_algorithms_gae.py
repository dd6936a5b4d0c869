"""GAE: hand-computed numbers, termination vs truncation, slow-loop parity, an LLM-like case."""
import pytest
import torch

from algorithms.gae import gae

D = torch.float64


def _col(*xs, dtype=D):
    return torch.tensor(xs, dtype=dtype)[:, None]  # [T, 1]


def _slow_gae(r, v, nv, term, end, gamma, lam):
    """Reference: plain python over floats, one column at a time."""
    T, B = len(r), len(r[0])
    adv = [[0.0] * B for _ in range(T)]
    for b in range(B):
        nxt = 0.0
        for t in reversed(range(T)):
            delta = r[t][b] + gamma * nv[t][b] * (0.0 if term[t][b] else 1.0) - v[t][b]
            nxt = delta + gamma * lam * (0.0 if end[t][b] else 1.0) * nxt
            adv[t][b] = nxt
    return adv


R3, V3 = _col(1.0, 0.0, 2.0), _col(0.5, 1.0, 1.5)
F3 = _col(False, False, False, dtype=torch.bool)


def test_hand_computed_no_boundary_bootstraps_last_value():
    # gamma .9, lam .8 -> gamma*lam = .72; next_values [1, 1.5, 2] (2 = V after the rollout)
    # delta = [1 + .9*1 - .5, 0 + .9*1.5 - 1, 2 + .9*2 - 1.5] = [1.4, .35, 2.3]
    # A2 = 2.3; A1 = .35 + .72*2.3 = 2.006; A0 = 1.4 + .72*2.006 = 2.84432
    adv, ret = gae(R3, V3, _col(1.0, 1.5, 2.0), F3, F3, 0.9, 0.8)
    torch.testing.assert_close(adv, _col(2.84432, 2.006, 2.3))
    torch.testing.assert_close(ret, _col(3.34432, 3.006, 3.8))  # A + V


def test_termination_cuts_and_drops_bootstrap():
    # terminated at t=1: delta1 = 0 + 0 - 1 = -1 (next value 1.5 ignored), recursion cut
    # A2 = 2.3 (new episode); A1 = -1; A0 = 1.4 + .72*(-1) = .68
    done = _col(False, True, False, dtype=torch.bool)
    adv, _ = gae(R3, V3, _col(1.0, 1.5, 2.0), done, done, 0.9, 0.8)
    torch.testing.assert_close(adv, _col(0.68, -1.0, 2.3))


def test_truncation_bootstraps_from_true_final_observation():
    # truncated at t=1 with V(final obs) = 3 in next_values (V[2] = 1.5 is the reset obs):
    # delta1 = 0 + .9*3 - 1 = 1.7, recursion cut: A1 = 1.7; A0 = 1.4 + .72*1.7 = 2.624; A2 = 2.3
    ended = _col(False, True, False, dtype=torch.bool)
    adv, _ = gae(R3, V3, _col(1.0, 3.0, 2.0), F3, ended, 0.9, 0.8)
    torch.testing.assert_close(adv, _col(2.624, 1.7, 2.3))


def test_columns_are_independent():
    # the three cases above side by side in one [T, 3] call
    nv = torch.cat([_col(1.0, 1.5, 2.0), _col(1.0, 1.5, 2.0), _col(1.0, 3.0, 2.0)], 1)
    term = torch.tensor([[False] * 3, [False, True, False], [False] * 3])
    ended = torch.tensor([[False] * 3, [False, True, True], [False] * 3])
    adv, _ = gae(R3.expand(3, 3), V3.expand(3, 3), nv, term, ended, 0.9, 0.8)
    expected = torch.tensor([[2.84432, 0.68, 2.624], [2.006, -1.0, 1.7], [2.3, 2.3, 2.3]], dtype=D)
    torch.testing.assert_close(adv, expected)


def test_special_cases_lambda_zero_and_one():
    # lam 0 -> A = delta = [1.4, .35, 2.3]
    nv = _col(1.0, 1.5, 2.0)
    adv, _ = gae(R3, V3, nv, F3, F3, 0.9, 0.0)
    torch.testing.assert_close(adv, _col(1.4, 0.35, 2.3))
    # gamma = lam = 1 with consistent next values: A_t = sum_{k>=t} r_k + V_after - V_t
    # = [3 + 2 - .5, 2 + 2 - 1, 2 + 2 - 1.5] = [4.5, 3, 2.5]; returns = MC return + bootstrap
    adv, ret = gae(R3, V3, _col(1.0, 1.5, 2.0), F3, F3, 1.0, 1.0)
    torch.testing.assert_close(adv, _col(4.5, 3.0, 2.5))
    torch.testing.assert_close(ret, _col(5.0, 4.0, 4.0))


def test_slow_loop_parity_random():
    gen = torch.Generator().manual_seed(0)
    T, B = 17, 5
    r, v, nv = (torch.randn(T, B, generator=gen, dtype=D) for _ in range(3))
    term = torch.rand(T, B, generator=gen) < 0.15
    ended = term | (torch.rand(T, B, generator=gen) < 0.15)
    adv, ret = gae(r, v, nv, term, ended, 0.99, 0.95)
    slow = _slow_gae(r.tolist(), v.tolist(), nv.tolist(), term.tolist(), ended.tolist(), 0.99, 0.95)
    torch.testing.assert_close(adv, torch.tensor(slow, dtype=D))
    torch.testing.assert_close(ret, adv + v)
    # float 0/1 flags behave like bools
    adv_f, _ = gae(r, v, nv, term.to(D), ended.to(D), 0.99, 0.95)
    torch.testing.assert_close(adv_f, adv)


def test_llm_like_single_trajectory():
    # 4 tokens, reward 1 on the last, gamma 1, lam .95; next_values = values shifted, 0 at the end
    # delta = [.4 - .2, .5 - .4, .7 - .5, 1 + 0 - .7] = [.2, .1, .2, .3]
    # A3 = .3; A2 = .2 + .95*.3 = .485; A1 = .1 + .95*.485 = .56075; A0 = .2 + .95*.56075 = .7327125
    r, v = _col(0.0, 0.0, 0.0, 1.0), _col(0.2, 0.4, 0.5, 0.7)
    nv = _col(0.4, 0.5, 0.7, 0.0)
    last = _col(False, False, False, True, dtype=torch.bool)
    adv, ret = gae(r, v, nv, last, last, 1.0, 0.95)
    torch.testing.assert_close(adv, _col(0.7327125, 0.56075, 0.485, 0.3))
    torch.testing.assert_close(ret, _col(0.9327125, 0.96075, 0.985, 1.0))
    # lam 1: every return is the Monte-Carlo return 1
    _, ret1 = gae(r, v, nv, last, last, 1.0, 1.0)
    torch.testing.assert_close(ret1, torch.ones(4, 1, dtype=D))


def test_llm_padded_batch_matches_unpadded_sequences():
    # [N, T] token layout with right padding, transposed to time-major; padding holds garbage
    values = torch.tensor([[0.2, 0.4, 0.5, 0.7], [0.3, 0.9, 55.0, -7.0]], dtype=D)
    rewards = torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.0, -1.0, 9.0, 9.0]], dtype=D)
    lengths = torch.tensor([4, 2])
    pos = torch.arange(4)[None, :]
    done = pos >= (lengths[:, None] - 1)  # last real token and every pad after it
    next_values = torch.cat([values[:, 1:], torch.zeros(2, 1, dtype=D)], 1)
    adv, _ = gae(rewards.T, values.T, next_values.T, done.T, done.T, 1.0, 0.95)
    # sequence 2 alone: delta = [.9 - .3, -1 - .9] = [.6, -1.9]; A1 = -1.9; A0 = .6 + .95*(-1.9)
    torch.testing.assert_close(adv.T[1, :2], torch.tensor([0.6 - 0.95 * 1.9, -1.9], dtype=D))
    torch.testing.assert_close(adv.T[0], torch.tensor([0.7327125, 0.56075, 0.485, 0.3], dtype=D))


def test_errors_and_no_mutation():
    with pytest.raises(ValueError, match="ended"):
        gae(R3, V3, V3, ~F3, F3, 1.0, 1.0)  # terminated but not ended
    with pytest.raises(ValueError, match="shape"):
        gae(R3, V3[:2], V3, F3, F3, 1.0, 1.0)
    args = (R3.clone(), V3.clone(), _col(1.0, 1.5, 2.0), F3.clone(), F3.clone())
    before = [a.clone() for a in args]
    gae(*args, 0.9, 0.8)
    assert all(torch.equal(a, b) for a, b in zip(args, before))
