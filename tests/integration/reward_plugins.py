"""Reward functions used by the integration tests (imported by Ray workers from a file path)."""
import time


def text_length(prompts, completions, **_):
    """Gives a random tiny model a learnable, non-constant signal: longer text scores higher."""
    return [min(1.0, len(c) / 60) for c in completions]


def raises_on_second(prompts, completions, **_):
    if len(completions) > 1:
        raise RuntimeError("this reward refuses batches")
    return [0.5]


def hangs_on_second(prompts, completions, answer, **_):
    if any(a == "hang" for a in answer):
        time.sleep(600)
    return [1.0 for _ in completions]


def nan_and_none(prompts, completions, **_):
    return [float("nan"), None, 1.0][: len(completions)]


def prompt_dependent_coin(prompts, completions, answer, **_):
    """Succeeds with probability about 1/k, k = 2 + answer mod 5: prompts differ in difficulty."""
    return [1.0 if sum(map(ord, c)) % (2 + int(a) % 5) == 0 else 0.0 for c, a in zip(completions, answer)]
