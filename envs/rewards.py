"""Reward plug-ins.

The contract is TRL's, exactly: called with keyword arguments only,
`fn(prompts=..., completions=..., completion_ids=..., **columns) -> list[float | None]`, one value
per sample (None = not applicable). For a conversational dataset (prompts are chat messages) each
completion is `[{"role": "assistant", "content": text}]` and each prompt its message list; otherwise
both are strings. `columns` hold `answer` (from `task.answer_column`) and every dataset column by
its own name. So `trl.rewards` functions and functions written as TRL's docs teach run unchanged.
Recipes reference a built-in by name, `package.module:function`, or `path/to/file.py:function`.
verl's `compute_score(data_source, solution_str, ground_truth, extra_info)` runs through
`verl_adapter` (recipe `style: verl`), with `data_source` and `extra_info` from the dataset's columns.

Example: load_reward("exact_match")(prompts=["What is 2+2?"], completions=["4"], answer=["4"]) -> [1.0]
"""
from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Callable

from algorithms.registry import Registry
from allocation.curriculum import triangular_length_reward
from envs.sources import completion_text as _text

REWARDS: Registry = Registry("reward function")
RewardFn = Callable[..., list]
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


class RewardLoadError(ValueError):
    pass


def extract_number(text: str) -> str | None:
    """The last number in `text`, without thousands separators ("= 1,234." -> "1234")."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    num = found[-1].replace(",", "")
    return num[:-2] if num.endswith(".0") else num


def _same_number(pred: str | None, answer: str) -> bool:
    if pred is None:
        return False
    try:
        return float(pred) == float(answer)
    except ValueError:
        return pred.strip() == answer.strip()


@REWARDS.register("exact_match")
def exact_match(prompts: list[str], completions: list[str], answer: list[str], **_) -> list[float]:
    """1.0 when the last number in the completion equals the reference answer, else 0.0."""
    return [1.0 if _same_number(extract_number(_text(c)), str(a)) else 0.0 for c, a in zip(completions, answer)]


@REWARDS.register("format_number_only")
def format_number_only(prompts: list[str], completions: list[str], **_) -> list[float]:
    """1.0 when the completion is just a number (what the arithmetic prompt asks for)."""
    return [1.0 if re.fullmatch(r"\s*-?[\d,]+(\.\d+)?\.?\s*", _text(c)) else 0.0 for c in completions]


@REWARDS.register("answer_tag")
def answer_tag(prompts: list[str], completions: list[str], answer: list[str], **_) -> list[float]:
    """1.0 when <answer>X</answer> is present and X equals the reference; 0.0 otherwise."""
    out = []
    for c, a in zip(completions, answer):
        m = re.search(r"<answer>(.*?)</answer>", _text(c), re.S)
        out.append(1.0 if m and _same_number(extract_number(m.group(1)), str(a)) else 0.0)
    return out


@REWARDS.register("answer_tag_format")
def answer_tag_format(prompts: list[str], completions: list[str], **_) -> list[float]:
    """1.0 when the completion contains one <answer>...</answer> block."""
    return [1.0 if len(re.findall(r"<answer>.*?</answer>", _text(c), re.S)) == 1 else 0.0 for c in completions]


@REWARDS.register("text_length")
def text_length(prompts: list[str], completions: list[str], **_) -> list[float]:
    """min(1, characters / 64): longer text scores higher. A signal even a random tiny model can learn
    (its EOS probability moves), so quick examples (the tiny sweep) show training doing something."""
    return [min(1.0, len(_text(c)) / 64) for c in completions]


@REWARDS.register("length_triangular")
def length_triangular(prompts: list[str], completions: list[str], completion_tokens: list[int],
                      length_budget: list[int] | None = None, **_) -> list[float | None]:
    """Train Long, Think Short's triangular length reward: peaks at the prompt's budget B (tokens),
    0 at 0 and at 2B. None (not applicable) when the step has no length budget."""
    if length_budget is None:
        return [None] * len(completions)
    return triangular_length_reward(completion_tokens, length_budget).tolist()


@REWARDS.register("math_verify")
def math_verify_reward(prompts: list[str], completions: list[str], answer: list[str], **_) -> list[float]:
    """Symbolic equivalence via the math-verify package (pip install math-verify)."""
    try:
        from math_verify import parse, verify
    except ImportError:
        raise RewardLoadError("reward 'math_verify' needs the math-verify package: "
                              "pip install 'rl-toolkit[math]'") from None
    return [1.0 if verify(parse(str(a)), parse(_text(c))) else 0.0 for c, a in zip(completions, answer)]


def verl_adapter(compute_score: Callable, data_source: str = "rl") -> RewardFn:
    """Wraps verl's `compute_score(data_source, solution_str, ground_truth, extra_info)` (a float or a
    dict with "score") into the TRL contract. `data_source` and `extra_info` come from the dataset's
    columns of those names when it has them (verl's parquet does); otherwise extra_info is the row's
    other columns. The numeric keys of a dict result besides "score" (e.g. "acc", "pred_len") are kept
    in `fn.extras` ({key: [values]}, over every call), which the run logs as `reward_extra/<fn>/<key>`."""
    def fn(prompts=None, completions=(), answer=(), completion_ids=None, **columns):
        out = []
        for i, (c, a) in enumerate(zip(completions, answer)):
            row = {k: v[i] for k, v in columns.items()}
            src = row.pop("data_source", None) or data_source
            extra = row["extra_info"] if "extra_info" in row else row
            s = compute_score(data_source=src, solution_str=_text(c), ground_truth=a, extra_info=extra)
            if isinstance(s, dict):
                for k, v in s.items():
                    if k != "score" and isinstance(v, (int, float)) and not isinstance(v, bool):
                        fn.extras.setdefault(k, []).append(float(v))
            out.append(s.get("score") if isinstance(s, dict) else s)
        return out
    fn.extras = {}
    return fn


def load_reward(spec: str, style: str = "trl") -> RewardFn:
    """Resolves a recipe reference to a callable with the TRL signature."""
    if ":" not in spec:
        fn = REWARDS.get(spec) if spec in REWARDS else None
        if fn is None:
            raise RewardLoadError(f"reward {spec!r}: not a built-in ({', '.join(REWARDS.names())}) "
                                  "and not of the form package.module:function or file.py:function")
    else:
        target, name = spec.rsplit(":", 1)
        module = _load_file(target) if target.endswith(".py") else _import(target, spec)
        if not hasattr(module, name):
            raise RewardLoadError(f"reward {spec!r}: {target} has no function {name!r}")
        fn = getattr(module, name)
    if not callable(fn):
        raise RewardLoadError(f"reward {spec!r} is not callable")
    return verl_adapter(fn) if style == "verl" else fn


def _import(module: str, spec: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise RewardLoadError(f"reward {spec!r}: module {e.name!r} not found") from None


def _load_file(path: str):
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise RewardLoadError(f"reward file {path!r} not found")
    mod_name = f"_reward_{abs(hash(str(p)))}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, p)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    return module
