"""Preference data for DPO: pairs (prompt, chosen, rejected), loaded from JSONL or built from our
own GRPO rollout logs, and tokenised with the model's chat template.

JSONL format, one pair per line:
    {"prompt": "What is 2 + 3? ...", "chosen": "5", "rejected": "6"}
`prompt` is the user turn (a string) or a list of chat messages [{"role", "content"}, ...];
`chosen` / `rejected` are assistant completions: plain text, or TRL's conversational form
(`[{"role": "assistant", "content": ...}]`, or the full conversation starting with the prompt's
turns); the end-of-turn token is appended.

From a GRPO run: each row of runs/<name>/rollouts.jsonl is {"step", "key", "prompt", "rewards",
"completions"}; the pair is the best vs the worst sample of that prompt (highest vs lowest reward),
and prompts whose rewards are all equal are skipped (no preference to learn).

    python -m rl.data.prefs runs/quickstart/rollouts.jsonl --out pairs.jsonl   # build and write pairs

Example: pairs = pairs_from_rollouts("runs/q/rollouts.jsonl"); train, held = split_pairs(pairs, 0.1, 0)
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rl.config import ConfigError
from rl.data.prompts import chat_prompt_ids
from rl.data.records import read_jsonl


@dataclass
class PreferencePair:
    prompt: str | list[dict]  # user text, or chat messages
    chosen: str
    rejected: str
    meta: dict = field(default_factory=dict)  # e.g. key, step, reward_chosen, reward_rejected

    def prompt_key(self) -> str:
        """Identifies the prompt, so held-out pairs never share a prompt with training pairs."""
        return self.prompt if isinstance(self.prompt, str) else json.dumps(self.prompt, sort_keys=True)


@dataclass
class EncodedPairs:
    """Pairs as token ids. prompt_ids: [num_pairs][len]; chosen_ids / rejected_ids: [num_pairs][len]."""
    prompt_ids: list[list[int]]
    chosen_ids: list[list[int]]
    rejected_ids: list[list[int]]
    dropped: int = 0  # pairs whose prompt alone filled max_length_tokens

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def select(self, idx: list[int]) -> "EncodedPairs":
        return EncodedPairs([self.prompt_ids[i] for i in idx], [self.chosen_ids[i] for i in idx],
                            [self.rejected_ids[i] for i in idx])


def load_pairs(path: str | Path, key: str = "dpo.pairs_path") -> list[PreferencePair]:
    """Reads a prompt/chosen/rejected JSONL; a bad line is a ConfigError naming the file and line."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{key}: {str(path)!r} not found")
    pairs = []
    for n, row in read_jsonl(path, ConfigError, f"{key}: "):
        for col in ("prompt", "chosen", "rejected"):
            if col not in row:
                raise ConfigError(f"{key}: {path}:{n}: missing {col!r} (a pair needs prompt, chosen, rejected)")
        if not _is_prompt(row["prompt"]):
            raise ConfigError(f"{key}: {path}:{n}: 'prompt' must be a string or a list of "
                              "{role, content} messages")
        chosen, rejected = (_completion(row[c], row["prompt"]) for c in ("chosen", "rejected"))
        if chosen is None or rejected is None:
            raise ConfigError(f"{key}: {path}:{n}: 'chosen' and 'rejected' must be strings or message lists "
                              "ending in an assistant turn (TRL's conversational format)")
        meta = {k: v for k, v in row.items() if k not in ("prompt", "chosen", "rejected")}
        pairs.append(PreferencePair(row["prompt"], chosen, rejected, meta))
    if not pairs:
        raise ConfigError(f"{key}: {path} holds no pairs")
    return pairs


def _completion(value, prompt) -> str | None:
    """A completion's text: a string, or TRL's conversational form (`[{"role": "assistant", ...}]`,
    or the whole conversation with the prompt's turns first: the implicit-prompt format)."""
    if isinstance(value, str):
        return value
    if not (_is_prompt(value) and value[-1]["role"] == "assistant"):
        return None
    if isinstance(prompt, list) and value[:len(prompt)] == prompt:
        value = value[len(prompt):]
    if any(m["role"] != "assistant" for m in value):
        return None  # a multi-turn completion does not fit one generated answer
    return "".join(m["content"] for m in value)


def _is_prompt(p) -> bool:
    if isinstance(p, str):
        return True
    return isinstance(p, list) and bool(p) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in p)


def best_vs_worst(rewards: list[float], completions: list[str]) -> tuple[int, int] | None:
    """Indices (chosen, rejected) of the highest- and lowest-reward samples of one prompt; None when
    all rewards are equal or the two texts are identical (nothing to prefer). First index wins ties.

    Example: best_vs_worst([0, 1, 0.5], ["a", "b", "c"]) -> (1, 0)
    """
    if len(rewards) != len(completions):
        raise ValueError(f"{len(rewards)} rewards for {len(completions)} completions")
    if len(rewards) < 2:
        return None
    hi = max(range(len(rewards)), key=lambda i: (rewards[i], -i))
    lo = min(range(len(rewards)), key=lambda i: (rewards[i], i))
    if rewards[hi] == rewards[lo] or completions[hi] == completions[lo]:
        return None
    return hi, lo


