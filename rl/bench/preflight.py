"""`rl bench preflight`: the memory preflight's estimates (rl/workers/preflight.py) next to the peaks
measured in the same run, for SmolLM2-135M on this machine.

- runtime baseline: the resident set of an idle Ray actor that imported the learner and rollout worker
  modules and transformers' Llama (what loading the model imports), next to RUNTIME_BASELINE_MB;
- engine: one hf RolloutWorker generating 8 prompts x 8 samples x 16 tokens (the batch of `rl bench scale`),
  its high-water mark from process start (VmHWM: load + generation) next to the engine's estimate;
- learner: one LearnerActor taking that batch as one micro-batch of 64 (the setup of `rl bench memory`),
  1 warm-up + `--steps` updates; its high-water mark from process start, and the one after a reset once the
  model is loaded (the train phase, what `rl bench memory` reports), next to the learner's estimate.

Error = (estimate - measured) / measured. The estimate is what the preflight computes for a recipe with
these numbers (trainer.microbatch_samples=64, ...), from the model's config and the batch's longest
prompt. JSON -> bench/results/preflight.json.
"""
from __future__ import annotations

import argparse
import re

import ray
import torch

from rl.bench.common import machine_info, timestamp, write_results
from rl.bench.scale import NEW_TOKENS, PROMPTS, SAMPLES
from rl.workers.rollout_worker import EngineWorker


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1)) / 1024


@ray.remote(num_cpus=0.5)
class _Idle:
    def rss_mb(self) -> float:
        import transformers.models.llama.modeling_llama  # noqa: F401 - imported by a process loading the model
        import rl.workers.learner  # noqa: F401 - what every learner / engine process imports
        import rl.workers.rollout_worker  # noqa: F401
        return _status_mb("VmRSS")


@ray.remote(num_cpus=0.5)
class _EngineProbe(EngineWorker):
    def status_mb(self, field: str) -> float:
        return _status_mb(field)


def _requests(tok):
    from envs.tasks import build_task
    from rl.data.prompts import PromptEncoder
    from rollout.types import GenerationRequest
    encode, task = PromptEncoder(tok), build_task("arithmetic", digits=[1, 2, 3], train_size=64, eval_size=8, seed=0)
    return [GenerationRequest(prompt_ids=encode(ex), n=SAMPLES, max_new_tokens=NEW_TOKENS, request_id=i)
            for i, ex in enumerate(task.train[:PROMPTS])]


def _engine(reqs) -> tuple[dict, list]:
    from rl.workers.models import SMOLLM2
    probe = _EngineProbe.remote("hf", SMOLLM2, "float32", 0)
    loaded = ray.get(probe.status_mb.remote("VmRSS"))
    comps = ray.get(probe.generate.remote(reqs, 0))
    peak = ray.get(probe.status_mb.remote("VmHWM"))
    ray.kill(probe)
    return {"loaded_rss_mb": loaded, "peak_mb": peak}, comps


def _learner(batch, adv, pad: int, steps: int) -> dict:
    from rl.workers.learner import LearnerActor
    from rl.workers.models import SMOLLM2
    from rl.workers.ray_setup import local_threads
    actor = LearnerActor.options(num_cpus=0.5).remote(
        SMOLLM2, num_threads=local_threads(), lr=1e-5, minibatch_samples=PROMPTS * SAMPLES,
        microbatch_samples=PROMPTS * SAMPLES, pad_id=pad)
    load_peak = ray.get(actor.peak_memory_mb.remote(reset=True))
    loaded = ray.get(actor.peak_memory_mb.remote())  # right after a reset the mark is the resident set
    for _ in range(steps + 1):
        ray.get(actor.train_step.remote(batch, adv))
    train_peak = ray.get(actor.peak_memory_mb.remote())
    ray.kill(actor)
    return {"load_peak_mb": load_peak, "loaded_rss_mb": loaded, "peak_mb": max(load_peak, train_peak),
            "train_phase_peak_mb": train_peak}


