"""`rl train` refuses a recipe whose bundle cannot fit its memory budget: exit 2, one `rl:` line, no
traceback, and no actor started (the preflight runs in placement_from, before the placement group).
Ray is already initialised by then (roles_from asks the cluster for GPUs), so Ray's own start-up notices
may precede the line on stderr."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent.parent


def test_a_recipe_over_its_memory_budget_exits_2_with_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rl.cli", "train", "recipes/tiny.yaml", "placement.memory_budget_mb=5",
                          f"run.output_dir={tmp_path}", "run.progress_bar=false"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-3000:]
    ours = [line for line in out.stderr.splitlines() if line.startswith("rl:")]
    assert len(ours) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert ours[0].startswith("rl: config error: preflight: bundle 0 (learner rank 0) needs ~")
    assert "budget 5 MiB (placement.memory_budget_mb): the largest part is learner rank 0 " in ours[0]
    assert not list(tmp_path.glob("*/checkpoints/*"))  # it stopped before training
