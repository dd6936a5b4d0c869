"""Sweep specs: validation gives one line naming the problem; values reach the config typed; rows rank
best first."""
from pathlib import Path

import pytest
import yaml

from rl.config import ConfigError
from rl.tools.sweep import main_sweep, tune_space
from rl.tools.sweep_spec import load_sweep, trial_bundles, trial_config
from rl.tools.sweep_results import rank, table

ROOT = Path(__file__).parent.parent.parent
TINY = str(ROOT / "recipes" / "tiny.yaml")


def spec_file(tmp_path, **fields):
    data = {"base": TINY, "space": {"trainer.lr": {"grid": [1e-4, 1e-3]}}, "metric": "reward/mean", **fields}
    data = {k: v for k, v in data.items() if v is not None}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def error_of(tmp_path, **fields) -> str:
    with pytest.raises(ConfigError) as e:
        load_sweep(spec_file(tmp_path, **fields))
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_a_valid_spec_loads_with_defaults(tmp_path):
    spec = load_sweep(spec_file(tmp_path, overrides={"trainer.steps": 2}))
    assert spec.name == "s" and spec.mode == "max" and spec.scope == "last" and spec.num_samples == 1
    assert spec.scheduler is None and spec.overrides == {"trainer.steps": 2}


@pytest.mark.parametrize("fields, needle", [
    ({"space": {}}, "space: empty"),
    ({"space": None}, "space: missing"),
    ({"space": {"trainer.lrr": {"grid": [1e-4]}}}, "space.trainer.lrr: unknown key 'trainer.lrr'; did you mean 'trainer.lr'"),
    ({"space": {"trainer.lr": {"grid": ["fast"]}}}, "space.trainer.lr: trainer.lr: expected float, got 'fast'"),
    ({"space": {"trainer.steps": {"uniform": [1, 5]}}}, "space.trainer.steps: trainer.steps: expected int"),
    ({"space": {"trainer.lr": {"uniform": [1e-3, 1e-4]}}}, "space.trainer.lr.uniform: expected [lo, hi] numbers with lo < hi"),
    ({"space": {"trainer.lr": {"loguniform": [0, 1e-3]}}}, "space.trainer.lr.loguniform: bounds must be > 0"),
    ({"space": {"trainer.lr": {"grid": []}}}, "space.trainer.lr.grid: expected a non-empty list"),
    ({"space": {"trainer.lr": {"normal": [0, 1]}}}, "space.trainer.lr: expected one of {grid"),
    ({"space": {"trainer.lr": [1e-4, 1e-3]}}, "space.trainer.lr: expected one of"),
    ({"metric": None}, "metric: missing"),
    ({"mode": "maximise"}, "mode: expected one of max, min"),
    ({"num_samples": 0}, "num_samples: expected an integer >= 1"),
    ({"max_failures": -1}, "max_failures: expected an integer >= 0"),
    ({"scheduler": {"name": "hyperband"}}, "scheduler.name: expected one of asha, fifo, got 'hyperband'"),
    ({"scheduler": {"name": "asha", "max_t": 2, "grace_period": 3}}, "scheduler.grace_period: 3 exceeds max_t 2"),
    ({"scheduler": {"name": "asha", "max_t": "ten"}}, "scheduler.max_t: expected a positive integer"),
    ({"scheduler": {"name": "asha", "patience": 2}}, "scheduler.patience: not a setting of asha"),
    ({"scheduler": {"name": "asha", "reduction_factor": 1}}, "scheduler.reduction_factor: must be > 1"),
    ({"base": "recipes/nope.yaml"}, "base: recipe 'recipes/nope.yaml' not found"),
    ({"overrides": {"trainer.stepz": 2}}, "unknown key 'trainer.stepz'"),
    ({"overrides": {"trainer.lr": 1e-5}}, "space.trainer.lr: also fixed in overrides"),
    ({"searcher": "optuna"}, "unknown sweep key 'searcher'"),
    ({"resources_per_trial": {"CPU": 0.5}}, "resources_per_trial.CPU: 0.5 is less than the 1.25 CPUs"),
    ({"resources_per_trial": {"CPU": -1}}, "resources_per_trial.CPU: expected a number >= 0"),
])
def test_bad_specs_give_one_line_naming_the_problem(tmp_path, fields, needle):
    assert needle in error_of(tmp_path, **fields)


