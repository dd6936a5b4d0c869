"""trainer.max_staleness_steps on the tiny model, local Ray (rl/drivers/pipeline.py):

- k = 0 through the async machinery (background thread, queue, checkpointed in-flight draws) reproduces
  the synchronous loop's metrics and final weights exactly;
- k = 2 never trains on a sample more than 2 versions old (staleness = min(step, 2) on this schedule),
  and a run whose learner is killed mid-run (restart from the last checkpoint, the in-flight queue
  restored from it) reproduces the uninterrupted k = 2 run bit for bit.
"""
from pathlib import Path

import pytest

from rl.config import load_config
from rl.drivers import DRIVERS
from rl.run.logging import read_metrics
from rl.run.restarts import run_with_restarts

ROOT = Path(__file__).parent.parent.parent
VARYING = ("time", "tokens_per_s", "chaos/", "run/restarts", "sync/s", "realloc/s", "offload/", "memory/")


def _run(tmp_path, name, *overrides, chaos=()):
    cfg = load_config(ROOT / "recipes" / "tiny.yaml", [
        f"run.output_dir={tmp_path}", f"run.name={name}", "run.progress_bar=false", "eval.before_after=false",
        "run.checkpoint_every_steps=2", "run.max_restarts=1", *overrides])
    cfg.run.chaos = list(chaos)
    result = run_with_restarts(DRIVERS.get("grpo"), cfg)
    return result, read_metrics(tmp_path / name / "metrics.jsonl")


def _stable(rows):
    return [{k: v for k, v in r.items() if not k.startswith(VARYING)} for r in rows]


def _weights(run: Path) -> dict:
    import torch
    last = sorted((run / "checkpoints").glob("step-*"))[-1]
    state = torch.load(last / "learner.pt", weights_only=False)
    return {k: v.numpy().tobytes() for k, v in state["model"].items()}


@pytest.mark.slow
def test_k0_through_the_async_machinery_equals_the_synchronous_loop(ray_local, tmp_path):
    _, sync = _run(tmp_path, "sync", "trainer.steps=4")
    _, threaded = _run(tmp_path, "threaded", "trainer.steps=4", "trainer.rollout_thread=true")
    assert [r["staleness/max"] for r in threaded] == [0, 0, 0, 0]
    assert _stable(sync) == [{k: v for k, v in r.items() if not k.startswith("staleness/")} for r in _stable(threaded)]
    assert _weights(tmp_path / "sync") == _weights(tmp_path / "threaded")


@pytest.mark.slow
def test_k2_bounds_staleness_and_a_killed_run_resumes_exactly(ray_local, tmp_path):
    steps = ["trainer.steps=6", "trainer.max_staleness_steps=2", "algorithm.rollout_correction=icepop"]
    _, calm = _run(tmp_path, "calm", *steps)
    assert [r["staleness/max"] for r in calm] == [0, 1, 2, 2, 2, 2]
    assert all(r["staleness/dropped_samples"] == 0 for r in calm)
    assert all("mismatch/is_weight_mean" in r for r in calm)
    # killed at step 3: the restart resumes after step 1's checkpoint, batches 2..4 restored from it
    result, killed = _run(tmp_path, "killed", *steps, chaos=["kill_learner@3"])
    assert result["restarts"] == 1
    assert [r["step"] for r in killed] == list(range(6))
    assert _stable(calm) == _stable(killed)
    assert _weights(tmp_path / "calm") == _weights(tmp_path / "killed")