def pairs_from_rollouts(path: str | Path, key: str = "dpo.from_rollouts") -> list[PreferencePair]:
    """Best vs worst sample of every logged prompt visit of a GRPO run (rollouts.jsonl)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{key}: {str(path)!r} not found (a GRPO run writes runs/<name>/rollouts.jsonl)")
    pairs, seen = [], set()
    for n, row in read_jsonl(path, ConfigError, f"{key}: "):
        if not {"prompt", "rewards"} <= row.keys():
            raise ConfigError(f"{key}: {path}:{n}: not a rollout row (needs prompt, rewards, completions)")
        if "completions" not in row or (row["rewards"] and not row["completions"]):
            raise ConfigError(f"{key}: {path}:{n}: no 'completions' (logged by an older version that kept "
                              "only rewards); rerun the GRPO run to log completion texts")
        pick = best_vs_worst(row["rewards"], row["completions"])
        if pick is None:
            continue
        hi, lo = pick
        triple = (row["prompt"], row["completions"][hi], row["completions"][lo])
        if triple in seen:
            continue
        seen.add(triple)
        pairs.append(PreferencePair(*triple, meta={"key": row.get("key"), "step": row.get("step"),
                                                   "reward_chosen": row["rewards"][hi],
                                                   "reward_rejected": row["rewards"][lo]}))
    if not pairs:
        raise ConfigError(f"{key}: {path} has no prompt with unequal rewards, so no preference pairs")
    return pairs


def write_pairs(pairs: list[PreferencePair], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for p in pairs:
            row = asdict(p)
            fh.write(json.dumps({"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"],
                                 **row["meta"]}) + "\n")
    return path


def split_pairs(pairs: list[PreferencePair], eval_fraction: float, seed: int
                ) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Held-out split by prompt (a seeded shuffle of distinct prompts): no prompt is on both sides.
    With eval_fraction > 0 and at least two prompts, at least one prompt is held out."""
    keys = sorted({p.prompt_key() for p in pairs})
    random.Random(seed).shuffle(keys)
    n_eval = round(eval_fraction * len(keys))
    if eval_fraction > 0 and len(keys) >= 2:
        n_eval = min(max(1, n_eval), len(keys) - 1)
    held = set(keys[:n_eval])
    return [p for p in pairs if p.prompt_key() not in held], [p for p in pairs if p.prompt_key() in held]


def encode_pairs(tok, pairs: list[PreferencePair], system_prompt: str | None = None,
                 max_length_tokens: int = 256, append_eos: bool = True) -> EncodedPairs:
    """Token ids per pair; a completion is cut so prompt + completion <= max_length_tokens, and a
    pair whose prompt alone reaches the limit is dropped (counted)."""
    out = EncodedPairs([], [], [])
    for p in pairs:
        prompt = chat_prompt_ids(tok, p.prompt, system_prompt)
        room = max_length_tokens - len(prompt)
        if room < 1:
            out.dropped += 1
            continue
        ends = [tok.eos_token_id] if append_eos and tok.eos_token_id is not None else []
        chosen = (tok(p.chosen, add_special_tokens=False).input_ids + ends)[:room]
        rejected = (tok(p.rejected, add_special_tokens=False).input_ids + ends)[:room]
        out.prompt_ids.append(prompt)
        out.chosen_ids.append(chosen)
        out.rejected_ids.append(rejected)
    return out


def step_pairs(num_pairs: int, pairs_per_step: int, seed: int, step: int) -> list[int]:
    """Indices of the pairs of optimizer step `step`: a seeded permutation per epoch, cut in order.

    Example: step_pairs(10, 4, 0, 2) -> the last 2 indices of epoch 0's permutation."""
    per_epoch = math.ceil(num_pairs / pairs_per_step)
    epoch, k = divmod(step, per_epoch)
    order = list(range(num_pairs))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order[k * pairs_per_step:(k + 1) * pairs_per_step]


def total_steps(num_pairs: int, pairs_per_step: int, epochs: int, max_steps: int | None = None) -> int:
    """Optimizer steps of `epochs` passes over the pairs, capped at `max_steps`."""
    steps = epochs * math.ceil(num_pairs / pairs_per_step)
    return min(steps, max_steps) if max_steps else steps


def main(argv: list[str] | None = None) -> int:
    """`python -m rl.data.prefs ROLLOUTS.jsonl --out PAIRS.jsonl`: build pairs from a GRPO rollout log."""
    ap = argparse.ArgumentParser(prog="rl.data.prefs", description="Build DPO preference pairs (best vs worst "
                                 "sample of a prompt) from a GRPO run's rollouts.jsonl.")
    ap.add_argument("rollouts")
    ap.add_argument("--out", required=True, help="pairs JSONL to write (prompt, chosen, rejected)")
    args = ap.parse_args(argv)
    try:
        pairs = pairs_from_rollouts(args.rollouts, key="rollouts")
    except ConfigError as e:
        print(f"rl: {e}", file=sys.stderr)
        return 2
    write_pairs(pairs, args.out)
    prompts = len({p.prompt_key() for p in pairs})
    print(f"wrote {len(pairs)} pairs ({prompts} distinct prompts) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
