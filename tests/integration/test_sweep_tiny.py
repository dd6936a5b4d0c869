"""`rl sweep` on local Ray: a 2 x 2 grid (lr x clip-higher) of the tiny GRPO recipe as Ray Tune trials
with ASHA; every trial runs the toolkit's driver in its own run dir and reports each step."""
import json
from pathlib import Path

import yaml

from rl.run.logging import read_metrics
from rl.tools.sweep import run_sweep
from rl.tools.sweep_spec import load_sweep

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
PLUGINS = HERE.parent / "fixtures" / "reward_plugins.py"


def test_tiny_grid_sweep_runs_four_trials_and_writes_results(ray_local, tmp_path, capsys):
    spec_path = tmp_path / "grid.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "grid", "base": str(ROOT / "recipes" / "tiny.yaml"),
        "overrides": {"run.output_dir": str(tmp_path / "runs"), "trainer.steps": 3, "eval.before_after": False,
                      "rewards.0.fn": f"{PLUGINS}:text_length", "run.checkpoint_every_steps": 0,
                      "algorithm.updates_per_batch": 2},
        "space": {"trainer.lr": {"grid": [1.0e-4, 3.0e-3]}, "algorithm.eps_high": {"grid": [0.2, 0.28]}},
        "metric": "reward/mean", "mode": "max",
        "scheduler": {"name": "asha", "max_t": 3, "grace_period": 2, "reduction_factor": 2}}))
    rows = run_sweep(load_sweep(spec_path))
    sweep_dir = tmp_path / "runs" / "grid"
    assert len(rows) == 4 and [r["rank"] for r in rows] == [1, 2, 3, 4]
    assert {(r["param:trainer.lr"], r["param:algorithm.eps_high"]) for r in rows} == \
        {(1e-4, 0.2), (1e-4, 0.28), (3e-3, 0.2), (3e-3, 0.28)}
    assert all(r["status"] in ("DONE", "STOPPED") for r in rows), [r["error"] for r in rows]
    assert any(r["status"] == "DONE" and r["steps"] == 3 for r in rows)
    lasts = [r["last"] for r in rows]
    assert lasts == sorted(lasts, reverse=True)  # best first
    for r in rows:
        assert r["steps"] >= 2  # ASHA's grace period: nobody stops before step 2
        run = sweep_dir / r["trial"]
        logged = read_metrics(run / "metrics.jsonl")
        assert [x["reward/mean"] for x in logged] == [v for _, v in r["history"]]
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert cfg["trainer"]["lr"] == r["param:trainer.lr"]
        assert cfg["algorithm"]["eps_high"] == r["param:algorithm.eps_high"]
        assert cfg["run"]["name"] == r["trial"]
    saved = json.loads((sweep_dir / "results.json").read_text())
    assert [r["trial"] for r in saved["rows"]] == [r["trial"] for r in rows]
    csv_lines = (sweep_dir / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 5 and "param:trainer.lr" in csv_lines[0]
    assert (sweep_dir / "sweep.png").stat().st_size > 1000
    out = capsys.readouterr().out
    assert "reward/mean (last)" in out and rows[0]["trial"] in out
