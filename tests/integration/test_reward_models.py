"""A learned reward model (a sequence-classification folder, in its own Ray actor) and an LLM judge over
HTTP (a grading endpoint on 127.0.0.1) score a tiny GRPO run next to a rule reward: the run's
per-reward metrics equal what each scorer gives for the logged samples, nothing errs, the actor is
stopped by the run, and a broken reward-model folder stops the run before any rollout (exit 2)."""
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
import yaml

from judge_server import JudgeServer, grade
from rl.config import load_config
from rl.drivers.grpo import train
from rl.run.logging import read_metrics
from rl.workers.models import TINY, load_tokenizer, tiny_llama_config
from rl.workers.reward_model import RewardModel

ROOT = Path(__file__).parent.parent.parent
TEMPLATE = "Request: {prompt}\nExpected: {answer}\nReply: {completion}\nScore 0-10."


@pytest.fixture(scope="module")
def rm_folder(tmp_path_factory):
    import torch
    from transformers import LlamaForSequenceClassification
    tok = load_tokenizer(TINY)
    torch.manual_seed(0)
    config = tiny_llama_config(len(tok))
    config.num_labels, config.pad_token_id = 1, tok.pad_token_id
    folder = tmp_path_factory.mktemp("rm") / "tiny-rm"
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _recipe(tmp_path, rewards) -> Path:
    recipe = yaml.safe_load((ROOT / "recipes" / "tiny.yaml").read_text())
    recipe["run"].update(output_dir=str(tmp_path), name="rm", progress_bar=False, checkpoint_every_steps=0)
    recipe["trainer"]["steps"] = 2
    recipe["eval"] = {"before_after": False}
    recipe["rewards"] = rewards
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_reward_model_and_judge_score_a_run(ray_local, tmp_path, rm_folder):
    rewards = [{"fn": "exact_match"}, {"model": str(rm_folder), "weight": 0.1, "batch_size": 4},
               {"judge": {"model": "grader", "prompt_template": TEMPLATE, "backoff_s": 0.01}, "weight": 0.5}]
    with JudgeServer(fail_first=1) as server:
        rewards[2]["judge"]["base_url"] = server.url
        train(load_config(_recipe(tmp_path, rewards)))
    rows = read_metrics(tmp_path / "rm" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1]
    for r in rows:
        assert r["reward_errors/exact_match"] == r["reward_errors/tiny-rm"] == r["reward_errors/judge"] == 0
    assert len(server.calls) == 1 + 2 * 16  # one 503, then 4 prompts x 4 samples per step, each graded once
    assert {c["body"]["model"] for c in server.calls} == {"grader"}
    # step 0's samples as the judge saw them: its mean is the rule-grading endpoint's (1.0 / 0.2) on them
    graded = [c["body"]["messages"][0]["content"] for c in server.calls[1:17]]
    assert rows[0]["reward/judge"] == pytest.approx(sum(float(grade(m).split()[-1]) / 10 for m in graded) / 16)
    # the reward model's mean is the folder's own forward on the same samples, outside Ray
    samples = [re.fullmatch(r"Request: (.*)\nExpected: .*?\nReply: (.*)\nScore 0-10\.", m, re.S).groups()
               for m in graded]
    rm = RewardModel(str(rm_folder), batch_size=1)
    direct = rm.score([p for p, _ in samples], [c for _, c in samples])
    assert rows[0]["reward/tiny-rm"] == pytest.approx(sum(direct) / len(direct), abs=1e-4)
    deadline = time.monotonic() + 30  # the run killed its reward-model actor (0.5 CPU outside the group)
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU", 0) == ray.cluster_resources()["CPU"], "an actor of the run is alive"


def test_broken_reward_model_stops_before_rollout(tmp_path):
    bad = tmp_path / "not-a-model"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    recipe = _recipe(tmp_path, [{"fn": "exact_match"}, {"model": str(bad)}])
    p = subprocess.run([sys.executable, "-m", "rl.cli", "train", str(recipe)], capture_output=True, text=True,
                       timeout=600, cwd=ROOT)
    assert p.returncode == 2, p.stderr[-3000:]
    assert "rewards.1.model" in p.stderr and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert read_metrics(tmp_path / "rm" / "metrics.jsonl") == []  # no step ran
