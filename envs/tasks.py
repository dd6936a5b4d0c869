"""LLM tasks: prompts with reference answers, train/held-out splits and a resumable sampler.

- `arithmetic`: "What is a + b?" style questions; operand digit counts mixed from `digits`; train
  and held-out splits are disjoint and seeded.
- `code`: functions to write, graded by unit tests (HumanEval or MBPP-style rows; envs/coding/code_task.py).
- `dataset`: a JSONL / Parquet file, a `datasets` folder or a hub id (`envs.sources`); the prompt is a
  string or chat messages, the answer column may be a dotted path, other columns reach reward
  functions as keyword arguments; the chat template is applied by the tokenizer, once.

Example: task = ArithmeticTask(digits=[1, 2], seed=0); batch = task.sampler().next(8)
"""
from __future__ import annotations

import importlib
import random
from dataclasses import dataclass, field

from algorithms.registry import Registry
from envs.sources import as_prompt, column, read_rows

TASKS: Registry = Registry("task")


@dataclass
class Example:
    key: str  # stable id (allocator state and rollout logs are keyed by it)
    prompt: str | list[dict]  # user text, or chat messages (TRL's conversational format)
    answer: str
    columns: dict = field(default_factory=dict)  # extra dataset columns passed to rewards


class EpochSampler:
    """Walks the train split in a seeded permutation per epoch; its state is one integer."""

    def __init__(self, examples: list[Example], seed: int, consumed: int = 0):
        self.examples, self.seed, self.consumed = examples, seed, consumed

    def _order(self, epoch: int) -> list[int]:
        order = list(range(len(self.examples)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def next(self, n: int) -> list[Example]:
        out = []
        for _ in range(n):
            epoch, pos = divmod(self.consumed, len(self.examples))
            out.append(self.examples[self._order(epoch)[pos]])
            self.consumed += 1
        return out

    @property
    def epoch(self) -> float:
        return self.consumed / len(self.examples)

    def state_dict(self) -> dict:
        return {"consumed": self.consumed}

    def load_state_dict(self, d: dict) -> None:
        self.consumed = int(d["consumed"])


class Task:
    train: list[Example]
    eval: list[Example]
    system_prompt: str | None = None

    def sampler(self, seed: int) -> EpochSampler:
        return EpochSampler(self.train, seed)

    def drop_long(self, n_tokens, max_prompt_tokens: int) -> tuple[int, int]:
        """Drops examples whose encoded prompt is longer than max_prompt_tokens (n_tokens(example) -> int).
        -> (dropped train, dropped eval)."""
        dropped = []
        for split in ("train", "eval"):
            kept = [ex for ex in getattr(self, split) if n_tokens(ex) <= max_prompt_tokens]
            dropped.append(len(getattr(self, split)) - len(kept))
            setattr(self, split, kept)
        if not self.train:
            raise ValueError(f"task.max_prompt_tokens: every training prompt is longer than {max_prompt_tokens} tokens")
        return dropped[0], dropped[1]



_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


@TASKS.register("arithmetic")
class ArithmeticTask(Task):
    def __init__(self, digits: list[int] = (1, 2), operations: list[str] = ("+",), train_size: int = 2000,
                 eval_size: int = 200, seed: int = 0,
                 prompt_template: str = "What is {a} {op} {b}? Reply with only the final number.",
                 system_prompt: str | None = None, **_):
        bad = [op for op in operations if op not in _OPS]
        if bad:
            raise ValueError(f"task.operations: unknown {bad}; valid: {list(_OPS)}")
        if not digits or any(d < 1 or d > 9 for d in digits):
            raise ValueError("task.digits: each digit count must be in 1..9")
        self.system_prompt = system_prompt
        rng = random.Random(seed)
        seen, rows, per_class = set(), [], {d: 0 for d in digits}
        capacity = {d: len(set(operations)) * (9 * 10 ** (d - 1)) ** 2 for d in set(digits)}
        want = min(train_size + eval_size, sum(capacity.values()))
        i = 0
        while len(rows) < want:
            d = digits[i % len(digits)]  # round-robin over digit counts; a full class is skipped
            i += 1
            if per_class[d] >= capacity[d]:
                continue
            while True:
                a, b = rng.randint(10 ** (d - 1), 10 ** d - 1), rng.randint(10 ** (d - 1), 10 ** d - 1)
                op = rng.choice(list(operations))
                if (a, op, b) not in seen:
                    break
            seen.add((a, op, b))
            per_class[d] += 1
            rows.append(Example(key=f"{a}{op}{b}", prompt=prompt_template.format(a=a, op=op, b=b),
                                answer=str(_OPS[op](a, b)), columns={"digits": d}))
        rng.shuffle(rows)
        # held-out split stratified by digit count (at most half of a small class), so per-digit
        # accuracy is measured on every class
        per_eval = {d: min(eval_size // len(set(digits)), per_class[d] // 2) for d in set(digits)}
        self.eval, self.train = [], []
        for ex in rows:
            d = ex.columns["digits"]
            (self.eval if per_eval[d] > 0 else self.train).append(ex)
            per_eval[d] -= 1
        self.train = self.train[:train_size]  # a small class's leftovers must not grow the train split


@TASKS.register("dataset")
class DatasetTask(Task):
    """Rows of any `envs.sources` source. The prompt is a string or chat messages (kept as they are); the
    answer may be a dotted path (`reward_model.ground_truth`); every column but the prompt reaches the
    reward functions by name (the answer's own column too, so TRL's `solution=` works)."""

    def __init__(self, path: str | None = None, eval_path: str | None = None, prompt_column: str = "prompt",
                 answer_column: str = "answer", eval_size: int = 200, seed: int = 0,
                 system_prompt: str | None = None, split: str = "train", eval_split: str | None = None, **_):
        if path is None:
            raise ValueError("task.path: the dataset task needs a .jsonl / .parquet file, a datasets folder "
                             "or a hub id")
        self.system_prompt = system_prompt
        rows = self._examples(read_rows(path, split), prompt_column, answer_column, path)
        if eval_path or eval_split:
            src, key = (eval_path, "task.eval_path") if eval_path else (path, "task.eval_split")
            held = read_rows(src, eval_split or split, key)
            self.train, self.eval = rows, self._examples(held, prompt_column, answer_column, src)
        else:
            random.Random(seed).shuffle(rows)
            n_eval = min(eval_size, len(rows) // 5)
            self.eval, self.train = rows[:n_eval], rows[n_eval:]
        if not self.train:
            raise ValueError(f"task.path: {path!r} holds no training rows")

    @staticmethod
    def _examples(rows: list[dict], pcol: str, acol: str, path) -> list[Example]:
        out = []
        for i, r in enumerate(rows):
            if pcol not in r:
                raise ValueError(f"{path}: row {i} has no column {pcol!r} (columns: {sorted(r)})")
            try:
                answer = column(r, acol)
            except KeyError as e:
                raise ValueError(f"task.answer_column: {path}: row {i}: {e.args[0]}") from None
            prompt = as_prompt(r[pcol], f"task.prompt_column: {path}: row {i}")
            extra = {k: v for k, v in r.items() if k != pcol}
            out.append(Example(key=str(r.get("id", i)), prompt=prompt, answer=str(answer), columns=extra))
        return out


@TASKS.register("code")
def _code_task(**kwargs) -> Task:
    """Code RL (envs/coding/code_task.py), imported when a recipe asks for it."""
    return importlib.import_module("envs.coding.code_task").CodeTask(**kwargs)


def build_task(name: str, **kwargs) -> Task:
    return TASKS.get(name)(**kwargs)
