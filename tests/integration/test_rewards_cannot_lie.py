"""A reward that returns the wrong number of scores, or non-numbers, scores those samples on_error and
counts them (before: the per-sample retry took the first of three scores and counted 0 errors)."""
from pathlib import Path

from rl.config import RewardConfig
from rl.drivers.rewards import reward_names, score

PLUGINS = Path(__file__).parent.parent / "fixtures" / "reward_plugins.py"


def test_wrong_length_and_non_numbers_are_errors(ray_local):
    cfgs = [RewardConfig(fn=f"{PLUGINS}:three_scores", on_error=-1.0, max_error_fraction=1.0),
            RewardConfig(fn=f"{PLUGINS}:strings_and_bools", on_error=-1.0, max_error_fraction=1.0)]
    out = score(cfgs, ["p"] * 4, ["a", "b", "c", "d"], {})
    assert out.per_fn["three_scores"] == [-1.0] * 4 and out.errors["three_scores"] == 4
    assert out.per_fn["strings_and_bools"] == [-1.0] * 4 and out.errors["strings_and_bools"] == 4


def test_metric_names_are_short_and_unique():
    cfgs = [RewardConfig(fn=f"{PLUGINS}:text_length"), RewardConfig(fn="exact_match"),
            RewardConfig(fn="envs.rewards:exact_match"), RewardConfig(fn=f"{PLUGINS}:text_length")]
    assert reward_names(cfgs) == ["text_length", "exact_match", "exact_match#2", "text_length#2"]
