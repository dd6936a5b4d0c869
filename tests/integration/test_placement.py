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
    got = probe("algorithm.name=ppo", "critic.placement=colocated", "rollout.num_workers=2")
    learner, critic = set(got["learner"]["gpu_ids"]), set(got["critic"]["gpu_ids"])
    e0, e1 = set(got["engine0"]["gpu_ids"]), set(got["engine1"]["gpu_ids"])
    assert len(learner) == 1 and critic == learner  # 0.5 + 0.25 of one device
    assert len(e0) == len(e1) == 1 and not (e0 & e1) and not ((e0 | e1) & learner)
    assert all(v["device"] == "cpu" for v in got.values())  # logical GPUs: torch sees no CUDA, stays on CPU


def test_tensor_parallel_engines_get_that_many_gpus_and_own_actors_their_own():
    got = probe("algorithm.name=ppo", "rollout.tensor_parallel_size=2", "rollout.num_workers=1")
    assert len(got["engine0"]["gpu_ids"]) == 2
    ids = [set(got[k]["gpu_ids"]) for k in ("learner", "critic", "engine0")]
    assert sum(len(s) for s in ids) == 4 and len(set.union(*ids)) == 4  # learner 1, critic 1, engine 2: disjoint
