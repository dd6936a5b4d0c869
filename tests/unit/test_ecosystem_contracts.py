"""TRL's and verl's data and reward contracts: conversational prompts, dotted answer columns, keyword
calls, trl.rewards functions unchanged, verl compute_score with data_source / extra_info."""
import json

import pytest

from envs.rewards import load_reward
from envs.sources import as_prompt, column, completion_text, read_rows
from envs.tasks import DatasetTask
from rl.data.prefs import load_pairs
from rl.drivers.rewards import example_columns, score_batch

CHAT = [{"role": "system", "content": "Answer with a number."}, {"role": "user", "content": "What is 2 + 2?"}]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_chat_prompts_are_kept_as_messages_and_columns_reach_rewards(tmp_path):
    rows = [{"prompt": CHAT, "solution": str(i), "level": i} for i in range(10)]
    task = DatasetTask(path=str(_jsonl(tmp_path / "chat.jsonl", rows)), answer_column="solution", eval_size=2)
    ex = task.train[0]
    assert ex.prompt == CHAT  # not the repr of a list inside one user message
    cols = example_columns(task.train, [0, 1])
    assert cols["solution"] == cols["answer"] and set(cols) == {"answer", "solution", "level"}


def test_verl_parquet_dotted_answer_and_datasets_folder(tmp_path):
    import datasets
    rows = [{"prompt": [{"role": "user", "content": f"{i}+1?"}], "data_source": "toy",
             "reward_model": {"style": "rule", "ground_truth": str(i + 1)}, "extra_info": {"index": i}}
            for i in range(12)]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "v.parquet"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "folder"))
    for src in (tmp_path / "v.parquet", tmp_path / "folder"):
        task = DatasetTask(path=str(src), answer_column="reward_model.ground_truth", eval_size=2)
        assert sorted(int(e.answer) for e in task.train + task.eval) == list(range(1, 13))
    with pytest.raises(ValueError, match="task.answer_column.*no 'truth' under reward_model"):
        DatasetTask(path=str(tmp_path / "v.parquet"), answer_column="reward_model.truth")
    with pytest.raises(ValueError, match="splits \\['train'\\], not 'test'"):
        read_rows(tmp_path / "folder", split="test")


def test_sources_explain_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="task.path: 'nope.jsonl' does not exist"):
        read_rows("nope.jsonl")
    with pytest.raises(FileNotFoundError, match="not a local file or folder, and datasets could not load"):
        read_rows("no-such-org/no-such-dataset-xyz")
    with pytest.raises(ValueError, match="a prompt must be a string or a non-empty list"):
        as_prompt([{"role": "robot", "content": "hi"}], "row 3")
    assert column({"a.b": 1, "a": {"b": 2}}, "a.b") == 1  # a literal key wins over the path
    assert completion_text([{"role": "assistant", "content": "4"}]) == "4"


def trl_docs_brevity(completions, **kwargs):
    """Written as TRL's docs teach: keyword arguments, conversational completions."""
    return [-len(c[0]["content"]) / 10 for c in completions]


def test_rewards_are_called_with_keywords_as_trl_does():
    comps = [[{"role": "assistant", "content": "4"}], [{"role": "assistant", "content": "four, I think"}]]
    cols = {"answer": ["4", "4"], "solution": ["4", "4"], "completion_ids": [[1], [2, 3]]}
    values, errors, first = score_batch(trl_docs_brevity, "brevity", [CHAT, CHAT], comps, cols, 5.0, 0.0)
    assert (errors, first) == (0, None) and values == [-0.1, pytest.approx(-1.3)]
    values, errors, _ = score_batch(load_reward("exact_match"), "exact_match", [CHAT, CHAT], comps, cols, 5.0, 0.0)
    assert (values, errors) == ([1.0, 0.0], 0)


def test_trl_rewards_run_unchanged():
    from trl.rewards import think_format_reward
    comps = [[{"role": "assistant", "content": "<think>\nsum\n</think>\n4"}], [{"role": "assistant", "content": "4"}]]
    values, errors, _ = score_batch(think_format_reward, "think_format_reward", [CHAT, CHAT], comps,
                                    {"answer": ["4", "4"]}, 5.0, -1.0)
    assert (values, errors) == ([1.0, 0.0], 0)


def test_first_failure_carries_its_traceback_and_sample():
    def broken(prompts, completions, **_):
        raise ZeroDivisionError("division by zero in my reward")
    values, errors, first = score_batch(broken, "broken", ["p1", "p2"], ["a", "b"], {"answer": ["1", "2"]}, 5.0, -1.0)
    assert values == [-1.0, -1.0] and errors == 2
    assert first["error"].startswith("ZeroDivisionError") and "in broken" in first["traceback"]
    assert (first["prompt"], first["completion"]) == ("p1", "a")


def test_verl_compute_score_gets_data_source_and_extra_info():
    seen = []

    def compute_score(data_source, solution_str, ground_truth, extra_info=None):
        seen.append((data_source, extra_info))
        return {"score": float(solution_str.strip() == ground_truth), "acc": 1}
    fn = load_reward.__globals__["verl_adapter"](compute_score)
    out = fn(prompts=[CHAT, CHAT], completions=[[{"role": "assistant", "content": "4"}], "5"], answer=["4", "4"],
             data_source=["gsm8k", "gsm8k"], extra_info=[{"index": 0}, {"index": 1}])
    assert out == [1.0, 0.0] and seen == [("gsm8k", {"index": 0}), ("gsm8k", {"index": 1})]


def test_dpo_pairs_accept_trl_conversational_chosen_and_rejected(tmp_path):
    user = [{"role": "user", "content": "2+2?"}]
    rows = [{"prompt": user, "chosen": [{"role": "assistant", "content": "4"}],
             "rejected": [{"role": "assistant", "content": "5"}]},
            {"chosen": user + [{"role": "assistant", "content": "4"}], "prompt": user,
             "rejected": user + [{"role": "assistant", "content": "22"}]}]
    pairs = load_pairs(_jsonl(tmp_path / "p.jsonl", rows))
    assert [(p.chosen, p.rejected) for p in pairs] == [("4", "5"), ("4", "22")]


def test_verl_dict_results_keep_their_other_numeric_keys():
    from envs.rewards import verl_adapter
    fn = verl_adapter(lambda **kw: {"score": 1.0, "acc": 0.5, "pred": "x", "ok": True})
    assert fn(completions=["a", "b"], answer=["1", "2"]) == [1.0, 1.0]
    assert fn.extras == {"acc": [0.5, 0.5]}  # strings and bools are not metrics
