"""`rl plan CLUSTER --recipe R --out plan.yaml`, then `rl train R --plan plan.yaml`, then
`rl plan --calibrate RUN`: the CLI end to end on this machine's cluster spec, as subprocesses."""
import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).parent.parent.parent


def rl(*args, timeout=300) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "rl.cli", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-3000:])
    return out


def test_plan_then_train_with_it_then_calibrate(tmp_path):
    plan_path = tmp_path / "plan.yaml"
    rl("plan", "recipes/clusters/cpu-2core.yaml", "--recipe", "recipes/tiny.yaml", "--out", str(plan_path))
    plan = yaml.safe_load(plan_path.read_text())
    assert plan["placement"] == "colocated" and plan["roles"]["learner"]["num_actors"] == 1  # one device
    assert [c["call"] for c in plan["calls"]] == ["actor_gen", "actor_train"]
    assert plan["workload"]["batch_seqs"] == 4 * 4 and plan["workload"]["gen_len"] == 8

    train = rl("train", "recipes/tiny.yaml", "--plan", str(plan_path), "trainer.steps=3", f"run.output_dir={tmp_path}",
               "eval.before_after=false", "run.checkpoint_every_steps=100", "run.progress_bar=false")
    assert "placement.mode=colocated" in train.stderr  # the one line saying what the plan set
    run = tmp_path / "tiny"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["placement"]["mode"] == "colocated" and cfg["placement"]["plan"] == str(plan_path)
    assert cfg["resources"]["learner"]["num_actors"] == 1 and cfg["rollout"]["num_workers"] == 1
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert steps == [0, 1, 2]

    cal = rl("plan", "--calibrate", str(run))
    assert "actor_gen" in cal.stdout and "actor_train" in cal.stdout
    result = json.loads((run / "calibration.json").read_text())
    fitted = [c for c in result["calls"] if c["fitted"]]
    assert len(fitted) == 2 and all(c["measured_s"] > 0 and c["error_after"] is not None for c in fitted)
    # the refit is no worse than the spec's constants on the run it was fitted on
    assert sum(abs(c["error_after"]) for c in fitted) <= sum(abs(c["error_before"]) for c in fitted)
