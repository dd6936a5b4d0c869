"""Memory preflight (rl/workers/preflight.py): every formula against hand-computed values, bundles and
phases, and the one-line refusal. No model is loaded: shapes and prompt lengths are given."""
import pytest

from rl.config import ConfigError, load_config
from rl.workers import preflight as pf
from rl.workers.placement import Role

MIB = 2**20
# h=8, n=2 layers, a=2 heads, 1 kv head, d=4 (a*d = 8, k = 4), i=16, V=32
TINY = pf.ModelShape(num_params=1000, hidden=8, layers=2, heads=2, kv_heads=1, head_dim=4, intermediate=16, vocab=32)
SMOL = pf.ModelShape(num_params=134515008, hidden=576, layers=30, heads=9, kv_heads=3, head_dim=64,
                     intermediate=1536, vocab=49152)  # SmolLM2-135M's config


def test_weights_grads_and_adamw_state():
    assert pf.weights_mb(2**20, 4) == 4.0  # 1 Mi fp32 parameters
    assert pf.weights_mb(2**20, 4, world_size=2) == 2.0  # fsdp: half per rank
    assert pf.weights_mb(2**20, 2) == 2.0  # bf16
    assert pf.optimizer_mb(2**20, 4) == 8.0  # exp_avg + exp_avg_sq


def test_layer_elements_per_token():
    # per query token: 4h + 5ad + 2k + 4i = 32 + 40 + 8 + 64 = 144; per key position: 2ad = 16
    assert pf.layer_token_floats(TINY) == (144, 16)


def test_learner_activations_shared_prefill():
    # S=4 samples from G=2 prompts, Lp=3, T=2, fp32:
    # layers: n * (144 * (G*Lp + S*T) + 16 * (G*Lp + S*(Lp+T))) * 4 = 2 * (144*14 + 16*26) * 4 = 19456 bytes
    # vocab: 4 * S*T*V*4 = 4 * 4*2*32 * 4 = 4096 bytes
    got = pf.learner_activations_mb(TINY, samples=4, groups=2, prompt_tokens=3, completion_tokens=2,
                                    compute_bytes=4, checkpointing=False)
    assert got == pytest.approx((19456 + 4096) / MIB)


def test_learner_activations_with_gradient_checkpointing():
    # L = 5: every layer's input n*S*L*h = 2*4*5*8 = 320, one layer recomputed (144+16)*S*L = 3200 -> *4 = 14080
    got = pf.learner_activations_mb(TINY, samples=4, groups=2, prompt_tokens=3, completion_tokens=2,
                                    compute_bytes=4, checkpointing=True)
    assert got == pytest.approx((14080 + 4096) / MIB)


def test_kv_cache_and_decode_logits():
    # 2 * n * kv_heads * d * b * tokens = 2*2*1*4*4*1024 = 65536 bytes
    assert pf.kv_cache_mb(TINY, 1024, 4) == 65536 / MIB
    assert pf.kv_cache_mb(TINY, 1024, 2) == 32768 / MIB
    assert pf.decode_logits_mb(TINY, 8) == 4 * 8 * 32 * 4 / MIB


def test_engine_rows():
    assert pf.engine_rows(8, 8, 1) == 64
    assert pf.engine_rows(8, 8, 3) == 24  # ceil(8/3) = 3 prompts x 8 on the busiest engine
    assert pf.engine_rows(64, 8, 1) == 256  # max_batch_samples
    assert pf.engine_rows(1, 300, 1) == 300  # one request is never split


def test_workload_per_rank_micro_batch_and_fsdp_shard():
    cfg = load_config(None, ["trainer.microbatch_samples=64", "trainer.minibatch_samples=64",
                             "resources.learner.num_actors=2"])
    roles = {"learner": Role(2), "engine": Role(1)}
    w = pf.workload(cfg, roles, prompt_tokens=48, shape=TINY, device_mb=None)
    assert (w.samples, w.groups, w.shard, w.rows, w.completion_tokens) == (32, 4, 2, 64, 16)
    cfg = load_config(None, ["resources.learner.num_actors=2", "resources.learner.sharding=ddp"])
    assert pf.workload(cfg, roles, 48, TINY, None).shard == 1  # ddp replicates


PER_ROLE = {"learner": {"params": 100.0, "grads": 100.0, "optimizer": 200.0, "activations": 300.0, "baseline": 370.0},
            "engine": {"weights": 50.0, "kv cache": 40.0, "activations": 10.0, "baseline": 370.0}}
MOVES = {"engine_sleep": True, "offload_optimizer": True, "offload_params": False}


