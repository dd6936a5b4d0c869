"""`rl bench memory`: one SmolLM2-135M learner's train phase with and without gradient checkpointing.

The same GRPO batch as `rl bench scale` (8 prompts x 8 samples x 16 tokens, sampled once by the hf
engine), one micro-batch of all 64 samples (activations dominate), each side in a fresh learner
actor: 1 untimed warm-up update, then `--steps` timed ones. Reported per side: seconds per update
(median, spread), the peak memory of the train phase (the process's high-water mark after a reset
once the model is loaded: VmHWM on CPU, max_memory_allocated on CUDA) and the ratios
checkpointed / default. With short completions and a shared prompt prefill activations are a small
part of the peak (the weights, gradients and AdamW state of 135M parameters are ~2.2 GB), so expect a
small saving here; it grows with sequence length and micro-batch size. JSON -> bench/results/memory.json.
"""
from __future__ import annotations

import argparse

import ray

from rl.bench.common import machine_info, spread, time_calls, timestamp, write_results
from rl.bench.scale import PROMPTS, SAMPLES, NEW_TOKENS, _batch


def _side(batch, adv, pad: int, steps: int, checkpointing: bool) -> dict:
    from rl.workers.learner import LearnerActor
    from rl.workers.models import SMOLLM2
    from rl.workers.ray_setup import local_threads
    actor = LearnerActor.options(num_cpus=0.5).remote(
        SMOLLM2, num_threads=local_threads(), lr=1e-5, minibatch_samples=PROMPTS * SAMPLES,
        microbatch_samples=PROMPTS * SAMPLES, pad_id=pad, gradient_checkpointing=checkpointing)
    loaded = ray.get(actor.peak_memory_mb.remote(reset=True))
    times = time_calls(lambda: ray.get(actor.train_step.remote(batch, adv)), steps, warmup=True)
    peak = ray.get(actor.peak_memory_mb.remote())
    checksum = ray.get(actor.weights_checksum.remote("bfloat16"))
    ray.kill(actor)
    return {"update_s": spread(times), "peak_mb": peak, "load_peak_mb": loaded, "bf16_checksum": checksum}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rl bench memory", description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=2, help="timed updates per side (after 1 warm-up)")
    p.add_argument("--out", default="bench/results/memory.json")
    a = p.parse_args(argv)
    from rl.workers.models import SMOLLM2
    from rl.workers.ray_setup import init_ray
    init_ray()
    batch, adv, pad = _batch()
    plain = _side(batch, adv, pad, a.steps, checkpointing=False)
    ckpt = _side(batch, adv, pad, a.steps, checkpointing=True)
    result = {"bench": "memory", "date": timestamp(), "model": SMOLLM2, "batch": [PROMPTS, SAMPLES, NEW_TOKENS],
              "microbatch_samples": PROMPTS * SAMPLES, "timed_updates": a.steps, "default": plain,
              "gradient_checkpointing": ckpt, "peak_ratio": ckpt["peak_mb"] / plain["peak_mb"],
              "time_ratio": ckpt["update_s"]["median"] / plain["update_s"]["median"],
              "machine": machine_info("cpus", "platform", "loadavg_1min")}
    write_results(a.out, result)
    print(f"train phase peak memory: default {plain['peak_mb']:.0f} MiB, gradient checkpointing "
          f"{ckpt['peak_mb']:.0f} MiB (x{result['peak_ratio']:.2f}); seconds per update "
          f"{plain['update_s']['median']:.2f} vs {ckpt['update_s']['median']:.2f} (x{result['time_ratio']:.2f})",
          flush=True)
    return 0
