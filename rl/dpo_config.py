"""The `dpo:` section of a recipe (offline preference optimisation, SPECS.md §3)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DPOConfig:
    pairs_path: str | None = None  # JSONL with prompt / chosen / rejected
    from_rollouts: str | None = None  # or: a GRPO run's rollouts.jsonl -> best vs worst sample per prompt
    beta: float = 0.1
    epochs: int = 1
    pairs_per_step: int = 8  # pairs per optimizer step
    microbatch_pairs: int = 8  # pairs per forward/backward (gradient accumulation)
    max_steps: int | None = None  # cap on optimizer steps (None: epochs x ceil(train pairs / pairs_per_step))
    max_length_tokens: int = 256  # prompt + completion; longer completions are cut
    append_eos: bool = True  # completions end with the end-of-turn token, as a finished reply does
    eval_fraction: float = 0.1  # held-out pairs (split by prompt) for reward accuracy
