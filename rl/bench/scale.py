"""`rl bench scale`: the same GRPO batch on SmolLM2-135M with 1 learner actor vs 2 FSDP2 learner actors.

Both sides get the same batch (8 prompts x 8 samples x 16 tokens, sampled once by the hf engine) and
the same advantages, and take 1 untimed warm-up update + `--steps` timed updates (train_step, Ray
round trip included). Reported: train-phase seconds per update (median, spread) and their ratio, the
bytes of parameters + gradients + AdamW state each learner holds (its shard when sharded) and the ratio
to one learner, peak RSS per learner process, and the largest parameter difference after the updates
(gathered full weights). On this 2-core machine both ranks share the cores: expect no speed-up here;
the memory split is the point. JSON -> bench/results/scale.json.
"""
from __future__ import annotations

import argparse
import resource

import ray
import torch

from rl.bench.common import machine_info, spread, time_calls, timestamp, write_results

PROMPTS, SAMPLES, NEW_TOKENS = 8, 8, 16


def _batch():
    from algorithms.advantages import grpo_advantages
    from envs.tasks import build_task
    from rl.data.prompts import PromptEncoder
    from rl.drivers.experience import to_batch
    from rl.workers.models import SMOLLM2, load_policy
    from rollout.hf_engine import HFEngine
    from rollout.types import GenerationRequest
    model, tok = load_policy(SMOLLM2)
    encode, task = PromptEncoder(tok), build_task("arithmetic", digits=[1, 2, 3], train_size=64, eval_size=8, seed=0)
    reqs = [GenerationRequest(prompt_ids=encode(ex), n=SAMPLES, max_new_tokens=NEW_TOKENS, request_id=i)
            for i, ex in enumerate(task.train[:PROMPTS])]
    comps = HFEngine(model, tok).generate(reqs, seed=0)
    rewards = torch.tensor([float(len(c.token_ids) % 3 == 0) for c in comps])  # varied, so groups have signal
    batch = to_batch(reqs, comps, [c.request_id for c in comps], rewards, tok.pad_token_id)
    return batch, grpo_advantages(batch.rewards, batch.group_ids), tok.pad_token_id


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rl bench scale", description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=3, help="timed updates per side (after 1 warm-up)")
    p.add_argument("--out", default="bench/results/scale.json")
    a = p.parse_args(argv)
    from rl.workers.learner import LearnerActor
    from rl.workers.learner_group import LearnerGroup
    from rl.workers.models import SMOLLM2
    from rl.workers.ray_setup import init_ray, local_threads
    init_ray()
    batch, adv, pad = _batch()
    kw = dict(lr=1e-5, minibatch_samples=PROMPTS * SAMPLES, microbatch_samples=PROMPTS * SAMPLES, pad_id=pad)
    one = LearnerActor.options(num_cpus=0.5).remote(SMOLLM2, num_threads=local_threads(), **kw)
    group = LearnerGroup(SMOLLM2, 2, strategy="fsdp", num_cpus=0.5, num_threads=max(1, local_threads() // 2), **kw)
    t_one = time_calls(lambda: ray.get(one.train_step.remote(batch, adv)), a.steps, warmup=True)
    t_two = time_calls(lambda: group.train_step(batch, adv), a.steps, warmup=True)
    mem_one = ray.get(one.state_bytes.remote())
    mem_two = ray.get([r.state_bytes.remote() for r in group.actors])
    full_one = dict(b for bk in ray.get(one.export_weights.remote(1 << 62)) for b in _named(bk))
    full_two = dict(b for bk in group.export_full(1 << 62) for b in _named(bk))
    diff = max(float((full_one[k] - full_two[k]).abs().max()) for k in full_one)
    rel = max(float(((full_one[k] - full_two[k]).abs() / full_one[k].abs().clamp(min=1e-2)).max()) for k in full_one)
    total = lambda m: sum(m.values())  # noqa: E731
    result = {"bench": "scale", "date": timestamp(), "model": SMOLLM2, "batch": [PROMPTS, SAMPLES, NEW_TOKENS],
              "timed_updates": a.steps, "one_learner_s": spread(t_one), "two_fsdp_learners_s": spread(t_two),
              "time_ratio_two_over_one": spread(t_two)["median"] / spread(t_one)["median"],
              "state_bytes_one": mem_one, "state_bytes_per_rank_two": mem_two,
              "memory_ratio_per_rank": max(total(m) for m in mem_two) / total(mem_one),
              "max_abs_param_diff": diff, "max_rel_param_diff": rel, "driver_peak_rss_mb": _peak_rss_mb(),
              "machine": machine_info("cpus", "platform", "loadavg_1min")}
    write_results(a.out, result)
    print(f"train phase: 1 learner {result['one_learner_s']['median']:.2f} s, 2 FSDP2 learners "
          f"{result['two_fsdp_learners_s']['median']:.2f} s (x{result['time_ratio_two_over_one']:.2f}); "
          f"params+grads+AdamW per rank {result['memory_ratio_per_rank']:.2f}x one learner's; "
          f"max param diff {diff:.2e} (rel {rel:.2e}) after {a.steps + 1} updates", flush=True)
    group.close()
    ray.kill(one)
    return 0


def _named(bucket):
    import numpy as np
    flat = torch.from_numpy(np.asarray(bucket.flat).copy())
    if flat.dtype == torch.int16:
        flat = flat.view(torch.bfloat16)
    for name, shape, off in zip(bucket.names, bucket.shapes, bucket.offsets):
        n = int(np.prod(shape)) if shape else 1
        yield name, flat[off:off + n].view(shape).float()