def _estimates(prompt_tokens: int, tok) -> tuple[list[dict], dict]:
    from rl.config import load_config
    from rl.workers import preflight as pf
    from rl.workers.models import SMOLLM2
    from rl.workers.placement import Role
    cfg = load_config(None, [f"model.name={SMOLLM2}", f"trainer.prompts_per_step={PROMPTS}",
                             f"rollout.samples_per_prompt={SAMPLES}", f"rollout.max_new_tokens={NEW_TOKENS}",
                             f"trainer.minibatch_samples={PROMPTS * SAMPLES}",
                             f"trainer.microbatch_samples={PROMPTS * SAMPLES}", "placement.mode=separate"])
    shape = pf.model_shape(SMOLLM2, tok)
    roles = {"learner": Role(1), "engine": Role(1)}
    return pf.check(cfg, roles, shape, prompt_tokens, host_mb=float("inf")), shape.__dict__


def _row(estimate: dict, measured: float) -> dict:
    need = estimate["need_mb"]
    return {"estimate_mb": need, "measured_mb": measured, "error_pct": 100 * (need - measured) / measured,
            "parts_mb": {p["part"]: p["mb"] for p in estimate["parts"]}}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rl bench preflight", description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=1, help="learner updates after the warm-up one")
    p.add_argument("--out", default="bench/results/preflight.json")
    a = p.parse_args(argv)
    from algorithms.advantages import grpo_advantages
    from rl.drivers.experience import to_batch
    from rl.workers import preflight as pf
    from rl.workers.models import SMOLLM2, load_tokenizer
    from rl.workers.ray_setup import init_ray
    init_ray()
    tok = load_tokenizer(SMOLLM2)
    reqs = _requests(tok)
    idle = _Idle.remote()
    baseline = ray.get(idle.rss_mb.remote())
    ray.kill(idle)
    engine, comps = _engine(reqs)
    rewards = torch.tensor([float(len(c.token_ids) % 3 == 0) for c in comps])  # varied, so groups have signal
    batch = to_batch(reqs, comps, [c.request_id for c in comps], rewards, tok.pad_token_id)
    learner = _learner(batch, grpo_advantages(batch.rewards, batch.group_ids), tok.pad_token_id, a.steps)
    prompt_tokens = max(len(r.prompt_ids) for r in reqs)
    (est_learner, est_engine), shape = _estimates(prompt_tokens, tok)
    result = {"bench": "preflight", "date": timestamp(), "model": SMOLLM2, "shape": shape,
              "batch": [PROMPTS, SAMPLES, NEW_TOKENS], "prompt_tokens": prompt_tokens,
              "completion_tokens": sum(len(c.token_ids) for c in comps),
              "longest_completion": max(len(c.token_ids) for c in comps),
              "baseline": {"estimate_mb": pf.RUNTIME_BASELINE_MB, "measured_idle_actor_mb": baseline,
                           "error_pct": 100 * (pf.RUNTIME_BASELINE_MB - baseline) / baseline},
              "learner": {**_row(est_learner, learner["peak_mb"]), "measured": learner,
                          "train_phase_error_pct": 100 * (est_learner["need_mb"] - learner["train_phase_peak_mb"])
                          / learner["train_phase_peak_mb"]},
              "engine": {**_row(est_engine, engine["peak_mb"]), "measured": engine},
              "updates": a.steps + 1, "machine": machine_info("cpus", "platform", "loadavg_1min")}
    write_results(a.out, result)
    lr, en, bl = result["learner"], result["engine"], result["baseline"]
    print(f"preflight vs measured peak: learner {lr['estimate_mb']:.0f} vs {lr['measured_mb']:.0f} MiB "
          f"({lr['error_pct']:+.1f}%), hf engine {en['estimate_mb']:.0f} vs {en['measured_mb']:.0f} MiB "
          f"({en['error_pct']:+.1f}%), runtime baseline {bl['estimate_mb']:.0f} vs {bl['measured_idle_actor_mb']:.0f} "
          f"MiB ({bl['error_pct']:+.1f}%)", flush=True)
    return 0