def test_cli_exits_2_with_one_line_and_check_validates(tmp_path, capsys):
    assert main_sweep([str(spec_file(tmp_path, space={"trainer.nope": {"grid": [1]}}))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rl: sweep error: space.trainer.nope") and "\n" not in err
    assert main_sweep([str(spec_file(tmp_path)), "--check"]) == 0
    assert "spec OK" in capsys.readouterr().out
    assert main_sweep([str(tmp_path / "missing.yaml")]) == 2


def test_trial_values_reach_the_config_typed(tmp_path):
    cfg = trial_config(TINY, {"trainer.steps": 2, "rewards.0.weight": 2}, {"trainer.lr": 3e-4,
                                                                            "task.digits": [1, 2]})
    assert cfg.trainer.steps == 2 and cfg.trainer.lr == 3e-4 and cfg.task.digits == [1, 2]
    assert cfg.rewards[0].weight == 2.0 and isinstance(cfg.rewards[0].weight, float)
    assert cfg.model.name == "tiny-llama"  # the base recipe is kept underneath
    with pytest.raises(ConfigError, match="trainer.lr.x"):
        trial_config(TINY, {}, {"trainer.lr.x": 1})


def test_space_maps_to_tune_domains():
    from ray import tune
    space = tune_space({"a": {"grid": [1, 2]}, "b": {"choice": [3, 4]}, "c": {"uniform": [0.0, 1.0]},
                        "d": {"loguniform": [1e-5, 1e-3]}})
    assert space["a"] == {"grid_search": [1, 2]}
    assert isinstance(space["b"], tune.search.sample.Categorical) and space["b"].categories == [3, 4]
    assert (space["c"].lower, space["c"].upper) == (0.0, 1.0)
    assert isinstance(space["d"].get_sampler(), tune.search.sample.LogUniform)


def test_trial_bundles_follow_the_recipe():
    cfg = trial_config(TINY, {"rollout.num_workers": 2}, {})
    assert trial_bundles(cfg) == [{"CPU": 0.5}, {"CPU": 0.5}, {"CPU": 0.5}, {"CPU": 0.25}]
    dpo = trial_config(str(ROOT / "recipes" / "dpo_tiny.yaml"), {"eval.before_after": False}, {})
    assert trial_bundles(dpo) == [{"CPU": 0.5}]


def test_rows_rank_best_first_and_missing_values_last():
    rows = [{"trial": t, "last": v, "best": b, "steps": 3, "status": "DONE", "error": "", "param:x": i}
            for i, (t, v, b) in enumerate([("a", 0.2, 0.5), ("b", None, None), ("c", 0.9, 0.9), ("d", 0.4, 0.95)])]
    assert [r["trial"] for r in rank(rows, "max", "last")] == ["c", "d", "a", "b"]
    assert [r["trial"] for r in rank(rows, "max", "best")] == ["d", "c", "a", "b"]
    assert [r["trial"] for r in rank(rows, "min", "last")] == ["a", "d", "c", "b"]
    text = table(rank(rows, "max", "last"), "m", "last").splitlines()
    assert text[0].split() == ["rank", "trial", "x", "m", "(last)", "best", "steps", "status"]
    assert text[1].split()[:2] == ["1", "c"] and text[-1].split()[1] == "b"


def test_rows_come_from_the_trial_dirs_of_this_sweep(tmp_path):
    import json
    import os

    from rl.tools.sweep_spec import SweepSpec
    from rl.tools.sweep_results import collect_rows, write_results
    spec = SweepSpec(name="s", base=TINY, space={"trainer.lr": {"grid": [1, 2]}}, metric="m", mode="min")
    for name, lr, values, done in [("trial_00", 1e-4, [3.0, 2.0], True), ("trial_01", 1e-3, [1.5], False),
                                   ("trial_02", 1e-2, [0.1], True)]:
        run = tmp_path / name
        run.mkdir()
        (run / "config.yaml").write_text(yaml.safe_dump({"trainer": {"lr": lr}}))
        (run / "metrics.jsonl").write_text("".join(json.dumps({"step": i, "m": v}) + "\n" for i, v in enumerate(values)))
        if done:
            (run / "summary.json").write_text("{}")
    os.utime(tmp_path / "trial_02" / "config.yaml", (1.0, 1.0))  # an older sweep's trial: not ours
    rows = collect_rows(spec, tmp_path, started=1000.0)
    assert [(r["trial"], r["param:trainer.lr"], r["last"], r["best"], r["steps"], r["status"]) for r in rows] == [
        ("trial_01", 1e-3, 1.5, 1.5, 1, "STOPPED"), ("trial_00", 1e-4, 2.0, 2.0, 2, "DONE")]
    out = write_results(rows, spec, tmp_path)
    assert out["png"].stat().st_size > 1000 and len(out["csv"].read_text().splitlines()) == 3
