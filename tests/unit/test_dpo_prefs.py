"""Preference data: JSONL loading, pairs from GRPO rollout logs (best vs worst), the held-out split,
chat-templated encoding, and the step schedule."""
import json

import pytest

from rl.config import ConfigError, load_config
from rl.data.prompts import chat_prompt_ids
from rl.data.prefs import (PreferencePair, best_vs_worst, encode_pairs, load_pairs, main, pairs_from_rollouts,
                           split_pairs, step_pairs, total_steps, write_pairs)
from rl.workers.models import load_tokenizer


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("rewards, texts, want", [
    ([0.0, 1.0, 0.5], ["a", "b", "c"], (1, 0)),
    ([1.0, 1.0, 0.0, 0.0], ["a", "b", "c", "d"], (0, 2)),  # first index wins ties
    ([0.3, 0.3], ["a", "b"], None),  # all equal: nothing to prefer
    ([1.0, 0.0], ["same", "same"], None),
    ([1.0], ["a"], None),
])
def test_best_vs_worst(rewards, texts, want):
    assert best_vs_worst(rewards, texts) == want


def test_pairs_from_rollouts_skip_equal_rewards_and_duplicates(tmp_path):
    rows = [{"step": 0, "key": "1+2", "prompt": "What is 1 + 2?", "rewards": [0, 1, 0], "completions": ["4", "3", "5"]},
            {"step": 0, "key": "2+2", "prompt": "What is 2 + 2?", "rewards": [0, 0, 0], "completions": ["1", "2", "3"]},
            {"step": 1, "key": "1+2", "prompt": "What is 1 + 2?", "rewards": [1, 0], "completions": ["3", "4"]},
            {"step": 1, "key": "3+3", "prompt": "What is 3 + 3?", "rewards": [0.5, 1.0], "completions": ["6.", "6"]}]
    pairs = pairs_from_rollouts(write_jsonl(tmp_path / "r.jsonl", rows))
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [
        ("What is 1 + 2?", "3", "4"), ("What is 3 + 3?", "6", "6.")]
    assert pairs[1].meta == {"key": "3+3", "step": 1, "reward_chosen": 1.0, "reward_rejected": 0.5}


def test_old_rollout_logs_without_completions_are_a_clear_error(tmp_path):
    path = write_jsonl(tmp_path / "old.jsonl", [{"step": 0, "key": "k", "prompt": "p", "rewards": [0, 1]}])
    with pytest.raises(ConfigError, match=r"dpo.from_rollouts: .*old.jsonl:1: no 'completions'.*rerun"):
        pairs_from_rollouts(path)
    flat = write_jsonl(tmp_path / "flat.jsonl", [{"step": 0, "key": "k", "prompt": "p", "rewards": [1, 1],
                                                  "completions": ["a", "b"]}])
    with pytest.raises(ConfigError, match="no prompt with unequal rewards"):
        pairs_from_rollouts(flat)


def test_cli_builds_pairs_that_load_back(tmp_path, capsys):
    src = write_jsonl(tmp_path / "r.jsonl", [{"step": 0, "key": "k", "prompt": "p", "rewards": [0, 1],
                                              "completions": ["bad", "good"]}])
    assert main([str(src), "--out", str(tmp_path / "pairs.jsonl")]) == 0
    assert "wrote 1 pairs" in capsys.readouterr().out
    (pair,) = load_pairs(tmp_path / "pairs.jsonl")
    assert (pair.prompt, pair.chosen, pair.rejected, pair.meta["key"]) == ("p", "good", "bad", "k")
    assert main([str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "x.jsonl")]) == 2


