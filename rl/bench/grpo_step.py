"""`rl bench grpo-step`: one GRPO step of ours next to TRL's GRPOTrainer on identical work.

Work: SmolLM2-135M-Instruct fp32, 8 prompts x 8 samples, 16 new tokens, beta 0, the same arithmetic
prompts, exact-match reward, one optimizer step per rollout batch. Both are timed in the same run on
the same machine; each runs `--warmup-steps` (default 2) untimed steps and then `--measured-steps`
(default 5) timed ones; the median, min and max of the measured steps and the ratio of the medians
are reported, with the 1-minute load average before each side. About 8-10 minutes on 2 CPU cores.
Writes bench/results/grpo_step.json.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from rl.bench.common import loadavg_1min, machine_info, run_grpo_arm, spread, timestamp, write_results

PROMPTS_PER_STEP, SAMPLES, NEW_TOKENS = 8, 8, 16


def ours(steps: int, out_dir: Path) -> list[float]:
    run = run_grpo_arm("bench_grpo_step", out_dir, [
        "run.progress_bar=false", "model.name=smollm2-135m",
        "task.digits=[1, 2, 3]", f"trainer.steps={steps}", f"trainer.prompts_per_step={PROMPTS_PER_STEP}",
        f"rollout.samples_per_prompt={SAMPLES}", f"rollout.max_new_tokens={NEW_TOKENS}",
        f"trainer.minibatch_samples={PROMPTS_PER_STEP * SAMPLES}",
        f"trainer.microbatch_samples={PROMPTS_PER_STEP * SAMPLES}", "algorithm.kl_coef=0.0",
        "eval.before_after=false", "trainer.lr=1e-6"])
    return [r["time/step_s"] for r in run.rows if "time/step_s" in r]


def trl_reward(prompts, completions, answer, **_):
    from envs.rewards import exact_match
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return exact_match(prompts, texts, answer)


def trl(steps: int, out_dir: Path) -> list[float]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from envs.tasks import ArithmeticTask
    from rl.workers.models import load_tokenizer, resolve_model_path
    torch.set_num_threads(os.cpu_count() or 1)
    task = ArithmeticTask(digits=[1, 2, 3], train_size=2000, eval_size=200, seed=0)
    rows = [{"prompt": [{"role": "user", "content": e.prompt}], "answer": e.answer}
            for e in task.train[: PROMPTS_PER_STEP * steps]]
    times, last = [], [None]

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            last[0] = time.time()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.time() - last[0])

    args = GRPOConfig(
        output_dir=str(out_dir / "trl"), per_device_train_batch_size=PROMPTS_PER_STEP * SAMPLES,
        gradient_accumulation_steps=1, num_generations=SAMPLES, max_completion_length=NEW_TOKENS,
        beta=0.0, learning_rate=1e-6, max_steps=steps, temperature=1.0, use_cpu=True, bf16=False,
        report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0,
        dataloader_num_workers=0)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path("smollm2-135m"), dtype=torch.float32)
    trainer = GRPOTrainer(model=model, reward_funcs=trl_reward, args=args,
                          train_dataset=Dataset.from_list(rows), processing_class=load_tokenizer("smollm2-135m"),
                          callbacks=[Timer()])
    trainer.train()
    return times


def step_summary(step_s: list[float], warmup: int) -> dict:
    """Spread of the step times after the first `warmup` steps, and every step time for reference.
    Example: step_summary([9.0, 5.0, 4.0, 6.0], 2) -> median 5.0, min 4.0, max 6.0, measured [4.0, 6.0]."""
    measured = step_s[warmup:]
    if not measured:
        raise ValueError(f"{len(step_s)} steps leave none to measure after {warmup} warm-up steps")
    return {**spread(measured), "measured_s": measured, "warmup_s": step_s[:warmup], "steps": len(measured)}


def _side(fn, steps: int, warmup: int, out_dir: Path, name: str) -> dict:
    load = loadavg_1min()
    times = fn(steps, out_dir)
    print(f"{name}: step times {[round(t, 2) for t in times]} s (first {warmup} warm-up)", flush=True)
    return {**step_summary(times, warmup), "load_avg_1m": load}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rl bench grpo-step", description=__doc__)
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed steps per system")
    p.add_argument("--measured-steps", type=int, default=5, help="timed steps per system, after the warm-up")
    p.add_argument("--out", default="bench/results/grpo_step.json")
    p.add_argument("--skip-trl", action="store_true")
    a = p.parse_args(argv)
    steps = a.warmup_steps + a.measured_steps
    with tempfile.TemporaryDirectory() as tmp:
        sides = {"ours": _side(ours, steps, a.warmup_steps, Path(tmp), "ours")}
        if not a.skip_trl:
            sides["trl"] = _side(trl, steps, a.warmup_steps, Path(tmp), "trl")
    o, t = sides["ours"], sides.get("trl")
    result = {"work": {"model": "smollm2-135m", "dtype": "float32", "prompts": PROMPTS_PER_STEP,
                       "samples_per_prompt": SAMPLES, "max_new_tokens": NEW_TOKENS, "beta": 0.0,
                       "warmup_steps": a.warmup_steps, "measured_steps": a.measured_steps},
              "ours": o, "trl_grpo_trainer": t, "ours_step_s": o["median"], "trl_step_s": t and t["median"],
              "ratio_ours_over_trl_median": o["median"] / t["median"] if t else None,
              "load_avg_1m": o["load_avg_1m"], "machine": machine_info("cpus", "python"), "date": timestamp()}
    print(f"GRPO step (median of {a.measured_steps} after {a.warmup_steps} warm-up): ours {o['median']:.2f} s "
          f"[{o['min']:.2f}, {o['max']:.2f}]", end="")
    if t:
        print(f" | TRL GRPOTrainer {t['median']:.2f} s [{t['min']:.2f}, {t['max']:.2f}] | ratio of medians "
              f"{result['ratio_ours_over_trl_median']:.3f}x | load avg {o['load_avg_1m']:.2f} / {t['load_avg_1m']:.2f}")
    else:
        print()
    write_results(a.out, result)
    return 0
