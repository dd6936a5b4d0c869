"""The additive weights checksum engines and learners compare after every sync (hand-computed)."""
import torch

from rollout.weight_sync import CHECKSUM_MOD, weights_checksum


def test_hand_computed_bit_sums():
    assert weights_checksum([torch.tensor([1.0])]) == 0x3F800000
    assert weights_checksum([torch.tensor([1.0, 2.0])]) == 0x3F800000 + 0x40000000
    assert weights_checksum([torch.tensor([-1.0])]) == (0xBF800000 - 2**32) % CHECKSUM_MOD  # signed int32
    assert weights_checksum([torch.tensor([1.0, -2.0])], torch.bfloat16) == (0x3F80 + 0xC000 - 2**16) % CHECKSUM_MOD


def test_layout_invariant_and_shard_additive():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(4, 3, generator=g) for _ in range(3))
    whole = weights_checksum([q, k, v])
    assert weights_checksum([torch.cat([q, k, v])]) == whole  # a fused qkv
    assert weights_checksum([v, q, k]) == whole
    halves = [weights_checksum([t[:2] for t in (q, k, v)]), weights_checksum([t[2:] for t in (q, k, v)])]
    assert sum(halves) % CHECKSUM_MOD == whole  # the ranks' partials of a sharded model
    assert weights_checksum([torch.cat([q, torch.zeros(2, 3)]), k, v]) == whole  # zero padding


def test_detects_one_element_and_rounding():
    t = torch.randn(1000, generator=torch.Generator().manual_seed(1))
    bumped = t.clone()
    bumped[17] = torch.nextafter(bumped[17], torch.tensor(float("inf")))  # one ulp
    assert weights_checksum([bumped]) != weights_checksum([t])
    assert weights_checksum([t.to(torch.bfloat16)], torch.bfloat16) == weights_checksum([t], torch.bfloat16)
