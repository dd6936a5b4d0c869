import os

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for the whole test session."""
    import ray

    from rl.workers import init_ray
    init_ray()
    yield ray


def pytest_report_header(config):
    """Free disk up front: a full disk shows up later as scattered ENOSPC errors in unrelated tests."""
    import shutil
    import tempfile

    tmp = tempfile.gettempdir()
    free_gib = shutil.disk_usage(tmp).free / 2**30
    line = f"free disk under {tmp}: {free_gib:.1f} GiB"
    if free_gib < 4:
        line += " -- LOW: the suite needs ~4 GiB (SmolLM2 cache, one checkpoint at a time, Ray logs)"
    return line
