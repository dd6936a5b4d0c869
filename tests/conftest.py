import os

import pytest

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
