"""LoRA maths, adapter packing and `model.lora` config checks (hand-computed values)."""
import copy

import pytest
import torch

from rl.config import load_config
from rl.data.mapping import ConfigError
from rollout.lora import LoraMerger, lora_delta, merged_weight, pack_adapters, target_names, unpack_adapters
from rollout.weight_sync import bucket_tensors

ROOT = __import__("pathlib").Path(__file__).parent.parent.parent


def test_merged_weight_rank_one_by_hand():
    # B @ A = [[2], [1]] @ [[1, 0]] = [[2, 0], [1, 0]]; x 0.5 = [[1, 0], [0.5, 0]]
    w0 = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    w = merged_weight(w0, torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0], [1.0]]), 0.5)
    assert torch.equal(w, torch.tensor([[2.0, 2.0], [3.5, 4.0]]))
    assert torch.equal(w0, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))  # W0 is not touched


def test_lora_delta_rank_two_by_hand():
    # B @ A = [[1, 0], [1, 1]] @ [[1, 2], [0, 1]] = [[1, 2], [1, 3]]; scaling alpha / r = 4 / 2 = 2
    delta = lora_delta(torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 1.0]]), 2.0)
    assert torch.equal(delta, torch.tensor([[2.0, 4.0], [2.0, 6.0]]))


def test_merge_adds_in_fp32_and_keeps_the_base_dtype():
    # 1 + 0.001 in fp32 is 1.001; bf16 (8 bits of mantissa, step 2^-7 at 1.0) rounds it back to 1.0
    w = merged_weight(torch.ones(1, 1, dtype=torch.bfloat16), torch.tensor([[0.001]]), torch.tensor([[1.0]]), 1.0)
    assert w.dtype == torch.bfloat16 and float(w) == 1.0
    w = merged_weight(torch.ones(1, 1, dtype=torch.bfloat16), torch.tensor([[0.25]]), torch.tensor([[0.5]]), 2.0)
    assert float(w) == 1.25  # 1 + 2 * 0.5 * 0.25, exact in bf16


def test_lora_delta_matches_a_matmul():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 32, generator=g), torch.randn(48, 8, generator=g)
    assert torch.allclose(lora_delta(a, b, 0.5), 0.5 * b @ a, atol=1e-5)


def _adapters():
    return {"layer.q.weight": (torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0], [1.0]])),
            "layer.v.weight": (torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0], [1.0]]))}


def test_pack_unpack_round_trip_and_sizes():
    update = pack_adapters(_adapters(), 2.0, bucket_bytes=16)  # 16 bytes: several buckets
    assert len(update.buckets) > 1 and update.scaling == 2.0
    assert update.nbytes == 4 * (2 + 2) * 2  # fp32; (A: 1x2, B: 2x1) per weight, two weights
    assert target_names(update) == ["layer.q.weight", "layer.v.weight"]
    back = unpack_adapters(update)
    for name, (a, b) in _adapters().items():
        assert torch.equal(back[name][0], a) and torch.equal(back[name][1], b)


def test_merger_emits_merged_targets_or_everything():
    base = {"layer.q.weight": torch.ones(2, 2), "layer.v.weight": torch.zeros(2, 2), "norm.weight": torch.ones(2)}
    update = pack_adapters(_adapters(), 1.0, bucket_bytes=1 << 20)
    only = dict(t for b in LoraMerger(base).merge(update) for t in bucket_tensors(b))
    assert sorted(only) == ["layer.q.weight", "layer.v.weight"]
    assert torch.equal(only["layer.q.weight"], torch.tensor([[3.0, 1.0], [2.0, 1.0]]))  # 1 + [[2, 0], [1, 0]]
    assert torch.equal(only["layer.v.weight"], torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    everything = dict(t for b in LoraMerger(base, emit_all=True).merge(update) for t in bucket_tensors(b))
    assert sorted(everything) == sorted(base) and torch.equal(everything["norm.weight"], torch.ones(2))
    assert torch.equal(base["layer.q.weight"], torch.ones(2, 2))  # W0 kept: the next sync re-merges from it
    with pytest.raises(KeyError, match="does not hold"):
        LoraMerger({"norm.weight": torch.ones(2)}).merge(update)


def test_effective_weights_equal_peft_merge_and_unload():
    from transformers import LlamaForCausalLM

    from rl.workers.lora import LoraSettings, adapter_weights, effective_weights, wrap_policy
    from rl.workers.models import tiny_llama_config
    torch.manual_seed(0)
    model = wrap_policy(LlamaForCausalLM(tiny_llama_config(128)), LoraSettings(r=4, alpha=8))
    with torch.no_grad():
        for _, b in adapter_weights(model).values():
            b.normal_()
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    ours = dict(effective_weights(model, 8 / 4))
    theirs = dict(copy.deepcopy(model).merge_and_unload().named_parameters())
    assert sorted(ours) == sorted(theirs)
    assert all(torch.allclose(ours[n], theirs[n], atol=1e-6) for n in ours)
    assert not torch.equal(ours["model.layers.0.self_attn.q_proj.weight"],
                           model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight)


def _cfg(*overrides):
    return load_config(ROOT / "recipes" / "tiny.yaml", list(overrides))


def test_lora_config_parses_and_defaults_off():
    assert _cfg().model.lora is None
    lora = _cfg("model.lora.r=8", "model.lora.alpha=16").model.lora
    assert (lora.r, lora.alpha, lora.dropout, lora.target_modules) == (8, 16.0, 0.0, ["q_proj", "k_proj", "v_proj", "o_proj"])


@pytest.mark.parametrize("override, message", [
    ("model.lora.r=0", "model.lora.r: must be > 0, got 0"),
    ("model.lora.dropout=1.0", "model.lora.dropout: must be in [0, 1), got 1.0"),
    ("model.lora.target_modules=[]", "model.lora.target_modules: name at least one module"),
    ("model.lora.alpha=0", "model.lora.alpha: must be > 0"),
    ("model.lora.rank=8", "unknown key 'model.lora.rank'"),
])
def test_lora_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=__import__("re").escape(message)):
        _cfg(override)


def test_lora_config_rejects_what_it_cannot_sync():
    with pytest.raises(ConfigError, match="sync.transport object_store or broadcast"):
        _cfg("model.lora.r=8", "sync.transport=reshard")
    with pytest.raises(ConfigError, match="one learner"):
        _cfg("model.lora.r=8", "resources.learner.num_actors=2")
