"""Held-out evaluation: greedy accuracy and pass@k, overall and per task column (e.g. digits)."""
from __future__ import annotations

from collections import defaultdict
from typing import Callable

from envs.tasks import Example
from rl.config import RewardConfig
from rl.drivers.rewards import example_columns, score
from rollout.types import Completion, GenerationRequest

GenerateFn = Callable[[list[GenerationRequest], int], list[Completion]]


def evaluate(generate: GenerateFn, encode, examples: list[Example], correctness: RewardConfig,
             max_new_tokens: int, pass_k: int = 1, seed: int = 0, threshold: float = 0.5,
             reward_models=None) -> dict[str, float]:
    """Greedy accuracy (temperature 0) with the recipe's first reward as the correctness check (a reward
    model's actor: `reward_models.get(0)`); with pass_k > 1 also pass@k at temperature 1 (a prompt passes
    if any of k samples is correct)."""
    out = _accuracy(generate, encode, examples, correctness, max_new_tokens, 1, 0.0, seed, threshold, "greedy",
                    reward_models)
    if pass_k > 1:
        out.update(_accuracy(generate, encode, examples, correctness, max_new_tokens, pass_k, 1.0, seed,
                             threshold, f"pass@{pass_k}", reward_models))
    return out


def _accuracy(generate, encode, examples, correctness, max_new_tokens, n, temperature, seed, threshold,
              name, reward_models=None) -> dict[str, float]:
    reqs = [GenerationRequest(prompt_ids=encode(ex), n=n, max_new_tokens=max_new_tokens,
                              temperature=temperature, request_id=i) for i, ex in enumerate(examples)]
    comps = generate(reqs, seed)
    columns = example_columns(examples, [c.request_id for c in comps])
    res = score([correctness], [examples[c.request_id].prompt for c in comps], [c.text for c in comps], columns,
                completion_ids=[list(c.token_ids) for c in comps], models=reward_models)
    passed = defaultdict(bool)
    for c, r in zip(comps, next(iter(res.per_fn.values()))):  # the one function scored
        passed[c.request_id] |= (r is not None and r >= threshold)
    acc = {f"eval/{name}_accuracy": sum(passed[i] for i in range(len(examples))) / max(1, len(examples))}
    by: dict[str, list[bool]] = defaultdict(list)
    for i, ex in enumerate(examples):
        if "digits" in ex.columns:
            by[f"eval/{name}_accuracy/{ex.columns['digits']}digit"].append(passed[i])
    acc.update({k: sum(v) / len(v) for k, v in sorted(by.items())})
    return acc


class Evaluator:
    """The one held-out evaluator (GRPO, PPO, DPO, coding and `rl eval`): `evaluate` on a rollout
    worker actor with the recipe's settings bound. Example: metrics = Evaluator(engine, encode, ...)()"""

    def __init__(self, engine, encode, examples: list[Example], correctness: RewardConfig, *, max_new_tokens: int,
                 pass_k: int = 1, seed: int = 0, threshold: float = 0.5, reward_models=None):
        self.engine, self.encode, self.examples, self.correctness = engine, encode, examples, correctness
        self.max_new_tokens, self.pass_k, self.seed, self.threshold = max_new_tokens, pass_k, seed, threshold
        self.reward_models = reward_models

    def __call__(self) -> dict[str, float]:
        import ray

        def gen(reqs, seed):
            return ray.get(self.engine.generate.remote(reqs, seed))
        return evaluate(gen, self.encode, self.examples, self.correctness, self.max_new_tokens, self.pass_k,
                        self.seed, self.threshold, self.reward_models)
