"""V0's data: policies read from run history, and evaluation episodes over one embedding table.

A policy is one run over steps [k*W, (k+1)*W) of its `runs/<name>/rollouts.jsonl`, described by
its (prompt, mean reward in [0, 1]) pairs (`PolicyContext`). Prompts are indexed once into a table
of unique texts; an `Episode` is (queries, their labels, context, its rewards) as row indices.

Example:
    policies = policy_windows(["runs/a/rollouts.jsonl"], window_steps=10)
    texts, indexed = index_policies(policies)        # embed `texts` once, index rows per policy
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from rl.data.records import read_jsonl

# ---------------------------------------------------------------------------------------------
# Policies from rollouts.jsonl


@dataclass
class PolicyContext:
    """One policy's (prompt, mean reward) pairs; rewards normalised to [0, 1]."""
    name: str
    prompts: list[str]
    rewards: list[float]


def read_outcomes(path: str | Path) -> list[dict]:
    """Rows {step (or None), prompt, reward_sum, count} from a rollouts.jsonl ({step, prompt,
    rewards: [...]}) or a context JSONL ({prompt, reward}). Example row: {"prompt": "..", "reward": 1}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected a rollouts.jsonl or a JSONL of prompt/reward)")
    rows = []
    for i, row in read_jsonl(path):
        if "prompt" not in row or ("rewards" not in row and "reward" not in row):
            raise ValueError(f"{path}:{i}: a row needs 'prompt' and 'rewards' (list) or 'reward' (number)")
        values = row["rewards"] if "rewards" in row else [row["reward"]]
        values = [float(v) for v in values if v is not None]
        if values:
            rows.append({"step": row.get("step"), "prompt": str(row["prompt"]),
                         "reward_sum": sum(values), "count": len(values)})
    return rows


def aggregate(rows: list[dict], reward_range: tuple[float, float] = (0.0, 1.0)) -> dict[str, float]:
    """Mean reward per prompt over all its samples, (r - low) / (high - low) clipped to [0, 1]."""
    low, high = reward_range
    if high <= low:
        raise ValueError(f"reward range must have high > low, got {tuple(reward_range)}")
    sums, counts = defaultdict(float), defaultdict(int)
    for r in rows:
        sums[r["prompt"]] += r["reward_sum"]
        counts[r["prompt"]] += r["count"]
    return {p: min(1.0, max(0.0, (sums[p] / counts[p] - low) / (high - low))) for p in sums}


def policy_windows(paths: Sequence[str | Path], window_steps: int,
                   reward_range: tuple[float, float] = (0.0, 1.0), min_prompts: int = 8) -> list[PolicyContext]:
    """Split each file into policies of `window_steps` steps: window k holds steps [kW, (k+1)W).

    Rows without a step form one window. Windows with fewer than `min_prompts` prompts are dropped.
    Example: policy_windows(["runs/a/rollouts.jsonl"], 10) -> [a:[0,10), a:[10,20), ...]
    """
    if window_steps < 1:
        raise ValueError(f"--window-steps must be >= 1, got {window_steps}")
    out = []
    for path in paths:
        by_window: dict[int, list[dict]] = defaultdict(list)
        for row in read_outcomes(path):
            by_window[-1 if row["step"] is None else int(row["step"]) // window_steps].append(row)
        label = Path(path).parent.name or Path(path).stem
        for k in sorted(by_window):
            means = aggregate(by_window[k], reward_range)
            span = "all" if k < 0 else f"[{k * window_steps},{(k + 1) * window_steps})"
            if len(means) >= min_prompts:
                out.append(PolicyContext(f"{label}:{span}", list(means), list(means.values())))
    if not out:
        raise ValueError(f"no policy window with >= {min_prompts} prompts in {[str(p) for p in paths]}")
    return out


# ---------------------------------------------------------------------------------------------
# Episodes: (queries, their labels, context, its rewards) as index tensors into one embedding table


@dataclass
class Episode:
    name: str
    query_idx: torch.Tensor      # [Q] rows of the embedding table
    query_labels: torch.Tensor   # [Q] mean reward in [0, 1]
    context_idx: torch.Tensor    # [C]
    context_rewards: torch.Tensor  # [C]


def index_policies(policies: list[PolicyContext]) -> tuple[list[str], list[tuple[torch.Tensor, torch.Tensor]]]:
    """Unique prompt texts and, per policy, (row indices [n], rewards [n])."""
    vocab: dict[str, int] = {}
    indexed = []
    for pol in policies:
        idx = torch.tensor([vocab.setdefault(p, len(vocab)) for p in pol.prompts], dtype=torch.long)
        indexed.append((idx, torch.tensor(pol.rewards, dtype=torch.float32)))
    return list(vocab), indexed


def eval_episodes(policies: list[PolicyContext], indexed, is_query, context_size: int) -> list[Episode]:
    """Per policy: queries = prompts with is_query(row index) true, context = the others (the
    first `context_size`). Policies without >= 2 queries or without context are skipped."""
    out = []
    for pol, (idx, rew) in zip(policies, indexed):
        q = torch.tensor([bool(is_query(int(i))) for i in idx], dtype=torch.bool)
        if int(q.sum()) >= 2 and int((~q).sum()) >= 1:
            out.append(Episode(pol.name, idx[q], rew[q], idx[~q][:context_size], rew[~q][:context_size]))
    return out


def prompt_split(num_prompts: int, fraction: float, seed: int) -> torch.Tensor:
    """[U] bool: a seeded `fraction` of the unique prompts (at least 1 when fraction > 0).

    Example: prompt_split(10, 0.2, seed=0).sum() -> 2
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"held-out prompt fraction must lie in [0, 1), got {fraction}")
    chosen = torch.zeros(num_prompts, dtype=torch.bool)
    count = max(1, round(fraction * num_prompts)) if fraction > 0 else 0
    chosen[torch.randperm(num_prompts, generator=torch.Generator().manual_seed(seed + 1))[:count]] = True
    return chosen
