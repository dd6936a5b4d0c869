"""The GEMM-width term of the plan cost model, against hand-computed numbers; ReaLHF specs load."""
import dataclasses

import pytest

from rollout.realloc.cluster import load_cluster_spec
from rollout.realloc.cost_model import Call, Hardware, LlamaShape, Strategy, call_seconds, gemm_width_factor, kernel_s

HW = dict(nodes=1, gpus_per_node=8, device_memory_gib=80, peak_tflops=1000, hbm_gbytes_per_s=3000,
          intra_node_gbytes_per_s=400, inter_node_gbytes_per_s=50, compute_efficiency=0.5,
          memory_efficiency=1.0, overhead_us_per_layer=0.0)
SHAPE = LlamaShape(layers=2, hidden=8, intermediate=16, heads=2, kv_heads=1, vocab=10)


def test_width_factor_by_hand():
    assert gemm_width_factor(256, 256) == 0.5
    assert gemm_width_factor(768, 256) == 0.75
    assert gemm_width_factor(8, 0.0) == 1.0  # off


def test_kernel_compute_slows_memory_bound_does_not():
    hw = Hardware(**HW, gemm_half_width=256)
    # 1 TFLOP at 500 TFLOP/s = 2 ms; width 256 halves the ceiling -> 4 ms
    assert kernel_s(1e12, 0, 0, hw) == pytest.approx(2e-3)
    assert kernel_s(1e12, 0, 0, hw, width=256) == pytest.approx(4e-3)
    # decode-like: 1 GFLOP (2 us, 4 us at half) under 3 GB at 3 TB/s = 1 ms -> the bytes decide
    assert kernel_s(1e9, 3e9, 0, hw, width=256) == pytest.approx(1e-3)


def test_inference_call_by_hand():
    # 64 seqs x 128 tokens = 8192 tokens, tp = pp = dp = 1: one pass, no communication
    # flops = 2 * 1232 * 8192 + 4 * 2 * 8192 * 128 * 8 = 87_293_952 -> / 5e14 = 1.7459e-7 s
    # bytes = 2 * 1352 params = 2704 B -> 9.0e-10 s (compute-bound); width 8 / (8 + 8) halves the ceiling
    call, s = Call("inference", 64, 64, 64), Strategy(1, 1, 1)
    off = Hardware(**HW)
    on = dataclasses.replace(off, gemm_half_width=8.0)
    assert call_seconds(SHAPE, call, s, off) == pytest.approx(87_293_952 / 5e14)
    assert call_seconds(SHAPE, call, s, on) == pytest.approx(2 * 87_293_952 / 5e14)


def test_tensor_parallel_train_loses_more_than_data_parallel():
    # 7B on 8 GPUs: tp shards (4096 / tp wide) lose ceiling, dp does not
    spec = load_cluster_spec("recipes/clusters/realhf-7b-8gpu.yaml")
    hw, shape = spec.hardware, spec.models["actor"]
    train = Call("train", 512, 1024, 1024, 4)
    off = dataclasses.replace(hw, gemm_half_width=0.0)
    dp_ratio = call_seconds(shape, train, Strategy(8, 1, 1), hw) / call_seconds(shape, train, Strategy(8, 1, 1), off)
    tp_ratio = call_seconds(shape, train, Strategy(1, 8, 1), hw) / call_seconds(shape, train, Strategy(1, 8, 1), off)
    assert dp_ratio < tp_ratio


@pytest.mark.parametrize("name", ["realhf-7b-8gpu", "realhf-13b-16gpu", "realhf-34b-32gpu", "realhf-70b-64gpu",
                                  "realhf-70bx4-128gpu", "realhf-7b-8gpu-a100"])
def test_realhf_specs_load(name):
    spec = load_cluster_spec(f"recipes/clusters/{name}.yaml")
    assert spec.name == name and spec.hardware.gemm_half_width == 256
    assert set(spec.models) == {"actor", "critic", "ref", "reward"}
