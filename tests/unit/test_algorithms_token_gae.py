"""LLM PPO's token-level rewards and GAE over completion tokens: hand-computed and slow-loop checks."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from algorithms.gae import token_gae, token_rewards
from algorithms.segments import masked_whiten


def test_token_rewards_outcome_on_last_token_and_kl_penalty():
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    r = token_rewards(torch.tensor([1.0, 2.0, 5.0]), mask)
    assert r.tolist() == [[0, 0, 1], [0, 2, 0], [0, 0, 0]]
    kl = torch.tensor([[0.1, 0.2, 0.3], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    r = token_rewards(torch.tensor([1.0, 2.0, 5.0]), mask, kl, kl_coef=0.5)
    assert torch.allclose(r, torch.tensor([[-0.05, -0.1, 0.85], [-0.5, 1.5, 0.0], [0.0, 0.0, 0.0]]))


def test_token_gae_hand_computed():
    # row 0: deltas .2 .2 .4 -> A = .4 .4 .4 (lam .5); row 1: deltas .2 1.7 -> A = 1.05 1.7, pad 0
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    values = torch.tensor([[0.2, 0.4, 0.6], [0.1, 0.3, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = token_gae(rewards, values, mask, gamma=1.0, lam=0.5)
    assert torch.allclose(adv, torch.tensor([[0.4, 0.4, 0.4], [1.05, 1.7, 0.0]]))
    assert torch.allclose(ret, torch.tensor([[0.6, 0.8, 1.0], [1.15, 2.0, 0.0]]))


def _slow(rewards, values, mask, gamma, lam):
    adv = torch.zeros_like(values)
    for i in range(values.shape[0]):
        L = int(mask[i].sum())
        running = 0.0
        for t in reversed(range(L)):
            next_v = float(values[i, t + 1]) if t + 1 < L else 0.0
            delta = float(rewards[i, t]) + gamma * next_v - float(values[i, t])
            running = delta + gamma * lam * running
            adv[i, t] = running
    return adv, (adv + values) * mask


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.integers(1, 6), st.floats(0.5, 1.0), st.floats(0.0, 1.0), st.integers(0, 10**6))
def test_token_gae_matches_slow_loop(n, t, gamma, lam, seed):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, t + 1, (n,), generator=g)
    mask = (torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)).long()
    rewards = token_rewards(torch.randn(n, generator=g), mask, torch.randn(n, t, generator=g), 0.1)
    values = torch.randn(n, t, generator=g)
    adv, ret = token_gae(rewards, values, mask, gamma, lam)
    slow_adv, slow_ret = _slow(rewards, values, mask, gamma, lam)
    assert torch.allclose(adv, slow_adv, atol=1e-5)
    assert torch.allclose(ret, slow_ret, atol=1e-5)


def test_masked_whiten_ignores_padding():
    out = masked_whiten(torch.tensor([[1.0, 3.0, 9.0], [2.0, 100.0, -7.0]]), torch.tensor([[1, 1, 0], [1, 0, 0]]))
    # masked entries 1, 3, 2: mean 2, population std sqrt(2/3)
    s = (2 / 3) ** 0.5
    assert torch.allclose(out, torch.tensor([[-1 / s, 1 / s, 0.0], [0.0, 0.0, 0.0]]), atol=1e-5)