@pytest.mark.parametrize("line, needle", [
    ('{"prompt": "p", "chosen": "a"}', "p.jsonl:2: missing 'rejected'"),
    ('{"prompt": 3, "chosen": "a", "rejected": "b"}', "p.jsonl:2: 'prompt' must be a string or a list"),
    ('{"prompt": "p", "chosen": ["a"], "rejected": "b"}', "'chosen' and 'rejected' must be strings"),
    ("not json", "p.jsonl:2: not JSON"),
])
def test_bad_pair_files_name_file_and_line(tmp_path, line, needle):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n' + line + "\n")
    with pytest.raises(ConfigError, match="dpo.pairs_path: ") as e:
        load_pairs(path)
    assert needle in str(e.value)


def test_split_is_by_prompt_seeded_and_keeps_one_held_out():
    pairs = [PreferencePair(f"q{i % 5}", f"c{i}", f"r{i}") for i in range(20)]
    train, held = split_pairs(pairs, 0.2, seed=0)
    assert len(train) + len(held) == 20 and len(held) == 4
    assert not {p.prompt for p in train} & {p.prompt for p in held}
    assert split_pairs(pairs, 0.2, seed=0) == (train, held)
    assert len(split_pairs(pairs, 0.01, seed=0)[1]) == 4  # at least one prompt held out
    assert split_pairs(pairs, 0.0, seed=0) == (pairs, [])


def test_encoding_uses_the_chat_template_and_ends_replies_with_eos():
    tok = load_tokenizer("tiny-llama")
    msgs = [{"role": "user", "content": "What is 2 + 3?"}]
    pairs = [PreferencePair("What is 2 + 3?", "5", "The answer is 6."), PreferencePair(msgs, "5", "7")]
    enc = encode_pairs(tok, pairs, max_length_tokens=256)
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    assert enc.prompt_ids == [ids, ids] == [chat_prompt_ids(tok, "What is 2 + 3?")] * 2
    assert enc.chosen_ids[0] == tok("5", add_special_tokens=False).input_ids + [tok.eos_token_id]
    assert tok.decode(enc.rejected_ids[0]) == "The answer is 6.<|im_end|>"
    cut = encode_pairs(tok, pairs, max_length_tokens=len(ids) + 2)
    assert [len(c) for c in cut.rejected_ids] == [2, 2] and cut.dropped == 0
    assert len(encode_pairs(tok, pairs, max_length_tokens=len(ids))) == 0
    with_sys = chat_prompt_ids(tok, "hi", system_prompt="Be brief.")
    assert "Be brief." in tok.decode(with_sys)


def test_step_schedule_visits_every_pair_once_per_epoch():
    for step_size in (3, 4, 10):
        per_epoch = -(-10 // step_size)
        for epoch in range(2):
            seen = [i for s in range(epoch * per_epoch, (epoch + 1) * per_epoch) for i in step_pairs(10, step_size, 1, s)]
            assert sorted(seen) == list(range(10))
    assert step_pairs(10, 4, 1, 0) != step_pairs(10, 4, 1, 3)  # a fresh permutation per epoch


def test_dpo_config_checks(tmp_path):
    cfg = load_config(None, ["algorithm.name=dpo", "dpo.pairs_path=p.jsonl", "dpo.epochs=3", "dpo.pairs_per_step=4"])
    assert total_steps(10, cfg.dpo.pairs_per_step, cfg.dpo.epochs, cfg.dpo.max_steps) == 9
    assert total_steps(10, 4, 3, max_steps=5) == 5
    for override, needle in [(["dpo.pairs_path=null"], "give exactly one source"),
                             (["dpo.from_rollouts=r.jsonl"], "give exactly one source"),
                             (["dpo.beta=0"], "dpo.beta: must be > 0"),
                             (["dpo.eval_fraction=1.0"], "dpo.eval_fraction: must be in [0, 1)")]:
        with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace(")", r"\)")):
            load_config(None, ["algorithm.name=dpo", "dpo.pairs_path=p.jsonl", *override])


def test_written_pairs_round_trip(tmp_path):
    pairs = [PreferencePair("q", "a", "b", {"key": "k"}), PreferencePair([{"role": "user", "content": "x"}], "c", "d")]
    assert load_pairs(write_pairs(pairs, tmp_path / "o.jsonl")) == pairs
