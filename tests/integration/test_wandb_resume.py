"""wandb as users expect: project/tags/group from the recipe, a generations table, and one wandb run id
across `--resume` (the test reads the id from the files wandb wrote, offline)."""
import json

from rl.config import load_config
from rl.drivers.grpo import train
from rl.run.logging import RunLogger

from tests.integration.test_grpo_ray import PLUGINS, ROOT


def _cfg(tmp_path, steps):
    return load_config(ROOT / "recipes" / "tiny.yaml", [
        f"run.output_dir={tmp_path}", "run.name=wb", "run.progress_bar=false", "run.wandb_mode=offline",
        "run.wandb_project=rl-tests", "run.wandb_tags=[tiny,ci]", "run.wandb_group=g1",
        "run.log_generations_every_steps=1", "run.checkpoint_every_steps=1", f"trainer.steps={steps}",
        "eval.before_after=false", f"rewards.0.fn={PLUGINS}:text_length"])


def test_a_resumed_run_keeps_its_wandb_run_id(ray_local, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run = tmp_path / "wb"
    train(_cfg(tmp_path, 1))
    first = (run / "wandb_id.txt").read_text().strip()
    train(_cfg(tmp_path, 2), resume=True)
    assert (run / "wandb_id.txt").read_text().strip() == first
    dirs = sorted(p.name for p in (run / "wandb").glob("offline-run-*"))
    assert len(dirs) == 2 and all(d.endswith(f"-{first}") for d in dirs), dirs  # two sessions, one run id
    tables = list((run / "wandb").glob("offline-run-*/files/media/table/generations_*.table.json"))
    assert tables, "no generations table was logged"
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["step", "key", "prompt", "completion", "reward"] and table["data"]
    fresh = RunLogger(tmp_path / "fresh", {}, "offline")  # a fresh run (no --resume) gets a new id
    fresh.close()
    assert (tmp_path / "fresh" / "wandb_id.txt").read_text().strip() != first
