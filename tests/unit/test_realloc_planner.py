"""Cost formulas against hand-computed numbers, memory model, spec errors, MH search."""
import dataclasses

import pytest

from rollout.realloc.cluster import PRESETS, ClusterSpecError, parse_cluster_spec
from rollout.realloc.cost_model import (OPTIMIZER_BYTES_PER_PARAM, Call, Hardware, LlamaShape, Strategy,
                                        allreduce_s, call_memory_bytes, call_seconds, forward_flops, kernel_s,
                                        pipeline_s)
from rollout.realloc.planner import Candidate, PlanModel, realloc_seconds
from rollout.realloc.search import colocated, half_half, mh_search, plan_cluster

HW = dict(nodes=1, gpus_per_node=8, device_memory_gib=80, peak_tflops=1000, hbm_gbytes_per_s=3000,
          intra_node_gbytes_per_s=400, inter_node_gbytes_per_s=50)
SHAPE = LlamaShape(layers=2, hidden=8, intermediate=16, heads=2, kv_heads=1, vocab=10)


def spec(**over):
    raw = {"name": "t", "hardware": dict(HW), "models": {"actor": "llama-7b", "critic": "llama-7b",
           "ref": "llama-7b", "reward": "llama-7b"},
           "workload": {"algorithm": "ppo", "batch_seqs": 128, "prompt_len": 256, "gen_len": 256}}
    for k, v in over.items():
        raw[k] = v
    return parse_cluster_spec(raw)


def test_llama_counts_and_flops_by_hand():
    # layer: 2*8*8 (q, o) + 2*8*4 (k, v: 1 head of dim 4) + 3*8*16 + 2*8 = 128 + 64 + 384 + 16 = 592
    assert SHAPE.layer_params == 592
    assert SHAPE.num_params == 2 * 592 + 2 * 10 * 8 + 8
    assert SHAPE.matmul_params == 2 * 576 + 80
    assert forward_flops(SHAPE, 3, 5) == 2 * 1232 * 3 + 4 * 2 * 3 * 5 * 8
    assert abs(PRESETS["llama-7b"].num_params / 6.74e9 - 1) < 0.01
    assert abs(PRESETS["llama-70b"].num_params / 68.98e9 - 1) < 0.01


def test_roofline_allreduce_and_pipeline_by_hand():
    hw = Hardware(**HW, compute_efficiency=0.5, memory_efficiency=1.0, overhead_us_per_layer=10)
    assert kernel_s(1e12, 0, 0, hw) == pytest.approx(2e-3)  # 1 TFLOP at 500 TFLOP/s
    assert kernel_s(0, 3e9, 4, hw) == pytest.approx(1e-3 + 40e-6)
    assert allreduce_s(8e9, 4, 400, 10) == pytest.approx(2 * 3 / 4 * 8e9 / 400e9 + 6 * 10e-6)
    assert allreduce_s(8e9, 1, 400, 10) == 0.0
    assert pipeline_s(1.0, 4, 2) == 5.0


def test_memory_model_by_hand():
    hw = Hardware(**HW)
    n = SHAPE.num_params
    m = call_memory_bytes(SHAPE, Call("train", 8, 4, 4, minibatches=2), Strategy(2, 2, 1), hw)
    assert m["params"] == 2 * n / 2 and m["grads"] == 2 * n / 2
    assert m["optimizer"] == OPTIMIZER_BYTES_PER_PARAM * n / 4
    # one 8-token sequence per micro-batch, 1 in flight (pp=1): 2 layers * 8 * 34 * 8 / 2 + logits
    assert m["activations"] == pytest.approx(2 * 8 * 34 * 8 / 2 + 8 * 4 * 10 / 2)
    g = call_memory_bytes(SHAPE, Call("generate", 8, 4, 4), Strategy(2, 1, 1), hw)
    assert g["kv_cache"] == 4 * 8 * (2 * 2 * 1 * 4 * 2)  # 4 seqs x 8 tokens x (K,V x layers x kv x 4 x 2 B)


