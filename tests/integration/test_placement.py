"""Placement with Ray's logical GPUs (this machine has none): every actor asks for its GPUs inside the
run's placement group; engines land on disjoint GPUs (tensor_parallel_size each), a colocated critic
shares the learner's GPU, and with no GPUs nothing asks for one. Each case is its own Ray instance in a
subprocess (the suite's shared Ray has no GPUs)."""
import json
import subprocess
import sys
from pathlib import Path

PROBE = Path(__file__).parent.parent / "fixtures" / "placement_probe.py"
ROOT = Path(__file__).parent.parent.parent


def probe(*overrides) -> dict:
    out = subprocess.run([sys.executable, str(PROBE), *overrides], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_engines_disjoint_and_a_colocated_critic_shares_the_learner_gpu():
    got = probe("algorithm.name=ppo", "critic.placement=colocated", "rollout.num_workers=3")
    learner, critic = set(got["learner"]["gpu_ids"]), set(got["critic"]["gpu_ids"])
    engines = [set(got[f"engine{i}"]["gpu_ids"]) for i in range(3)]
    assert len(learner) == 1 and critic == learner  # 0.5 + 0.25 of one device
    assert all(len(e) == 1 for e in engines) and len(set.union(learner, *engines)) == 4  # all disjoint
    assert all(v["device"] == "cpu" for v in got.values())  # logical GPUs: torch sees no CUDA, stays on CPU
    assert len({v["node_id"] for v in got.values()}) == 1