def test_colocated_gpu_bundle_peaks_in_the_larger_phase():
    roles = {"learner": Role(1, gpus=0.5), "engine": Role(1, gpus=0.5, colocate_with="learner")}
    [e] = pf.bundle_estimates(roles, PER_ROLE, MOVES, gpu_baseline=500.0)
    # train: learner 100+100+200+300+500 + sleeping engine 500 = 1700
    # generate: learner params+grads+context 700 (AdamW offloaded) + engine 50+40+10+500 = 1300
    assert (e["phase"], e["need_mb"], e["gpus"], e["actors"]) == ("train", 1700.0, 1.0, ["learner rank 0", "engine 0"])


def test_cpu_bundles_hold_everything():
    roles = {"learner": Role(1), "engine": Role(1, colocate_with="learner")}
    [e] = pf.bundle_estimates(roles, PER_ROLE, MOVES)
    assert e["need_mb"] == 1070.0 + 470.0  # host memory is the device: nothing is offloaded
    separate = pf.bundle_estimates({"learner": Role(1), "engine": Role(2)}, PER_ROLE, MOVES)
    assert [b["need_mb"] for b in separate] == [1070.0, 470.0, 470.0]


def _smol_cfg(*overrides):
    return load_config(None, ["trainer.microbatch_samples=64", "trainer.minibatch_samples=64",
                              "placement.mode=colocated", *overrides])


def test_refusal_names_bundle_part_estimate_budget_and_knob():
    cfg = _smol_cfg("placement.memory_budget_mb=4000")
    roles = {"learner": Role(1), "engine": Role(1, colocate_with="learner")}
    with pytest.raises(ConfigError) as e:
        pf.check(cfg, roles, shape=SMOL, prompt_tokens=48, host_mb=1e9)
    msg = str(e.value)
    acts = pf.learner_activations_mb(SMOL, 64, 8, 48, 16, 4, False)
    est = pf.estimate(cfg, roles, SMOL, 48)[0][0]["need_mb"]
    assert "\n" not in msg
    assert msg.startswith(f"preflight: bundle 0 (learner rank 0 + engine 0) needs ~{est:.0f} MiB, budget 4000 MiB "
                          "(placement.memory_budget_mb): ")
    assert f"the largest part is learner rank 0 activations ~{acts:.0f} MiB (micro-batch 64 x 64 tokens)" in msg
    assert msg.endswith("lower trainer.microbatch_samples or set trainer.gradient_checkpointing: true")


def test_refusal_knob_follows_the_recipe():
    cfg = _smol_cfg("placement.memory_budget_mb=3000", "trainer.gradient_checkpointing=true",
                    "trainer.microbatch_samples=4")
    with pytest.raises(ConfigError, match=r"largest part is learner rank 0 optimizer ~1026 MiB \(134.5M parameters "
                                          r"in float32\); shard the learner state over more ranks \(resources.learner"
                                          r".num_actors: 2 with resources.learner.sharding: fsdp\) or set "
                                          r"model.master_dtype: bfloat16$"):
        pf.check(cfg, {"learner": Role(1), "engine": Role(1, colocate_with="learner")}, SMOL, 48, host_mb=1e9)
    gpu = {"learner": Role(1, gpus=0.5), "engine": Role(1, gpus=0.5, colocate_with="learner")}
    with pytest.raises(ConfigError, match=r"optimizer ~1026 MiB .*; set placement.offload_optimizer: true or shard"):
        pf.check(_smol_cfg("placement.memory_budget_mb=3000", "trainer.gradient_checkpointing=true",
                           "trainer.microbatch_samples=4", "placement.offload_optimizer=false"), gpu, SMOL, 48,
                 host_mb=1e9, gpu_mb=1e6)


def test_cpu_bundles_share_the_host_memory():
    cfg = load_config(None, [])
    roles = {"learner": Role(1), "engine": Role(1)}
    got = pf.check(cfg, roles, SMOL, 48, host_mb=1e9)
    need = sum(b["need_mb"] for b in got)
    with pytest.raises(ConfigError, match=rf"^preflight: the run's 2 CPU bundle\(s\) \(learner rank 0; engine 0\) "
                                          rf"need ~{need:.0f} MiB, budget {need - 1:.0f} MiB \(host MemAvailable"):
        pf.check(cfg, roles, SMOL, 48, host_mb=need - 1)
    pf.check(load_config(None, [f"placement.memory_budget_mb={need - 1}"]), roles, SMOL, 48, host_mb=need - 1)


def test_gpu_bundle_budget_is_its_share_of_the_device():
    cfg = _smol_cfg()
    roles = {"learner": Role(1, gpus=0.5), "engine": Role(1, gpus=0.5, colocate_with="learner")}
    [e] = pf.check(cfg, roles, SMOL, 48, host_mb=1.0, gpu_mb=80000.0)  # host RAM does not bound a GPU bundle
    with pytest.raises(ConfigError, match=rf"needs ~{e['need_mb']:.0f} MiB, budget 4000 MiB \(1 x 4000 MiB GPU"):
        pf.check(cfg, roles, SMOL, 48, host_mb=1.0, gpu_mb=4000.0)
