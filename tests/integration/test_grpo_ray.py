"""The GRPO loop on local Ray with the tiny model: it trains and survives bad rewards (resume: tests/invariance/)."""
import re
from pathlib import Path

import torch

from rl.config import RewardConfig, load_config
from rl.drivers.grpo import train
from rl.drivers.rewards import score
from rl.run.logging import read_metrics
from rl.workers.models import load_model

HERE = Path(__file__).parent
PLUGINS = HERE.parent / "fixtures" / "reward_plugins.py"
ROOT = HERE.parent.parent


def tiny_cfg(tmp_path, name, *overrides):
    return load_config(ROOT / "recipes" / "tiny.yaml", [
        f"run.output_dir={tmp_path}", f"run.name={name}", "run.progress_bar=false",
        f"rewards.0.fn={PLUGINS}:text_length", *overrides])


def test_tiny_run_trains_and_writes_outputs(ray_local, tmp_path):
    summary = train(tiny_cfg(tmp_path, "e2e"))
    run = tmp_path / "e2e"
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2]
    for key in ("reward/mean", "loss", "entropy", "approx_kl", "response_length/mean", "tokens_per_s",
                "time/generate_s", "time/reward_s", "time/train_s", "time/sync_s", "effective_gradient_ratio"):
        assert key in rows[-1], key
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert all(r["reward/std"] > 0 and r["grad_norm"] > 0 for r in rows)
    assert (run / "curves.png").stat().st_size > 1000 and (run / "config.yaml").exists()
    logged = read_metrics(run / "rollouts.jsonl")
    assert len(logged) == 3 * 4 and all(len(r["rewards"]) == 4 for r in logged)
    assert "before" in summary and "after" in summary
    ckpt = sorted((run / "checkpoints").glob("step-*"))[-1]
    trained = torch.load(ckpt / "learner.pt", weights_only=False)["model"]
    init = load_model("tiny-llama", seed=0).state_dict()
    changed = sum(not torch.equal(trained[k], init[k]) for k in init)
    assert changed > len(init) // 2, f"only {changed}/{len(init)} tensors changed"


def test_rewards_that_raise_hang_or_return_nan_are_scored_and_counted(ray_local):
    cfgs = [RewardConfig(fn=f"{PLUGINS}:raises_on_second", on_error=-1.0),
            RewardConfig(fn=f"{PLUGINS}:hangs_on_second", timeout_s=3.0, on_error=0.0, weight=2.0)]
    res = score(cfgs, ["p", "p", "p"], ["a", "b", "c"], {"answer": ["1", "hang", "3"]})
    assert res.per_fn["raises_on_second"] == [0.5, 0.5, 0.5]  # per-sample retry: each batch of 1 succeeds
    assert res.per_fn["hangs_on_second"] == [1.0, 0.0, 1.0] and res.errors["hangs_on_second"] == 1
    assert res.total == [2.5, 0.5, 2.5]
    nan = RewardConfig(fn=f"{PLUGINS}:nan_and_none", on_error=-0.5)
    res = score([nan], ["p"] * 3, ["a", "b", "c"], {"answer": ["1"] * 3})
    assert res.per_fn["nan_and_none"] == [-0.5, None, 1.0] and res.errors["nan_and_none"] == 1
    assert res.total == [-0.5, 0.0, 1.0]
    twice = [RewardConfig(fn=f"{PLUGINS}:text_length", weight=1.0), RewardConfig(fn=f"{PLUGINS}:text_length", weight=2.0)]
    res = score(twice, ["p"], ["x" * 30], {"answer": ["1"]})
    assert list(res.per_fn) == ["text_length", "text_length#2"] and res.total == [1.5]


def test_run_with_a_raising_reward_completes(ray_local, tmp_path):
    cfg = tiny_cfg(tmp_path, "raising", "trainer.steps=1", "eval.before_after=false")
    cfg.rewards = [RewardConfig(fn=f"{PLUGINS}:raises_on_second", on_error=0.0),
                   RewardConfig(fn=f"{PLUGINS}:text_length")]
    train(cfg)
    row = read_metrics(tmp_path / "raising" / "metrics.jsonl")[0]
    assert row["reward_errors/raises_on_second"] == 0 and row["reward/mean"] >= 0.5
    assert row["reward/std"] > 0


def test_knapsack_budgets_vary_group_sizes_through_the_loop(ray_local, tmp_path):
    cfg = tiny_cfg(tmp_path, "knap", "trainer.steps=6", "eval.before_after=false", "task.train_size=8",
                   "task.eval_size=4", "allocation.name=knapsack", "allocation.min_samples_per_prompt=2", "allocation.max_samples_per_prompt=8",
                   f"rewards.0.fn={PLUGINS}:prompt_dependent_coin")
    train(cfg)
    rows = read_metrics(tmp_path / "knap" / "metrics.jsonl")
    assert rows[0]["budget_min"] == rows[0]["budget_max"] == 4  # epoch 1: no estimates yet, uniform
    later = [(r["budget_min"], r["budget_max"]) for r in rows[2:]]
    assert any(lo != hi for lo, hi in later), later  # estimates exist -> unequal groups were trained on
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)


