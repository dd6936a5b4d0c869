"""Payload flattening for the broadcast transport (exact round trip) and a real gloo broadcast
between threads of one process through SyncGroup."""
import threading

import numpy as np
import torch

from rollout.delta_sync import DeltaReceiver, DeltaSender
from rollout.transport import SyncGroup, flatten_payload, payload_nbytes, rebuild_payload
from rollout.weight_sync import pack_buckets


def params(seed):
    g = torch.Generator().manual_seed(seed)
    return [("a.weight", torch.randn(7, 5, generator=g)), ("b.bias", torch.randn(3, generator=g)),
            ("c.weight", torch.randn(40, 9, generator=g))]


def test_full_buckets_round_trip_bit_exact():
    buckets = pack_buckets(params(0), bucket_bytes=200)
    skeleton, flat = flatten_payload(buckets)
    assert flat.dtype == np.uint8 and flat.nbytes == sum(b.nbytes for b in buckets) == payload_nbytes(skeleton)
    back = rebuild_payload(skeleton, flat.copy())
    assert len(back) == len(buckets) > 1
    for b, r in zip(buckets, back):
        assert (b.names, b.shapes, b.offsets, b.checksum) == (r.names, r.shapes, r.offsets, r.checksum)
        assert r.flat.dtype == b.flat.dtype and np.array_equal(r.flat.view(np.uint8), b.flat.view(np.uint8))


def test_delta_update_round_trip_applies_like_the_original():
    sender, direct, via = DeltaSender(0.4, 0), DeltaReceiver(), DeltaReceiver()
    for version, seed in enumerate([0, 0]):  # first: full bf16; second: a sparse delta
        ps = params(seed)
        if version:
            ps[2][1][0, :3] += 1.0  # a few bf16 elements change
        update = sender.encode(ps, 256, version)
        skeleton, flat = flatten_payload(update)
        assert payload_nbytes(skeleton) == flat.nbytes == update.nbytes
        a, b = direct.apply(update), via.apply(rebuild_payload(skeleton, flat))
        assert [x.checksum for x in a] == [y.checksum for y in b]
        assert all(np.array_equal(x.flat, y.flat) for x, y in zip(a, b))
    assert not update.is_full and update.density() < 0.1


def test_gloo_group_broadcasts_bytes_to_every_rank():
    world, got = 3, {}
    store, host, port = SyncGroup.listen(world, timeout_s=30)
    payload = np.arange(1000, dtype=np.int64).view(np.uint8)

    def rank(r):
        g = SyncGroup.join(host, port, r, world, "gloo", timeout_s=30, store=store if r == 0 else None)
        got[r] = g.broadcast(payload if r == 0 else None, payload.nbytes)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(world)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert sorted(got) == [0, 1, 2] and all(np.array_equal(got[r], payload) for r in got)
