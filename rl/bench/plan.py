"""`rl bench plan`: calibrate the planner's cost model on this CPU, then plan the cluster specs.

1. Measure forward (inference), train (forward + backward + AdamW step) and greedy generate of
   tiny-llama and SmolLM2-135M (fp32, batches of 4 and 32 sequences, so the fit sees both the
   overhead-bound and the compute-bound regime; min of `--repeats` after a warm-up).
2. Measure this CPU's ceilings (fp32 matmul TFLOP/s, copy GB/s), then fit compute_efficiency,
   memory_efficiency, overhead_us_per_layer to the SmolLM2 calls; print every measurement (tiny-llama's
   as held out), the model's estimate and the relative error.
3. Hold-out: predict the measured SmolLM2 GRPO step of bench/results/grpo_step.json (64 samples,
   16 new tokens, beta 0: generate + one train step; the learner takes the behaviour log-probs from
   the engine, so there is no separate inference pass).
4. `rl plan` on the 8-, 64- and 128-GPU specs. Writes bench/results/plan.json.
5. ReaLHF's settings (rl/bench/plan_realhf.py): searched plan vs best heuristic with the per-call
   breakdown, with and without the GEMM-width term ("realhf"; `--realhf-only` runs just this step
   and keeps the rest of plan.json).

Example: nice -n 10 rl bench plan --repeats 2
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from rl.bench.common import machine_info, time_calls, timestamp, write_results
from rollout.realloc.calibrate import fit_hardware, predict
from rollout.realloc.cluster import load_cluster_spec
from rollout.realloc.cost_model import Call, LlamaShape

SPECS = ["recipes/clusters/llama7b-8gpu.yaml", "recipes/clusters/llama70b-7b-64gpu.yaml",
         "recipes/clusters/llama70b-128gpu.yaml"]
BATCHES, PROMPT, NEW = (4, 32), 32, 16
FIT_MODEL = "smollm2-135m"
GRPO_PROMPT_TOKENS = 40  # chat-templated arithmetic prompt of the grpo-step bench


def shape_of(model) -> LlamaShape:
    c = model.config
    return LlamaShape(c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.num_attention_heads,
                      c.num_key_value_heads, c.vocab_size, bool(c.tie_word_embeddings))


def _best_of(fn, repeats: int) -> float:
    return min(time_calls(fn, repeats, warmup=True))


def measure(name: str, repeats: int, batch: int) -> list[tuple[LlamaShape, Call, float, str]]:
    from rl.workers.models import load_model

    model = load_model(name)
    shape = shape_of(model)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, shape.vocab, (batch, PROMPT + NEW), generator=g)
    prompt = ids[:, :PROMPT]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def forward():
        with torch.no_grad():
            model(ids)

    def train():
        out = model(ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def generate():
        with torch.no_grad():
            model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=NEW,
                           min_new_tokens=NEW, do_sample=False, pad_token_id=2)

    return [(shape, Call(kind, batch, PROMPT, NEW), _best_of(fn, repeats), f"{name} {kind} x{batch}")
            for kind, fn in (("inference", forward), ("train", train), ("generate", generate))]


def device_peaks(repeats: int) -> tuple[float, float]:
    """(fp32 TFLOP/s of a 2048^3 matmul, GB/s of a 256 MiB copy): what the roofline's ceilings are
    on this machine, measured instead of taken from a data sheet."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    x = torch.ones(64 * 2**20)
    y = torch.empty_like(x)
    flops = 2 * 2048**3 / _best_of(lambda: a @ b, repeats + 1) / 1e12
    gbytes = 2 * x.numel() * 4 / _best_of(lambda: y.copy_(x), repeats + 1) / 1e9
    return flops, gbytes


