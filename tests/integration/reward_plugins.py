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
