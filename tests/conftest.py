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