def calibrate(repeats: int) -> tuple[dict, object]:
    """Fit on SmolLM2 (a real transformer: its calls are matmul-bound like the cluster models);
    tiny-llama's calls are reported as out-of-sample (its 49152 x 64 vocabulary projection and
    allocation of large logits dominate, which the roofline does not describe)."""
    spec = load_cluster_spec("recipes/clusters/cpu-2core.yaml")
    peak, bw = device_peaks(repeats)
    base = dataclasses.replace(spec.hardware, peak_tflops=peak, hbm_gbytes_per_s=bw)
    print(f"measured ceilings: {peak:.3f} fp32 TFLOP/s (2048^3 matmul), {bw:.1f} GB/s (copy)")
    rows = [row for name in ("tiny-llama", "smollm2-135m") for b in BATCHES for row in measure(name, repeats, b)]
    fit_rows = [r for r in rows if r[3].startswith(FIT_MODEL)]
    hw, _ = fit_hardware(base, [(s, c, t) for s, c, t, _ in fit_rows])
    print(f"fitted on {len(fit_rows)} {FIT_MODEL} measurements: compute_efficiency {hw.compute_efficiency:.3f}, "
          f"memory_efficiency {hw.memory_efficiency:.3f}, overhead {hw.overhead_us_per_layer:.0f} us/layer")
    table = []
    for shape, call, t, label in rows:
        est = predict(hw, shape, call)
        err, role = abs(est - t) / t, "fit" if label.startswith(FIT_MODEL) else "held out"
        print(f"  {label:<30} measured {t:8.3f} s  model {est:8.3f} s  error {100 * err:5.1f}%  ({role})")
        table.append({"call": label, "measured_s": round(t, 4), "model_s": round(est, 4),
                      "rel_error": round(err, 4), "role": role})
    mean = lambda role: sum(r["rel_error"] for r in table if r["role"] == role) / sum(  # noqa: E731
        r["role"] == role for r in table)
    out = {"measured_peak_tflops": round(peak, 4), "measured_gbytes_per_s": round(bw, 2),
           "constants": {k: getattr(hw, k) for k in ("compute_efficiency", "memory_efficiency",
                                                     "overhead_us_per_layer")},
           "measurements": table, "mean_rel_error_fit": round(mean("fit"), 4),
           "mean_rel_error_held_out": round(mean("held out"), 4)}
    print(f"  mean relative error: {100 * out['mean_rel_error_fit']:.1f}% on the fit set, "
          f"{100 * out['mean_rel_error_held_out']:.1f}% on tiny-llama (held out)")
    return out, (hw, rows[-1][0])


def holdout(hw, smollm2: LlamaShape) -> dict | None:
    path = Path("bench/results/grpo_step.json")
    if not path.exists():
        return None
    measured = json.loads(path.read_text())["ours_step_s"]
    seqs = 8 * 8
    est = (predict(hw, smollm2, Call("generate", seqs, GRPO_PROMPT_TOKENS, NEW))
           + predict(hw, smollm2, Call("train", seqs, GRPO_PROMPT_TOKENS, NEW)))
    err = abs(est - measured) / measured
    print(f"hold-out SmolLM2 GRPO step (grpo_step.json): measured {measured:.2f} s  model {est:.2f} s  "
          f"error {100 * err:.1f}%")
    return {"measured_s": round(measured, 3), "model_s": round(est, 3), "rel_error": round(err, 4)}


def main(argv: list[str]) -> int:
    from rl.tools.realloc_plan import run_plan

    p = argparse.ArgumentParser(prog="rl bench plan", description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iters", type=int, default=20000)
    p.add_argument("--out", default="bench/results/plan.json")
    p.add_argument("--realhf-only", action="store_true", help="only the ReaLHF settings (no CPU measurements); "
                   "updates the realhf section of --out and keeps the rest")
    a = p.parse_args(argv)
    from rl.bench.plan_realhf import realhf_section

    if a.realhf_only:
        out = Path(a.out)
        result = json.loads(out.read_text()) if out.exists() else {}
        result["realhf"] = realhf_section(a.seed, a.iters, 20.0)
        write_results(a.out, result, indent=1)
        return 0
    torch.manual_seed(0)
    calibration, (hw, smollm2) = calibrate(a.repeats)
    calibration["holdout_grpo_step"] = holdout(hw, smollm2)
    plans = {}
    for path in SPECS:
        plans[load_cluster_spec(path).name] = run_plan(path, a.seed, a.iters, 20.0)
    result = {"calibration": calibration, "plans": plans, "realhf": realhf_section(a.seed, a.iters, 20.0),
              **machine_info("loadavg_1min"), "date": timestamp()}
    write_results(a.out, result, indent=1)
    return 0


if __name__ == "__main__":
    import sys
    raise SystemExit(main(sys.argv[1:]))
