"""Reshard between layouts across real Ray actors over gloo, bit-exact against the full model.

Real tiny-llama weights (names and shapes of a real Llama); every layout in a chain is checked
on every rank against the full parameter dict, box by box, with torch.equal.
"""
import pytest
import torch

from rollout.realloc.layout import Layout, ModelSpec, to_slices
from rollout.realloc.reshard import layout_boxes, moved_bytes, plan_reshard

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def tiny():
    from rl.workers.models import load_model
    from rl.workers.realloc import full_params
    model = load_model("tiny-llama", seed=0)
    return full_params(model), ModelSpec.from_hf_config(model.config)


def _assert_layout(ray, workers, layout, full, spec):
    shapes = {n: tuple(t.shape) for n, t in full.items()}
    for rank, shards in enumerate(ray.get([w.get_shards.remote() for w in workers])):
        assert {n: b for n, (b, _) in shards.items()} == layout_boxes(shapes, spec, layout, rank)
        for name, (box, tensor) in shards.items():
            assert torch.equal(tensor, full[name][to_slices(box)]), (str(layout), rank, name)


def _chain(ray, tiny, world_size, chain):
    from rl.workers.realloc import start_reshard_workers

    full, spec = tiny
    shapes = {n: tuple(t.shape) for n, t in full.items()}
    workers = start_reshard_workers("tiny-llama", chain[0], world_size, params=full, spec=spec)
    try:
        _assert_layout(ray, workers, chain[0], full, spec)
        for src, dst in zip(chain, chain[1:]):
            stats = ray.get([w.reshard.remote(dst) for w in workers])
            _assert_layout(ray, workers, dst, full, spec)
            sent = sum(s["bytes_sent"] for s in stats)
            assert sent == sum(s["bytes_received"] for s in stats)
            assert sent == moved_bytes(plan_reshard(shapes, spec, src, dst, world_size)) > 0
            print(f"reshard {src} -> {dst}: {sent} bytes, {max(s['seconds'] for s in stats):.3f} s")
    finally:
        ray.get([w.close.remote() for w in workers])
        for w in workers:
            ray.kill(w)


def test_two_processes_training_generation_pipeline_layouts(ray_local, tiny):
    # dp=2 ZeRO training -> tp=2 generation -> back; then pp=2 -> tp=2 -> dp=2 replicas
    _chain(ray_local, tiny, 2, [Layout(dp=2, zero=True), Layout(tp=2), Layout(dp=2, zero=True),
                                Layout(pp=2), Layout(tp=2), Layout(dp=2)])


def test_four_processes_dp2_tp2_to_tp4_to_pp2_tp2(ray_local, tiny):
    _chain(ray_local, tiny, 4, [Layout(dp=2, tp=2, zero=True), Layout(tp=4), Layout(tp=2, pp=2),
                                Layout(dp=2, tp=2, zero=True)])
