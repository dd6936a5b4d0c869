"""A real 2-node Ray cluster on this machine (`ray start --head` + a second `ray start --address`, each
with one CPU and a node resource): `rl train --address` places the learner on one node and the engine on
the other through `resources.*.custom`, trains, and the cluster is torn down by its own process groups."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent.parent
RAY = Path(sys.executable).with_name("ray")
RL = Path(sys.executable).with_name("rl")
# `ray start --head` turns token authentication on by default; a test cluster on loopback runs without it
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(*args) -> subprocess.Popen:
    return subprocess.Popen([str(RAY), "start", "--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1", *args],
                            start_new_session=True, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _nodes(address: str) -> int:
    code = f"import ray; ray.init(address={address!r}, log_to_driver=False); print(len([n for n in ray.nodes() if n['Alive']]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV)
    return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else 0


@pytest.fixture
def two_nodes():
    port = _free_port()
    address = f"127.0.0.1:{port}"
    procs = [_start("--head", f"--port={port}", "--num-cpus=1", '--resources={"node_a": 1}',
                    "--include-dashboard=false")]
    try:
        time.sleep(5)
        procs.append(_start(f"--address={address}", "--num-cpus=1", '--resources={"node_b": 1}'))
        deadline = time.time() + 120
        while _nodes(address) < 2:
            assert time.time() < deadline, "the 2-node cluster did not come up"
            time.sleep(2)
        yield address
    finally:
        for p in reversed(procs):  # our own process groups only, never a broad `ray stop`
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=5)  # `ray start --block` exits slowly on SIGTERM; the group kill below is certain
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)  # the raylet and GCS live in the same group
            except ProcessLookupError:
                pass
        marker = Path("/tmp/ray/ray_current_cluster")  # `ray start --head` records its address here
        if marker.exists() and marker.read_text().strip().endswith(f":{port}"):
            marker.unlink()


@pytest.mark.slow
def test_learner_on_one_node_engine_on_the_other(two_nodes, tmp_path):
    plugins = ROOT / "tests" / "fixtures" / "reward_plugins.py"
    cmd = [str(RL), "train", "recipes/tiny.yaml", "--address", two_nodes, f"run.output_dir={tmp_path}", "run.name=two",
           "run.progress_bar=false", "trainer.steps=2", "eval.before_after=false", "run.checkpoint_every_steps=0",
           f"rewards.0.fn={plugins}:text_length", "resources.learner.custom={node_a: 0.1}",
           "resources.engine.custom={node_b: 0.1}"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    where = json.loads((tmp_path / "two" / "placement.json").read_text())
    assert where["learner"]["node_id"] != where["engine0"]["node_id"]
    rows = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1] and all(r["loss"] == r["loss"] for r in rows)
