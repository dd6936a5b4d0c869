"""Synthetic run histories for the V0 tests: "What is a + b?" prompts whose success depends on
the operands' digit count and on the policy's skill (which may grow over the run's steps)."""
from __future__ import annotations

import json
import math
import random
from pathlib import Path


def problems(pool: int = 120, seed: int = 123) -> list[tuple[str, int]]:
    """(prompt, digits) with digits cycling 1, 2, 3; the same pool for every run."""
    rng, out = random.Random(seed), []
    for i in range(pool):
        d = 1 + i % 3
        a, b = rng.randint(10 ** (d - 1), 10 ** d - 1), rng.randint(10 ** (d - 1), 10 ** d - 1)
        out.append((f"What is {a} + {b}?", d))
    return out


def success_rate(skill: float, digits: int) -> float:
    return 1.0 / (1.0 + math.exp(-2.5 * (skill - digits + 0.5)))


def write_run(path: Path, skill: float, skill_per_step: float = 0.0, steps: int = 20,
              prompts_per_step: int = 16, samples: int = 4, seed: int = 0) -> Path:
    """A rollouts.jsonl as the trainer writes it: {step, key, prompt, rewards} per prompt per step."""
    rng = random.Random(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for step in range(steps):
            for text, d in rng.sample(problems(), prompts_per_step):
                p = success_rate(skill + skill_per_step * step, d)
                fh.write(json.dumps({"step": step, "key": text, "prompt": text,
                                     "rewards": [float(rng.random() < p) for _ in range(samples)]}) + "\n")
    return path
