"""bf16 delta sync: encode/decode, dense fallback, full every K, checksums, overwrite-not-add."""
import numpy as np
import pytest
import torch

from rollout.delta_sync import (BITMASK, DENSE, GAPS, INDICES, DeltaBucket, DeltaReceiver, DeltaSender,
                                DeltaSyncError, bf16_crcs, decode_bucket, decode_gaps, encode_bucket,
                                encode_gaps, pack_bits, unpack_bits)
from rollout import delta_kernels
from rollout.weight_sync import apply_bucket


def named(params: dict[str, torch.Tensor]):
    return list(params.items())


def bf16_bits(x: np.ndarray) -> np.ndarray:
    return torch.from_numpy(x).float().to(torch.bfloat16).view(torch.int16).numpy()


def random_params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(64, 32, generator=g), "b.bias": torch.randn(100, generator=g),
            "c.weight": torch.randn(8, 8, 8, generator=g)}


def bump(params, frac, seed):
    """Moves a random `frac` of elements by several bf16 ulps (so their bf16 bits surely change)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in params.items():
        hit = torch.rand(v.shape, generator=g) < frac
        out[k] = torch.where(hit, v * 1.05 + 0.01, v)
    return out


def test_encode_picks_the_smallest_encoding():
    old = np.zeros(8000, dtype=np.int16)
    few = old.copy(); few[[3, 5000]] = 7  # gap 4997: 20 gap bytes > 8 index bytes
    enc, arr = encode_bucket(few, old, 0.4)
    assert enc == INDICES and arr["indices"].tolist() == [3, 5000] and arr["values"].tolist() == [7, 7]
    near = old.copy(); near[[3, 10, 40]] = 5  # gaps 4, 7, 30: 3 bytes
    enc, arr = encode_bucket(near, old, 0.4)
    assert enc == GAPS and arr["indices"].tolist() == [4, 7, 30]
    clustered = old.copy(); clustered[::20] = 5  # 5%: gaps 400 B < bitmask 1000 B < indices 1600 B
    assert encode_bucket(clustered, old, 0.4)[0] == GAPS
    checker = old.copy(); checker[::3] = 5  # 33%: bitmask 1000 B < gaps 2667 B
    enc, arr = encode_bucket(checker, old, 0.4)
    assert enc == BITMASK and arr["values"].size == 2667
    many = old.copy(); many[::2] = 1  # 50% > threshold
    assert encode_bucket(many, old, 0.4)[0] == DENSE
    assert encode_bucket(few, None, 0.4)[0] == DENSE
    for new in (few, near, clustered, checker, many):  # every encoding decodes back to `new`
        enc, arr = encode_bucket(new, old, 0.4)
        b = DeltaBucket(names=["w"], shapes=[(8000,)], offsets=[0], numel=8000, encoding=enc, checksum=0, **arr)
        assert np.array_equal(decode_bucket(old, b), new), enc


def test_gap_codes_hand_computed_and_round_trip():
    # positions 0, 255, 256, 1000: gaps 1, 255, 1, 744 = 1 | 255 0 | 1 | 255 255 234
    pos = np.array([0, 255, 256, 1000])
    codes = encode_gaps(np.diff(pos, prepend=-1))
    assert codes.tolist() == [1, 255, 0, 1, 255, 255, 234]
    assert decode_gaps(codes).tolist() == pos.tolist()
    rng = np.random.default_rng(0)
    pos = np.unique(rng.integers(0, 10**6, size=3000))
    assert np.array_equal(decode_gaps(encode_gaps(np.diff(pos, prepend=-1))), pos)
    assert decode_gaps(encode_gaps(np.array([], dtype=np.int64))).numel() == 0


@pytest.mark.parametrize("frac", [0.0, 0.003, 0.05, 0.3])
def test_random_sparse_changes_round_trip(frac):
    rng = np.random.default_rng(1)
    old = bf16_bits(rng.standard_normal(5000))
    new = old.copy()
    hit = rng.random(5000) < frac
    new[hit] = bf16_bits(rng.standard_normal(int(hit.sum())) * 3)
    sender, receiver = DeltaSender(0.4, 0), DeltaReceiver()
    t_old = {"w": torch.from_numpy(old).view(torch.bfloat16).float()}
    t_new = {"w": torch.from_numpy(new).view(torch.bfloat16).float()}
    receiver.apply(sender.encode(named(t_old), 1 << 20, version=1))
    update = sender.encode(named(t_new), 1 << 20, version=2)
    assert update.base_version == 1 and update.buckets[0].encoding != DENSE
    assert update.buckets[0].num_changed == int((new != old).sum())
    out = receiver.apply(update)
    assert np.array_equal(out[0].flat, new)


def test_receiver_overwrites_never_adds():
    base = np.array([10, 20, 30, 40], dtype=np.int16)
    sender = DeltaSender(1.0, 0)
    receiver = DeltaReceiver()
    w0 = {"w": torch.from_numpy(base).view(torch.bfloat16).float()}
    receiver.apply(sender.encode(named(w0), 1 << 20, 0))
    new = base.copy(); new[2] = 33
    w1 = {"w": torch.from_numpy(new).view(torch.bfloat16).float()}
    upd = sender.encode(named(w1), 1 << 20, 1)
    assert upd.buckets[0].values.tolist() == [33]  # the new bits, not a difference
    receiver.apply(upd)
    # applying the same values again onto the result leaves it unchanged (an add would give 66)
    flat = decode_bucket(receiver.flats[0], upd.buckets[0])
    assert flat.tolist() == [10, 20, 33, 40]


def test_dense_fallback_and_full_every_k():
    p0 = random_params()
    sender, receiver = DeltaSender(dense_threshold=0.4, full_every_steps=3), DeltaReceiver()
    u0 = sender.encode(named(p0), 4096, 0)
    assert u0.is_full and u0.density() == 1.0 and all(b.encoding == DENSE for b in u0.buckets)
    receiver.apply(u0)
    p1 = bump(p0, 0.9, 1)
    u1 = sender.encode(named(p1), 4096, 1)  # 90% changed: every bucket dense, still a delta
    assert not u1.is_full and all(b.encoding == DENSE for b in u1.buckets)
    receiver.apply(u1)
    p2 = bump(p1, 0.01, 2)
    u2 = sender.encode(named(p2), 4096, 2)
    assert not u2.is_full and u2.density() < 0.1 and u2.nbytes < u0.nbytes / 5
    receiver.apply(u2)
    u3 = sender.encode(named(bump(p2, 0.01, 3)), 4096, 3)  # third delta since the full one -> full
    assert u3.is_full
    receiver.apply(u3)
    assert sender.encode(named(p0), 4096, 4, force_full=True).is_full


def test_resulting_weights_equal_learner_bf16():
    p = random_params()
    sender, receiver = DeltaSender(0.4, 0), DeltaReceiver()
    engine = {k: torch.zeros_like(v) for k, v in p.items()}  # an fp32 engine
    for step in range(4):
        p = bump(p, 0.02, step)
        for b in receiver.apply(sender.encode(named(p), 2048, step)):
            apply_bucket(engine, b, verify=True)
        assert bf16_crcs(named(engine)) == bf16_crcs(named(p))
        assert all(torch.equal(engine[k], p[k].to(torch.bfloat16).float()) for k in p)


def test_checksum_mismatch_raises_and_keeps_state():
    p = random_params()
    sender, receiver = DeltaSender(0.4, 0), DeltaReceiver()
    receiver.apply(sender.encode(named(p), 2048, 0))
    before = [f.clone() for f in receiver.flats]
    upd = sender.encode(named(bump(p, 0.02, 1)), 2048, 1)
    upd.buckets[-1].values = upd.buckets[-1].values.copy()
    upd.buckets[-1].values[0] ^= 1  # one flipped bit in flight
    with pytest.raises(DeltaSyncError, match="checksum"):
        receiver.apply(upd)
    assert all(np.array_equal(a, b) for a, b in zip(before, receiver.flats)) and receiver.version == 0


def test_wrong_base_version_raises():
    p = random_params()
    sender, receiver = DeltaSender(0.4, 0), DeltaReceiver()
    sender.encode(named(p), 2048, 0)  # the receiver missed this one
    with pytest.raises(DeltaSyncError, match="full sync is needed"):
        receiver.apply(sender.encode(named(bump(p, 0.01, 1)), 2048, 1))


def test_bit_packing_matches_numpy():
    rng = np.random.default_rng(3)
    for n in (1, 8, 13, 1000):
        mask = rng.random(n) < 0.3
        packed = pack_bits(torch.from_numpy(mask))
        assert np.array_equal(packed.numpy(), np.packbits(mask))
        assert np.array_equal(unpack_bits(packed, n).numpy(), mask)


def test_bad_arguments():
    with pytest.raises(ValueError, match="dense_threshold"):
        DeltaSender(dense_threshold=1.5)
    with pytest.raises(ValueError, match="full_every_steps"):
        DeltaSender(full_every_steps=-1)


@pytest.mark.skipif(not delta_kernels.AVAILABLE, reason="numba not installed")
def test_numba_kernel_rounds_like_torch_and_matches_the_torch_path():
    special = torch.tensor([0.0, -0.0, 1.0, 1.00390625, 1.01171875, 3.0e38, -3.4e38, float("inf"), float("-inf"),
                            float("nan"), 1e-40, -1e-45, 65504.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8])  # ties go to even
    held = np.zeros(special.numel(), dtype=np.int16)
    pos, val = np.empty(special.numel(), np.int64), np.empty(special.numel(), np.int16)
    delta_kernels.encode_f32(special.numpy().view(np.uint32), held, 0, pos, val, 0)
    assert np.array_equal(held, special.to(torch.bfloat16).view(torch.int16).numpy())
    p = random_params()
    fast, slow = DeltaSender(0.4, 0), DeltaSender(0.4, 0)
    for step in range(4):
        a, b = fast.encode(named(p), 2048, step), slow.encode(named(p), 2048, step)
        if step == 0:  # from here on `slow` takes the torch path
            slow.encode = lambda params, nbytes, version, _s=slow: _torch_only(_s, params, nbytes, version)
        assert [(x.encoding, x.checksum, x.values.tolist()) for x in a.buckets] == \
               [(y.encoding, y.checksum, y.values.tolist()) for y in b.buckets]
        p = bump(p, [0.001, 0.05, 0.6][step % 3], step)


def _torch_only(sender, params, nbytes, version):
    saved, delta_kernels.AVAILABLE = delta_kernels.AVAILABLE, False
    try:
        return DeltaSender.encode(sender, params, nbytes, version)
    finally:
        delta_kernels.AVAILABLE = saved
