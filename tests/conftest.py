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
