"""Verified weight sync on the tiny model with a real engine that misbehaves on demand: it
acknowledges an update without applying it, corrupts a weight after applying it, or hangs. The
sync re-syncs what differs (counted), fails loudly naming the engine when that does not help, and
turns a hang into an error naming the engine within sync.timeout_s. Both learner paths: one learner
actor, and 2 FSDP2 ranks streaming bucket by bucket."""
import time

import pytest
import ray
import torch

from rl.config import SyncConfig
from rl.workers.learner import LearnerActor
from rl.workers.learner_group import LearnerGroup
from rl.workers.rollout_worker import EngineWorker, RolloutWorker
from rl.workers.weight_sync import WeightSyncError, WeightSyncTimeout, sync_weights


def faulty_worker():
    """A real hf engine worker with a switchable fault (a local class: Ray ships it by value)."""
    class Faulty(EngineWorker):
        kind, left, delay_s = None, 0, 0.0

        def arm(self, kind: str, times: int = 1, delay_s: float = 0.0) -> None:
            self.kind, self.left, self.delay_s = kind, times, delay_s

        def update_weights(self, update, version, final=True):
            if self.kind == "hang" and self.left > 0:
                self.left -= int(final)
                time.sleep(self.delay_s)
            if self.kind == "drop" and self.left > 0:  # a sync that silently does not happen
                self.left -= int(final)
                return version
            out = super().update_weights(update, version, final)
            if self.kind == "corrupt" and self.left > 0 and final:
                self.left -= 1
                with torch.no_grad():
                    next(self.engine.model.parameters()).view(-1)[3] += 1e-3
            return out

    return ray.remote(num_cpus=0.25, max_restarts=0)(Faulty).remote("hf", "tiny-llama", "float32", 0)


def cfg(mode="full", timeout_s=60.0):
    return SyncConfig(bucket_mb=0.25, mode=mode, full_every_steps=0, timeout_s=timeout_s)


@pytest.fixture(scope="module")
def world(ray_local):
    learner = LearnerActor.options(num_cpus=0.25).remote("tiny-llama", "float32", 0, lr=1e-3)
    good, bad = RolloutWorker.options(num_cpus=0.25).remote("hf", "tiny-llama", "float32", 0), faulty_worker()
    yield learner, good, bad
    for a in (learner, good, bad):
        ray.kill(a)


@pytest.mark.parametrize("kind,mode", [("drop", "full"), ("corrupt", "full"), ("corrupt", "delta")])
def test_a_wrong_engine_is_resynced_and_counted(world, kind, mode):
    learner, good, bad = world
    ray.get(bad.arm.remote(kind))
    m = sync_weights(learner, [good, bad], 1, cfg(mode))
    assert m["sync/verified"] == 1.0 and m["sync/resyncs"] == 1.0
    dtype = "bfloat16" if mode == "delta" else None
    want = ray.get(learner.weights_checksum.remote(dtype))
    assert [ray.get(e.weights_state.remote(dtype)) for e in (good, bad)] == [
        {"version": 1, "dtype": dtype or "float32", "checksum": want}] * 2
    m = sync_weights(learner, [good, bad], 2, cfg(mode))
    assert m["sync/verified"] == 1.0 and m["sync/resyncs"] == 0.0


def test_an_engine_still_wrong_after_a_resync_fails_loudly(world):
    learner, good, bad = world
    ray.get(bad.arm.remote("corrupt", times=2))
    with pytest.raises(WeightSyncError, match=r"engine 1 \(actor [0-9a-f]+\) still serve"):
        sync_weights(learner, [good, bad], 3, cfg())


def test_a_hung_engine_is_an_error_naming_it(world):
    learner, good, bad = world
    ray.get(bad.arm.remote("hang", delay_s=6.0))
    t0 = time.time()
    with pytest.raises(WeightSyncTimeout, match=r"engine 1 \(actor [0-9a-f]+\) did not take the weights of "
                                                r"version 4 within sync.timeout_s=1 s"):
        sync_weights(learner, [good, bad], 4, cfg(timeout_s=1.0))
    assert time.time() - t0 < 5.0
    ray.get(bad.arm.remote(None))  # waits for the hung call to end


def test_sharded_learners_stream_buckets_and_verify(world):
    learner, good, bad = world
    group = LearnerGroup("tiny-llama", world_size=2, num_cpus=0.25, lr=1e-3, num_threads=1)
    try:
        ray.get(bad.arm.remote("drop"))
        m = group.sync([good, bad], 5, cfg())
        assert m["sync/verified"] == 1.0 and m["sync/resyncs"] == 1.0
        assert m["sync/bytes"] == 4 * ray.get(learner.num_parameters.remote())
        # the sum of the two ranks' partial checksums is the unsharded model's (both start from seed 0)
        partials = ray.get([a.weights_checksum.remote() for a in group.actors])
        assert partials[0] == partials[1] == ray.get(learner.weights_checksum.remote())
    finally:
        group.close()
