"""Where coding tasks come from: a JSONL of SWE-bench rows, generated injected-bug repos, or HumanEval."""
from __future__ import annotations

from pathlib import Path

from envs.coding.tasks import CodingTask, load_tasks


def load_task_source(spec: str, seed: int = 0, workers: int = 1) -> list[CodingTask]:
    """`tasks.jsonl` (SWE-bench rows), `generator:N` (injected-bug repos) or `humaneval:N`."""
    if spec.startswith("generator:"):
        from envs.coding.generator import generate_tasks
        return generate_tasks(int(spec.split(":", 1)[1]), seed=seed, workers=workers)
    if spec.startswith("humaneval:"):
        from envs.coding.humaneval import humaneval_tasks
        return humaneval_tasks(int(spec.split(":", 1)[1]))
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"--tasks {spec!r}: no such file (or use generator:N, humaneval:N)")
    return load_tasks(path)


def load_eval_tasks(spec: str, seed: int = 0, workers: int = 1) -> list[CodingTask]:
    """`rl eval swebench --tasks`: a JSONL keeps its SWE-bench harness columns; generator:/humaneval: as above."""
    if ":" not in spec and Path(spec).exists():
        from envs.coding.official import load_official_rows
        return load_official_rows(Path(spec))
    return load_task_source(spec, seed, workers)