def test_more_devices_are_not_slower_for_compute_bound_training():
    hw = Hardware(**HW)
    shape = PRESETS["llama-7b"]
    call = Call("train", 256, 512, 512, 4)
    assert call_seconds(shape, call, Strategy(8, 1, 1), hw) < call_seconds(shape, call, Strategy(2, 1, 1), hw)


def test_realloc_cost_zero_for_same_layout_and_local_subset():
    hw = Hardware(**HW)
    shape = PRESETS["llama-7b"]
    a = Candidate(0, 8, Strategy(8, 1, 1))
    assert realloc_seconds(shape, a, a, hw) == 0.0
    # every device already holds the full model: going to tp=2 moves nothing but latency
    assert realloc_seconds(shape, a, Candidate(0, 8, Strategy(4, 2, 1)), hw) < 1e-4
    # onto fresh devices of the same node: 2 B * n over NVLink into each device, node total
    far = realloc_seconds(shape, Candidate(0, 4, Strategy(4, 1, 1)), Candidate(4, 4, Strategy(4, 1, 1)), hw)
    assert far == pytest.approx(4 * 2 * shape.num_params / 400e9 + 10e-6)


@pytest.mark.parametrize("bad,key", [
    ({"hardware": {**HW, "gpus": 8}}, "hardware.gpus: unknown key"),
    ({"hardware": {k: v for k, v in HW.items() if k != "nodes"}}, "hardware.nodes: missing"),
    ({"hardware": {**HW, "nodes": "two"}}, "hardware.nodes: expected int"),
    ({"models": {"actor": "llama-9b", "critic": "llama-7b"}}, "models.actor: unknown model"),
    ({"workload": {"algorithm": "dpo"}}, "workload.algorithm"),
    ({"extra": 1}, "extra: unknown key"),
])
def test_bad_specs_name_the_key(bad, key):
    with pytest.raises(ClusterSpecError, match=key):
        spec(**bad)


def test_mh_is_deterministic_and_never_worse_than_heuristics():
    model = PlanModel(spec())
    a = mh_search(model, seed=3, iters=600)
    b = mh_search(PlanModel(spec()), seed=3, iters=600)
    assert a.plan == b.plan and a.accepted == b.accepted
    res = plan_cluster(model, seed=0, iters=600)
    best_h = min(r.evaluation.makespan_s for k, r in res.items() if k != "mh" and r.evaluation)
    assert not res["mh"].evaluation.oom and res["mh"].evaluation.makespan_s <= best_h


def test_search_returns_a_valid_plan_when_most_plans_are_oom():
    # 7B PPO on 8 x 48 GiB: most random plans do not fit; the search still ends on one that does
    import random
    model = PlanModel(spec(hardware={**HW, "device_memory_gib": 48}))
    rng = random.Random(0)
    samples = [model.evaluate([rng.randrange(len(c)) for c in model.cands]).oom for _ in range(50)]
    assert sum(samples) > 25
    res = mh_search(model, seed=1, iters=1500)  # random start, no heuristic help
    assert res.evaluation is not None and not res.evaluation.oom
    assert not model.evaluate(res.plan).oom
    # and on a cluster where nothing fits it reports no plan rather than an OOM one
    none = mh_search(PlanModel(spec(hardware={**HW, "device_memory_gib": 1})), seed=1, iters=200)
    assert none.plan is None and colocated(PlanModel(spec(hardware={**HW, "device_memory_gib": 1}))).plan is None


def test_grpo_graph_has_no_critic_and_half_half_splits_the_node():
    model = PlanModel(spec(models={"actor": "llama-7b", "ref": "llama-7b"},
                           workload={"algorithm": "grpo", "batch_seqs": 64, "prompt_len": 128, "gen_len": 128}))
    assert [n.name for n in model.nodes] == ["actor_gen", "ref_inf", "actor_train"]
    hh = half_half(model)
    cands = [model.cands[i][j] for i, j in enumerate(hh.plan)]
    assert {(c.start, c.size) for c in cands} == {(0, 4), (4, 4)}
    assert dataclasses.asdict(hh.evaluation)["realloc_s"]["actor:actor_train"] > 0
