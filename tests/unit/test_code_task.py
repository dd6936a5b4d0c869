"""The `code` task: HumanEval's check() split into independent cases, MBPP-style rows, and the
program a completion becomes (pure; the sandboxed runs are in tests/integration/test_code_reward.py)."""
from __future__ import annotations

import pytest

from envs.coding.code_reward import build_program, extract_code
from envs.coding.code_task import code_example, split_check
from rl.drivers.rewards import chunk_indices

CHECK = '''
METADATA = {"author": "x"}


def check(candidate):
    import math
    assert candidate(1) == 2
    base = 10
    for k in range(3):
        assert candidate(k + base) == k + base + 1
    assert math.isclose(candidate(0.5), 1.5)
'''


def test_split_check_keeps_setup_before_each_case():
    cases = split_check(CHECK, "inc")
    assert len(cases) == 3
    assert cases[0].splitlines() == ["METADATA = {'author': 'x'}", "candidate = inc", "import math",
                                     "assert candidate(1) == 2"]
    assert "base = 10" in cases[1] and cases[1].rstrip().endswith("assert candidate(k + base) == k + base + 1")
    assert "base = 10" in cases[2] and "import math" in cases[2]
    with pytest.raises(ValueError, match="def check"):
        split_check("assert True\n", "inc")


def test_cases_run_against_a_namespace():
    ns: dict = {}
    exec("def inc(x):\n    return x + 1\n", ns)
    for case in split_check(CHECK, "inc"):
        exec(case, dict(ns))        # every case passes for the right function
    exec("def inc(x):\n    return x\n", ns)
    with pytest.raises(AssertionError):
        exec(split_check(CHECK, "inc")[0], dict(ns))


def test_humaneval_and_mbpp_rows():
    he = code_example({"task_id": "HumanEval/0", "prompt": "def inc(x):\n    \"\"\"x + 1\"\"\"\n",
                       "entry_point": "inc", "test": CHECK}, 0)
    assert he.key == "HumanEval/0" and "```python\ndef inc(x):" in he.prompt and len(he.columns["tests"]) == 3
    mbpp = code_example({"task_id": 11, "text": "Write a function to add one.",
                         "test_list": ["assert add_one(1) == 2", "assert add_one(-1) == 0"]}, 3)
    assert mbpp.columns == {"code_prompt": "", "entry_point": "add_one",
                            "tests": ["assert add_one(1) == 2", "assert add_one(-1) == 0"]}
    assert "Write a function to add one." in mbpp.prompt and "assert add_one(1) == 2" in mbpp.prompt
    with pytest.raises(ValueError, match="no `test_list` or `test`"):
        code_example({"prompt": "def f():\n"}, 5)


def test_program_from_a_completion():
    prompt = "from typing import List\n\n\ndef f(xs: List[int]) -> int:\n    \"\"\"Sum.\"\"\"\n"
    full = "Here:\n```python\ndef f(xs):\n    return sum(xs)\n```\nDone."
    assert extract_code(full) == "def f(xs):\n    return sum(xs)\n"
    assert build_program(prompt, full, "f") == prompt + "\ndef f(xs):\n    return sum(xs)\n\n"
    assert build_program(prompt, "    return sum(xs)\n", "f") == prompt + "    return sum(xs)\n\n"
    assert build_program("", "```python\ndef g():\n    return 1", "g") == "def g():\n    return 1\n"
    bare = build_program("def f(xs):\n", "```python\ndef f(xs):\n    return 0\n```", "f")
    compile(bare, "bare", "exec")   # a bare signature gets a body before the completion's definition


def test_chunk_indices():
    assert chunk_indices(5, 2) == [[0, 1, 2], [3, 4]]
    assert chunk_indices(1, 4) == [[0]]
    assert chunk_indices(6, 3) == [[0, 1], [2, 3], [4, 5]]
    assert chunk_indices(0, 2) == [[]]
