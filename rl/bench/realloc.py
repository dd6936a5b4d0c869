"""`rl bench realloc`: SmolLM2-135M from 2 FSDP2 learner ranks into 2 hf engines, the planned direct
reshard (`sync.transport: reshard`) vs gather-on-rank-0-then-send, same actors, same group, same run.

Both sides run over the same torch.distributed group (gloo here, NCCL on GPUs) between the same four
actors and write into the engines' live weights in place, so the only difference is the plan:
- planned: every engine takes each parameter's rows from the learner rank holding them (each rank
  sends its half of the model to each engine; nothing is gathered);
- anchor: the learner ranks gather every full tensor on rank 0 (FSDP2 `full_tensor`, all held at
  once, as a state-dict gather does), then rank 0 sends each whole tensor to each engine.
Reported per side over `--reps` timed rounds after one warm-up round each: seconds (median, spread),
bytes sent and received per rank, and per rank the memory the round adds (the process high-water mark
during the round minus what was resident when it started; VmHWM on CPU, max_memory_allocated on
CUDA) and the absolute high-water mark. The busiest rank is the one with the largest value. After
each side every engine's weights checksum is compared with the learners'. JSON ->
bench/results/realloc.json.

Example: rl bench realloc --reps 3
"""
from __future__ import annotations

import argparse

from rl.bench.common import machine_info, spread, timestamp, write_results


def _side(realloc, group, engines, reps: int, gather: bool, version: int) -> dict:
    import time
    rounds = []
    for k in range(reps + 1):
        t0 = time.perf_counter()
        stats = realloc.exchange(group.actors, engines, version + k, 600.0, gather_first=gather)
        rounds.append({"s": time.perf_counter() - t0, "ranks": stats})
    timed = rounds[1:]
    ranks = [[r["ranks"][i] for r in timed] for i in range(len(timed[0]["ranks"]))]
    per_rank = [{"rank": i, "role": "learner" if i < group.world_size else "engine",
                 "bytes_sent": rs[0]["bytes_sent"], "bytes_received": rs[0]["bytes_received"],
                 "messages": rs[0]["messages"],
                 "added_mb": max(r["peak_mb"] - r["before_mb"] for r in rs),
                 "peak_mb": max(r["peak_mb"] for r in rs)} for i, rs in enumerate(ranks)]
    return {"seconds": spread([r["s"] for r in timed]), "ranks": per_rank,
            "busiest_added_mb": max(r["added_mb"] for r in per_rank),
            "busiest_peak_mb": max(r["peak_mb"] for r in per_rank)}


def _same_weights(group, engines) -> bool:
    import ray
    want = ray.get([a.weights_checksum.remote() for a in group.actors])[0]
    return all(s["checksum"] == want for s in ray.get([e.weights_state.remote() for e in engines]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rl bench realloc", description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=3, help="timed rounds per side (after 1 warm-up round)")
    p.add_argument("--out", default="bench/results/realloc.json")
    a = p.parse_args(argv)
    import ray

    from rl.workers.learner_group import LearnerGroup
    from rl.workers.models import SMOLLM2
    from rl.workers.ray_setup import init_ray
    from rl.workers.realloc import Reallocation
    from rl.workers.rollout_worker import RolloutWorker
    init_ray()
    group = LearnerGroup(SMOLLM2, 2, strategy="fsdp", num_cpus=0.25, lr=1e-5, num_threads=1)
    engines = [RolloutWorker.options(num_cpus=0.25).remote("hf", SMOLLM2) for _ in range(2)]
    try:
        realloc = Reallocation("gloo")
        planned = _side(realloc, group, engines, a.reps, gather=False, version=1)
        planned["engines_match_learners"] = _same_weights(group, engines)
        anchor = _side(realloc, group, engines, a.reps, gather=True, version=100)
        anchor["engines_match_learners"] = _same_weights(group, engines)
    finally:
        for e in engines:
            ray.kill(e)
        group.close()
    result = {"bench": "realloc", "date": timestamp(), "model": SMOLLM2, "learners": "2 FSDP2 ranks (gloo)",
              "engines": "2 hf replicas", "timed_rounds": a.reps, "planned": planned, "gather_then_send": anchor,
              "time_ratio": planned["seconds"]["median"] / anchor["seconds"]["median"],
              "busiest_added_ratio": planned["busiest_added_mb"] / max(anchor["busiest_added_mb"], 1e-9),
              "busiest_peak_ratio": planned["busiest_peak_mb"] / anchor["busiest_peak_mb"],
              "machine": machine_info("cpus", "platform", "loadavg_1min")}
    write_results(a.out, result)
    for name, side in (("planned reshard", planned), ("gather-then-send", anchor)):
        sent = ", ".join(f"{r['role'][0]}{r['rank']} {r['bytes_sent'] / 2**20:.0f}/{r['bytes_received'] / 2**20:.0f}"
                         for r in side["ranks"])
        print(f"{name:<17} {side['seconds']['median']:6.2f} s  MiB sent/received per rank: {sent}  busiest rank adds "
              f"{side['busiest_added_mb']:.0f} MiB (peak {side['busiest_peak_mb']:.0f} MiB)  "
              f"engines == learners: {side['engines_match_learners']}", flush=True)
    print(f"planned / gather: time x{result['time_ratio']:.2f}, busiest rank's added memory "
          f"x{result['busiest_added_ratio']:.2f}, busiest rank's peak x{result['busiest_peak_ratio']:.2f}", flush=True)
    return 0
