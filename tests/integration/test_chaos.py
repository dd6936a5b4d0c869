"""The chaos run: a tiny 14-step GRPO run with a fixed seed, faulted by run.chaos (a reward that raises,
one that hangs past its deadline, a reward worker that dies, a killed engine, a killed learner, and the
newest checkpoint corrupted before a restart), finishes by itself with every step logged once, and its
final weights, optimizer state, torch RNG and metrics are bit-identical to the unfaulted run's."""
import json
import time
from pathlib import Path

import pytest

from rl.config import load_config
from rl.drivers import DRIVERS
from rl.run.logging import read_metrics
from rl.run.restarts import run_with_restarts

ROOT = Path(__file__).parent.parent.parent
PLUGINS = ROOT / "tests" / "fixtures" / "reward_plugins.py"
STEPS = 14
# checkpoints land after steps 1, 3, 5, ...; at step 12 the newest (step-11) is truncated and a learner
# killed, so the restart must fall back to step-9
FAULTS = ["reward_raise@2", "reward_hang@4", "kill_reward_worker@5", "kill_engine@7", "kill_learner@9",
          "corrupt_checkpoint@12"]
VARYING = ("time", "tokens_per_s", "chaos/", "run/restarts", "sync/s", "realloc/s", "offload/", "memory/")


def _cfg(tmp_path, name):
    return load_config(ROOT / "recipes" / "tiny.yaml", [
        f"run.output_dir={tmp_path}", f"run.name={name}", "run.progress_bar=false", f"trainer.steps={STEPS}",
        "run.checkpoint_every_steps=2", "run.max_restarts=3", "eval.before_after=false", "rollout.num_workers=2",
        f"rewards.0.fn={PLUGINS}:text_length", "rewards.0.timeout_s=2"])


def _final_state(run: Path) -> dict:
    """The last checkpoint's weights, optimizer and scheduler state and torch RNG, as bytes by name (the
    learner process's Python/numpy RNG states are left out: nothing in training draws from them, and a
    restarted process has its own)."""
    import torch
    last = sorted((run / "checkpoints").glob("step-*"))[-1]
    state = torch.load(last / "learner.pt", weights_only=False)
    flat = {}

    def walk(x, key):
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{key}/{k}")
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, f"{key}/{i}")
        else:
            flat[key] = x.numpy().tobytes() if torch.is_tensor(x) else repr(x)
    walk({k: state[k] for k in ("model", "optimizer", "scheduler")}, last.name)
    walk(state["rng"]["torch"], "torch_rng")
    assert len(flat) > 10
    return flat


def _stable(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith(VARYING)}


@pytest.mark.slow
def test_chaos_run_recovers_bit_identically(ray_local, tmp_path, capfd):
    t0 = time.time()
    run_with_restarts(DRIVERS.get("grpo"), _cfg(tmp_path, "calm"))
    t_calm = time.time() - t0
    cfg = _cfg(tmp_path, "chaos")
    cfg.run.chaos = FAULTS
    t0 = time.time()
    result = run_with_restarts(DRIVERS.get("grpo"), cfg)
    t_chaos = time.time() - t0
    err = capfd.readouterr().err
    calm, chaos = read_metrics(tmp_path / "calm" / "metrics.jsonl"), read_metrics(tmp_path / "chaos" / "metrics.jsonl")
    assert [r["step"] for r in chaos] == list(range(STEPS)), "every step logged exactly once"
    assert result["restarts"] == 3  # engine, learner, corrupted checkpoint
    assert json.loads((tmp_path / "chaos" / "chaos.json").read_text())["fired"] == FAULTS
    assert chaos[-1]["chaos/faults"] == len(FAULTS) and chaos[-1]["run/restarts"] == 3
    assert "checkpoint step-000011" in err and "truncated" in err, err[-4000:]
    assert err.count("died: its process ended without a Python exception") == 3, err[-4000:]
    for a, b in zip(calm, chaos):  # the reward faults were recovered without a scored error
        assert _stable(a) == _stable(b), (a["step"], {k: (a.get(k), b.get(k)) for k in _stable(a) if a.get(k) != b.get(k)})
    assert _final_state(tmp_path / "calm") == _final_state(tmp_path / "chaos")
    print(f"chaos: {len(FAULTS)} faults, {result['restarts']} restarts, {t_chaos:.0f} s vs {t_calm:.0f} s unfaulted")
