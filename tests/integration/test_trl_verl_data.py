"""Day one as a TRL or verl user: their datasets and reward functions train unchanged on the tiny model,
and a reward that raises on every sample stops the run at step 0 (exit 2, its exception in the message)."""
import json
import subprocess
import sys
from pathlib import Path

from rl.config import load_config
from rl.drivers.grpo import train
from rl.run.logging import read_metrics

ROOT = Path(__file__).parent.parent.parent
PLUGINS = ROOT / "tests" / "fixtures" / "reward_plugins.py"
BASE = ["run.progress_bar=false", "trainer.steps=2", "eval.before_after=false", "task.name=dataset",
        "task.eval_size=4", "run.checkpoint_every_steps=0"]


def _questions(n=24):
    return [(a, b) for a in range(1, 7) for b in range(1, 5)][:n]


def _no_reward_errors(run_dir: Path) -> list[dict]:
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1]
    errors = {k: v for r in rows for k, v in r.items() if k.startswith("reward_errors/")}
    assert errors and not any(errors.values()), errors
    return rows


def test_conversational_jsonl_with_trl_rewards(ray_local, tmp_path):
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({
        "prompt": [{"role": "system", "content": "Reply with the number only."},
                   {"role": "user", "content": f"What is {a} + {b}?"}],
        "solution": f"${a + b}$"}) + "\n" for a, b in _questions()))
    cfg = load_config(ROOT / "recipes" / "tiny.yaml", BASE + [
        f"run.output_dir={tmp_path}", "run.name=trl", f"task.path={data}", "task.answer_column=solution",
        "rewards.0.fn=trl.rewards:accuracy_reward", f"rewards.1.fn={PLUGINS}:trl_docs_length"])
    train(cfg)
    rows = _no_reward_errors(tmp_path / "trl")
    assert "reward/accuracy_reward" in rows[0] and rows[0]["reward/trl_docs_length"] < 0
    logged = read_metrics(tmp_path / "trl" / "rollouts.jsonl")
    assert logged[0]["prompt"][0]["role"] == "system"  # the messages as they were, not a repr


def test_verl_parquet_with_compute_score(ray_local, tmp_path):
    import datasets
    rows = [{"data_source": "toy_arith", "prompt": [{"role": "user", "content": f"What is {a} + {b}?"}],
             "reward_model": {"style": "rule", "ground_truth": str(a + b)}, "extra_info": {"index": i}}
            for i, (a, b) in enumerate(_questions())]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "train.parquet"))
    cfg = load_config(ROOT / "recipes" / "tiny.yaml", BASE + [
        f"run.output_dir={tmp_path}", "run.name=verl", f"task.path={tmp_path / 'train.parquet'}",
        "task.answer_column=reward_model.ground_truth", f"rewards.0.fn={PLUGINS}:verl_compute_score",
        "rewards.0.style=verl"])
    train(cfg)
    rows = _no_reward_errors(tmp_path / "verl")
    assert all(r["reward_extra/verl_compute_score/format"] == 0.0 for r in rows)  # the dict's other key, logged


def test_a_reward_raising_on_every_sample_stops_at_step_0_with_exit_2(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rl.cli", "train", "recipes/tiny.yaml", f"run.output_dir={tmp_path}",
                          "run.progress_bar=false", f"rewards.0.fn={PLUGINS}:always_raises"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "rl: reward error: rewards: " in out.stderr and "failed on 16 of 16 samples" in out.stderr, out.stderr[-3000:]
    assert "KeyError: 'this reward looks up a column the dataset does not have'" in out.stderr
    assert not list(tmp_path.glob("*/checkpoints/*"))
    rows = read_metrics(tmp_path / "tiny" / "metrics.jsonl")
    assert rows == []  # nothing was trained on on_error scores
