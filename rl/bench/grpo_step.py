"""`rl bench grpo-step`: one GRPO step of ours next to TRL's GRPOTrainer on identical work.

Work: SmolLM2-135M-Instruct fp32, 8 prompts x 8 samples, 16 new tokens, beta 0, the same arithmetic
prompts, exact-match reward, one optimizer step per rollout batch. Both are timed in the same run on
the same machine; each runs `--steps` steps and the median of all but the first (warm-up) is
reported. Writes bench/results/grpo_step.json.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from rl.bench.common import machine_info, run_grpo_arm, spread, timestamp, write_results

PROMPTS_PER_STEP, SAMPLES, NEW_TOKENS = 8, 8, 16


def ours(steps: int, out_dir: Path) -> list[float]:
    run = run_grpo_arm("bench_grpo_step", out_dir, [
        "run.progress_bar=false", "model.name=smollm2-135m",
        "task.digits=[1, 2, 3]", f"trainer.steps={steps}", f"trainer.prompts_per_step={PROMPTS_PER_STEP}",
        f"rollout.samples_per_prompt={SAMPLES}", f"rollout.max_new_tokens={NEW_TOKENS}",
        f"trainer.minibatch_samples={PROMPTS_PER_STEP * SAMPLES}",
        f"trainer.microbatch_samples={PROMPTS_PER_STEP * SAMPLES}", "algorithm.kl_coef=0.0",
        "eval.before_after=false", "trainer.lr=1e-6"])
    return [r["time/step_s"] for r in run.rows]


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


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rl bench grpo-step", description=__doc__)
    p.add_argument("--steps", type=int, default=3, help="steps per system; the first is warm-up")
    p.add_argument("--out", default="bench/results/grpo_step.json")
    p.add_argument("--skip-trl", action="store_true")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        t_ours = ours(a.steps, Path(tmp))
        print(f"ours: step times {[round(t, 2) for t in t_ours]} s", flush=True)
        t_trl = [] if a.skip_trl else trl(a.steps, Path(tmp))
        print(f"trl:  step times {[round(t, 2) for t in t_trl]} s", flush=True)
    med = lambda ts: spread(ts[1:] if len(ts) > 1 else ts)["median"] if ts else None  # noqa: E731
    result = {"work": {"model": "smollm2-135m", "dtype": "float32", "prompts": PROMPTS_PER_STEP,
                       "samples_per_prompt": SAMPLES, "max_new_tokens": NEW_TOKENS, "beta": 0.0},
              "ours_step_s": med(t_ours), "trl_step_s": med(t_trl), "ours_all_s": t_ours, "trl_all_s": t_trl,
              "ratio_ours_over_trl": med(t_ours) / med(t_trl) if t_trl else None,
              "machine": machine_info("cpus", "python"), "date": timestamp()}
    print(f"GRPO step: ours {result['ours_step_s']:.2f} s", end="")
    if t_trl:
        print(f" | TRL GRPOTrainer {result['trl_step_s']:.2f} s | ratio {result['ratio_ours_over_trl']:.3f}x "
              "(target <= 0.5, goal <= 0.33)")
    else:
        print()
    write_results(a.out, result)
    return 0
