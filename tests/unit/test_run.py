"""The Run: resume reads the last checkpoint's driver state, drops the rows logged after it, keeps the
summary; checkpoint and eval cadences; a missing checkpoint on --resume is a config error."""
import json

import pytest

from rl.config import ConfigError, load_config
from rl.run.logging import read_metrics
from rl.run.run import Run


def cfg_in(tmp_path, *overrides):
    return load_config(None, [f"run.output_dir={tmp_path}", "run.name=r", "run.progress_bar=false",
                              "run.wandb_mode=disabled", *overrides])


def test_fresh_run_logs_checkpoints_at_the_cadence_and_the_last_step(tmp_path):
    run = Run(cfg_in(tmp_path, "run.checkpoint_every_steps=2"), total_steps=5, title="t")
    saved = []
    for step in run.steps():
        run.log(step, {"x": float(step)})
        if run.checkpoint(step, [], lambda: {"pos": step}):
            saved.append(step)
    assert saved == [1, 3, 4] and not run.resumed and run.start == 0
    run.summary["after"] = {"acc": 1.0}
    assert run.finish() == {"after": {"acc": 1.0}}
    assert json.loads((tmp_path / "r" / "summary.json").read_text()) == {"after": {"acc": 1.0}}
    assert [r["step"] for r in read_metrics(tmp_path / "r" / "metrics.jsonl")] == [0, 1, 2, 3, 4]


def test_resume_starts_after_the_checkpoint_and_drops_later_rows(tmp_path):
    cfg = cfg_in(tmp_path, "run.checkpoint_every_steps=2", "run.keep_checkpoints=5")
    run = Run(cfg, total_steps=4, title="t")
    run.summary["before"] = {"acc": 0.25}
    for step in run.steps():
        run.log(step, {"x": float(step)}, rollouts=[{"key": "k"}])
        if step < 2:  # the run dies after logging steps 2 and 3 but before their checkpoint
            run.checkpoint(step, [], lambda: {"pos": step})
    again = Run(cfg, resume=True, total_steps=4, title="t")
    assert again.resumed and again.start == 2 and again.restore([]) == {"next_step": 2, "summary": again.summary,
                                                                         "pos": 1}
    assert again.summary == {"before": {"acc": 0.25}}
    assert [r["step"] for r in read_metrics(tmp_path / "r" / "metrics.jsonl")] == [0, 1]
    assert [r["step"] for r in read_metrics(tmp_path / "r" / "rollouts.jsonl")] == [0, 1]
    assert list(again.steps()) == [2, 3]


def test_resume_without_a_checkpoint_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no checkpoint"):
        Run(cfg_in(tmp_path), resume=True, total_steps=3, title="t")


def test_eval_cadence_leaves_the_last_step_to_the_closing_eval(tmp_path):
    run = Run(cfg_in(tmp_path, "eval.every_steps=2"), total_steps=6, title="t")
    assert [s for s in range(6) if run.eval_due(s)] == [1, 3]
    assert not any(Run(cfg_in(tmp_path), total_steps=6, title="t").eval_due(s) for s in range(6))


def test_step_callbacks_see_every_logged_row(tmp_path):
    seen = []
    run = Run(cfg_in(tmp_path), total_steps=2, title="t", callbacks=[lambda step, row: seen.append((step, row["x"]))])
    for step in run.steps():
        run.log(step, {"x": step * 1.5})
    assert seen == [(0, 0.0), (1, 1.5)]