def test_curriculum_writes_budget_and_caps_generation(ray_local, tmp_path):
    cfg = tiny_cfg(tmp_path, "curr", "trainer.steps=2", "eval.before_after=false", "allocation.name=curriculum",
                   "allocation.schedule=step_exponential", "allocation.budget_start_tokens=6",
                   "allocation.budget_gamma=0.5", "allocation.budget_period_steps=1", "rewards.0.fn=length_triangular")
    train(cfg)
    rows = read_metrics(tmp_path / "curr" / "metrics.jsonl")
    assert [r["length_budget_tokens"] for r in rows] == [6, 3]
    assert rows[0]["response_length/max"] <= 12 and rows[1]["response_length/max"] <= 6


def test_dapo_dynamic_sampling_and_overlong_shaping_run(ray_local, tmp_path):
    cfg = tiny_cfg(tmp_path, "dapo", "trainer.steps=2", "eval.before_after=false",
                   f"rewards.0.fn={PLUGINS}:prompt_dependent_coin", "algorithm.dynamic_sampling=true",
                   "algorithm.max_generation_rounds=3", "algorithm.overlong_max_tokens=8",
                   "algorithm.overlong_cache_tokens=4", "algorithm.advantage=rloo", "algorithm.kl_coef=0.04",
                   "algorithm.kl_estimator=k3")
    train(cfg)
    rows = read_metrics(tmp_path / "dapo" / "metrics.jsonl")
    for r in rows:
        assert 1 <= r["generation_rounds"] <= 3 and torch.isfinite(torch.tensor(r["loss"]))
        assert r["kl_ref"] >= 0  # k3 to the frozen reference is non-negative
        # every sample of the random model runs to the 8-token cap = L_max: shaping ((8-4) - 8)/4 = -1
        assert r["response_length/mean"] == 8 and r["reward/mean"] < 0


def test_v0_predictions_set_budgets_for_unseen_prompts(ray_local, tmp_path):
    import yaml
    from value_synth import write_run

    from rl.v0.cli import main_value
    runs = [write_run(tmp_path / f"hist{i}" / "rollouts.jsonl", skill, 0.05, steps=10, seed=i)
            for i, skill in enumerate([0.5, 1.5, 2.5])]
    (tmp_path / "hist0" / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "tiny-llama"}}))
    predictor = tmp_path / "v0.pt"
    assert main_value(["train", *map(str, runs), "--out", str(predictor), "--window-steps", "5",
                       "--steps", "60", "--seed", "0"]) == 0
    cfg = tiny_cfg(tmp_path, "v0run", "trainer.steps=2", "eval.before_after=false", "task.digits=[1, 2]",
                   "task.train_size=40", "allocation.name=knapsack", "allocation.min_samples_per_prompt=2", "allocation.max_samples_per_prompt=8",
                   f"allocation.v0_predictor={predictor}", f"rewards.0.fn={PLUGINS}:prompt_dependent_coin")
    train(cfg)
    rows = read_metrics(tmp_path / "v0run" / "metrics.jsonl")
    assert rows[0]["budget_min"] == rows[0]["budget_max"] == 4  # no context yet: uniform
    assert rows[1]["budget_min"] < rows[1]["budget_max"]  # unseen prompts split by predicted success


def test_a_killed_learner_restarts_the_run_from_its_last_checkpoint(ray_local, tmp_path, capfd):
    """SIGKILL the learner's process mid-run (as the OOM killer would): the run resumes from its last
    checkpoint by itself and ends with every step logged once."""
    import os
    import signal
    import threading
    import time

    import psutil

    from rl.drivers import DRIVERS
    from rl.run.restarts import run_with_restarts
    # 2 engines + the learner + a reward task fit local Ray's 2 CPUs only if the dead attempt's
    # engines are gone: the restart would wait for resources forever if they lingered
    cfg = tiny_cfg(tmp_path, "killed", "trainer.steps=6", "run.checkpoint_every_steps=2", "eval.before_after=false",
                   "rollout.num_workers=2")
    result, errors = {}, []

    def run():
        try:
            result.update(run_with_restarts(DRIVERS.get("grpo"), cfg))
        except Exception as e:  # noqa: BLE001 - surfaced by the assert below
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    metrics, deadline = tmp_path / "killed" / "metrics.jsonl", time.time() + 600
    while time.time() < deadline and thread.is_alive():
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        if len(lines) >= 3:  # steps 0-2 logged; the checkpoint after step 1 is on disk
            break
        time.sleep(0.2)
    # Ray titles an actor's process "ray::<Class>[.<method>]"
    victims = [p for p in psutil.process_iter(["cmdline"])
               if (p.info["cmdline"] or [""])[0].startswith("ray::SyncingLearner")]
    assert victims, "no live learner to kill"
    for p in victims:
        os.kill(p.pid, signal.SIGKILL)
    thread.join(timeout=600)
    assert not thread.is_alive() and not errors, errors
    assert result["restarts"] == 1
    assert [r["step"] for r in read_metrics(metrics)] == [0, 1, 2, 3, 4, 5]
    # killed inside step 3: the checkpoint after step 1 (or, on a starved test thread, step 3) is the one
    err = capfd.readouterr().err
    assert re.search(r"restarting from its last checkpoint \(step-00000[13]\)", err)
    # the death explained: which actor, where, and that no OOM kill took it (a SIGKILL from outside)
    assert re.search(r"rl: SyncingLearner .*\(pid \d+, node [\d.]+\) died: its process ended without a Python exception", err), err[-3000:]
