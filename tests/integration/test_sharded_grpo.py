"""GRPO with 2 sharded learner actors (FSDP2 over gloo) on the tiny model: the same steps as one learner
(same samples, so the same loss, gradient norm and, through the synced weights, the same next step),
both ranks placed, checkpoints from both ranks."""
from pathlib import Path

import json

import pytest

from rl.config import ConfigError, load_config
from rl.drivers.grpo import train
from rl.run.logging import read_metrics

ROOT = Path(__file__).parent.parent.parent
PLUGINS = ROOT / "tests" / "fixtures" / "reward_plugins.py"


def cfg(tmp_path, name, *overrides):
    return load_config(ROOT / "recipes" / "tiny.yaml", [
        f"run.output_dir={tmp_path}", f"run.name={name}", "run.progress_bar=false", "trainer.steps=2",
        "eval.before_after=false", "run.checkpoint_every_steps=2", f"rewards.0.fn={PLUGINS}:text_length",
        "resources.learner.num_cpus=0.25", *overrides])


def test_two_fsdp_learners_train_like_one(ray_local, tmp_path):
    train(cfg(tmp_path, "one"))
    train(cfg(tmp_path, "two", "resources.learner.num_actors=2"))
    one, two = (read_metrics(tmp_path / n / "metrics.jsonl") for n in ("one", "two"))
    assert [r["step"] for r in two] == [0, 1]
    assert all(r["sync/verified"] == 1.0 and r["sync/resyncs"] == 0.0 for r in one + two)
    for a, b in zip(one, two):
        assert a["reward/mean"] == b["reward/mean"]  # the same samples: the weights synced after step 0 agree
        for k in ("loss", "grad_norm", "entropy", "clip_frac"):
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6), (a["step"], k)
    where = json.loads((tmp_path / "two" / "placement.json").read_text())
    assert {"learner", "learner1", "engine0"} <= where.keys()
    ckpt = sorted((tmp_path / "two" / "checkpoints").glob("step-*"))[-1]
    assert (ckpt / "dcp").is_dir() and (ckpt / "hf" / "config.json").exists()


def test_sharded_learners_refuse_what_they_do_not_support():
    with pytest.raises(ConfigError, match="sync.mode: full"):
        load_config(ROOT / "recipes" / "tiny.yaml", ["resources.learner.num_actors=2", "sync.mode=delta"])
    with pytest.raises(ConfigError, match="set sync.mode: full"):
        load_config(ROOT / "recipes" / "dpo_tiny.yaml", ["resources.learner.num_actors=2", "sync.mode=delta"])
    assert load_config(ROOT / "recipes" / "dpo_tiny.yaml", ["resources.learner.num_actors=2"]).resources.learner.num_actors == 2
