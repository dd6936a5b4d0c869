import json

import pytest

from envs.rewards import RewardLoadError, exact_match, extract_number, format_number_only, load_reward
from envs.tasks import ArithmeticTask, DatasetTask, EpochSampler


def test_arithmetic_splits_disjoint_seeded_and_mixed():
    t1 = ArithmeticTask(digits=[1, 2, 3], train_size=300, eval_size=60, seed=3)
    t2 = ArithmeticTask(digits=[1, 2, 3], train_size=300, eval_size=60, seed=3)
    assert [e.key for e in t1.train] == [e.key for e in t2.train]
    assert not {e.key for e in t1.train} & {e.key for e in t1.eval}
    counts = {d: sum(e.columns["digits"] == d for e in t1.train + t1.eval) for d in (1, 2, 3)}
    assert counts == {1: 81, 2: 140, 3: 139}  # 1-digit sums run out at 9 x 9; the rest share evenly
    eval_counts = {d: sum(e.columns["digits"] == d for e in t1.eval) for d in (1, 2, 3)}
    assert eval_counts == {1: 20, 2: 20, 3: 20}  # stratified held-out split
    assert len(t1.train) == 300
    assert len(ArithmeticTask(digits=[1, 2, 3], train_size=64, eval_size=150).train) == 64
    ex = t1.train[0]
    a, b = ex.key.split("+")
    assert int(ex.answer) == int(a) + int(b) and f"{a} + {b}" in ex.prompt


def test_one_digit_capacity_is_respected():
    t = ArithmeticTask(digits=[1], train_size=1000, eval_size=10, seed=0)
    assert len(t.train) + len(t.eval) == 81  # 9 x 9 distinct sums
    assert len(t.eval) == 10


def test_sampler_resumes_at_the_same_position():
    t = ArithmeticTask(digits=[1, 2], train_size=50, eval_size=10, seed=0)
    s = EpochSampler(t.train, seed=1)
    first = [e.key for e in s.next(70)]  # crosses an epoch boundary
    s2 = EpochSampler(t.train, seed=1)
    s2.next(30)
    s3 = EpochSampler(t.train, seed=1)
    s3.load_state_dict(s2.state_dict())
    assert [e.key for e in s3.next(40)] == first[30:]


def test_dataset_task_jsonl_and_parquet(tmp_path):
    rows = [{"prompt": f"q{i}", "answer": str(i), "level": i % 3} for i in range(20)]
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows))
    t = DatasetTask(path=str(p), eval_size=5)
    assert len(t.eval) == 4 and len(t.train) == 16 and "level" in t.train[0].columns
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    assert len(DatasetTask(path=str(tmp_path / "d.parquet")).train) == 16
    with pytest.raises(ValueError, match="no column 'solution'"):
        DatasetTask(path=str(p), answer_column="solution")


def test_extract_number_and_exact_match():
    assert extract_number("3 + 4 = 7") == "7"
    assert extract_number("The answer is 1,234.") == "1234"
    assert extract_number("-12") == "-12" and extract_number("no digits") is None
    assert exact_match(["p"] * 4, ["7", "= 7.0", "8", "seven"], answer=["7"] * 4) == [1.0, 1.0, 0.0, 0.0]
    assert format_number_only(["p"] * 3, ["42", " 42.", "it is 42"]) == [1.0, 1.0, 0.0]


def test_load_reward_file_module_and_verl(tmp_path, monkeypatch):
    f = tmp_path / "my_reward.py"
    f.write_text("def length_bonus(prompts, completions, **kw):\n    return [len(c) / 10 for c in completions]\n"
                 "def compute_score(data_source, solution_str, ground_truth, extra_info):\n"
                 "    return {'score': float(solution_str.strip() == ground_truth)}\n")
    fn = load_reward(f"{f}:length_bonus")
    assert fn(["p"], ["abcde"]) == [0.5]
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_reward("my_reward:length_bonus")(["p"], ["ab"]) == [0.2]
    verl = load_reward("my_reward:compute_score", style="verl")
    assert verl(["p", "p"], ["4", "5"], answer=["4", "4"]) == [1.0, 0.0]


def test_load_reward_errors_name_the_problem(tmp_path):
    with pytest.raises(RewardLoadError, match="module 'nope' not found"):
        load_reward("nope.sub:f")
    with pytest.raises(RewardLoadError, match="not a built-in"):
        load_reward("exact_mtch")
    f = tmp_path / "r.py"
    f.write_text("x = 1\n")
    with pytest.raises(RewardLoadError, match="has no function 'g'"):
        load_reward(f"{f}:g")
