import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))  # test helpers: `from value_synth import ...`

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for the whole test session."""
    import ray

    from rl.workers.ray_setup import init_ray
    init_ray()
    yield ray


def pytest_sessionstart(session):
    """Free disk up front (also under -q): a full disk shows up later as scattered ENOSPC errors in
    unrelated tests."""
    import shutil
    import tempfile

    tmp = tempfile.gettempdir()
    free_gib = shutil.disk_usage(tmp).free / 2**30
    line = f"free disk under {tmp}: {free_gib:.1f} GiB"
    if free_gib < 2.5:
        line += " -- LOW: the suite peaks at ~1.6 GiB beyond .venv (one SmolLM2 checkpoint, Ray logs)"
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)


# the tiny random Llama and DPO pairs, shared by the learner/engine tests in integration/ and invariance/
@pytest.fixture(scope="module")
def tiny():
    import torch

    from rl.workers.models import load_policy
    torch.manual_seed(0)
    return load_policy("tiny-llama", seed=0)


@pytest.fixture(scope="module")
def tok():
    from rl.workers.models import load_tokenizer
    return load_tokenizer("tiny-llama")


@pytest.fixture(scope="module")
def enc(tok):
    from learners import PAIRS

    from rl.data.prefs import encode_pairs
    return encode_pairs(tok, PAIRS, max_length_tokens=128)


@pytest.fixture(autouse=True)
def _no_leaked_placement_groups(request):
    """Backstop between tests: a test that leaves its placement group behind (a failure before its own
    cleanup ran) would starve every later test of CPUs and make them time out one after another. Its
    groups are removed here (removing a group stops the actors placed in it) and the leak is reported
    as a warning naming the test; tests still stop what they start by their own handles."""
    yield
    if "ray" not in sys.modules:
        return
    import ray
    if not ray.is_initialized():
        return
    from ray._raylet import PlacementGroupID
    from ray.util import placement_group_table, remove_placement_group
    from ray.util.placement_group import PlacementGroup
    leaked = [pid for pid, row in placement_group_table().items() if row.get("state") in ("CREATED", "PENDING", "RESCHEDULING")]
    for pid in leaked:
        remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(pid))))
    if leaked:
        import warnings
        warnings.warn(f"{request.node.nodeid} left {len(leaked)} placement group(s) behind; removed them")


@pytest.fixture(scope="session")
def small_llama_folder(tmp_path_factory):
    """A random Llama (SmolLM2 tokenizer) small enough for seconds-long tests whose head size vLLM's CPU
    attention takes (64; the tiny model's 16 it refuses) and whose 4 heads / 2 kv heads split over 2 ranks."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rl.workers.models import SMOLLM2, load_tokenizer
    tok = load_tokenizer(SMOLLM2)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=2048,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True,
                      initializer_range=0.2)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(cfg)
    folder = tmp_path_factory.mktemp("small-llama")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)
