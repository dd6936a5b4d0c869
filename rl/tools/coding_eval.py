"""`rl eval RECIPE` of a coding recipe (`algorithm.name: coding_grpo`): the recipe's agent over its tasks.

The recipe's `coding:` section is turned into an `rl eval swebench` command line, so a recipe and the
CLI evaluate the same way: coding.tasks, coding.agent (bash | tools), coding.turn_control (a
percentile cap calibrates first), hard_turn_limit, command_timeout_s, max_new_tokens_per_turn, with
rollout.temperature and run.seed. The model is coding.eval_model when set (`openai:<base-url>`: a
served model, e.g. the run's export under `vllm serve`, with coding.request_timeout_s / max_retries /
backoff_s), else --checkpoint's hf/ folder, else the recipe's model.name, in process. Output:
runs/<run.name>/eval_swebench/ (the swebench layout: report.json, trajectories, summary.json).

Example:
    rl eval recipes/coding_grpo.yaml coding.eval_model=openai:http://127.0.0.1:8000/v1 coding.agent=tools
"""
from __future__ import annotations

from pathlib import Path

from rl.config import Config
from rl.run.run import run_dir


def eval_model(cfg: Config, checkpoint: str | None) -> str:
    """The --model value: the recipe's served model, a checkpoint's HF folder, or the recipe's model."""
    if cfg.coding.eval_model:
        if checkpoint:
            raise ValueError("coding.eval_model and --checkpoint both name the model: give one")
        return cfg.coding.eval_model
    if checkpoint:
        hf = Path(checkpoint) / "hf"
        if not (hf / "config.json").exists():
            raise ValueError(f"--checkpoint: {checkpoint} has no hf/ folder (write one with `rl export`)")
        return f"policy:{hf}"
    return f"policy:{cfg.model.name}"


def swebench_argv(cfg: Config, checkpoint: str | None = None) -> list[str]:
    """The `rl eval swebench` arguments a coding recipe stands for."""
    c = cfg.coding
    return ["--tasks", c.tasks, "--model", eval_model(cfg, checkpoint), "--agent", c.agent,
            "--turn-control", c.turn_control, "--hard-turn-limit", str(c.hard_turn_limit),
            "--command-timeout", str(c.command_timeout_s), "--max-new-tokens", str(c.max_new_tokens_per_turn),
            "--temperature", str(cfg.rollout.temperature), "--seed", str(cfg.run.seed),
            "--workers", str(c.eval_workers), "--request-timeout-s", str(c.request_timeout_s),
            "--max-retries", str(c.max_retries), "--backoff-s", str(c.backoff_s),
            "--out", str(run_dir(cfg) / "eval_swebench")]


def eval_coding(cfg: Config, checkpoint: str | None = None) -> int:
    import sys

    from rl.tools.swebench import main
    try:
        argv = swebench_argv(cfg, checkpoint)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("rl eval swebench " + " ".join(argv), flush=True)
    return main(argv)
