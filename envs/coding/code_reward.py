"""Unit-test rewards for the `code` task, each sample run in its own sandbox (envs/coding/sandbox.py).

    code_tests     = passed cases / cases                  (partial credit, in [0, 1])
    code_all_pass  = 1 if every case passed else 0        (the pass@k criterion)

Program: the code of the completion's first ```python block (the whole text when it has none). If
it defines the entry point, it runs after the task's code prompt (so the prompt's imports and helper
functions stay defined and the completion's definition wins); otherwise it is taken as the body that
continues the prompt. The harness executes the program once, then each test case in a fresh copy of
the program's namespace, printing one line per case; a case that raises (or the program itself
failing) counts as failed. Each sample has its own deadline (`timeout_s`, default 5 s, whole tree
killed); cases printed before a timeout keep their credit. Recipes call them as
`envs.coding.code_reward:code_tests` / `:code_all_pass`, with `rewards.N.workers` Ray tasks in
parallel.

Example: code_tests(prompts=[p], completions=["```python\\ndef f(x):\\n    return x + 1\\n```"],
                    code_prompt=["def f(x):\\n"], entry_point=["f"], tests=[["assert f(1) == 2"]]) -> [1.0]
"""
from __future__ import annotations

import json
import re

from envs.sources import completion_text

FENCE = re.compile(r"```(?:python|py|Python)?[ \t]*\n(.*?)(?:```|\Z)", re.S)
SAMPLE_TIMEOUT_S = 5.0
HARNESS = """import json, sys
with open("cases.json") as f:
    cases = json.load(f)
ns = {"__name__": "solution"}
try:
    with open("solution.py") as f:
        exec(compile(f.read(), "solution.py", "exec"), ns)
except BaseException as e:
    print("PROGRAM-FAILED", type(e).__name__, flush=True)
    sys.exit(0)
for i, case in enumerate(cases):
    try:
        exec(compile(case, f"case_{i}", "exec"), dict(ns))
        print("CASE-PASS", i, flush=True)
    except BaseException as e:
        print("CASE-FAIL", i, type(e).__name__, flush=True)
"""


def extract_code(completion: str) -> str:
    """The first fenced code block (an unclosed one runs to the end), else the whole text."""
    m = FENCE.search(completion)
    return m.group(1) if m else completion


def build_program(code_prompt: str, completion: str, entry_point: str) -> str:
    """The source the tests run against. Example: build_program("def f(x):\\n", "    return x\\n", "f")
    -> "def f(x):\\n    return x\\n" (a body continues the prompt)."""
    code = extract_code(completion)
    if not code_prompt.strip():
        return code + "\n"
    if re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", code, re.M):
        return f"{code_prompt}\n    pass\n\n{code}\n" if _needs_body(code_prompt) else f"{code_prompt}\n{code}\n"
    return code_prompt + code + "\n"


def _needs_body(code_prompt: str) -> bool:
    """True when the prompt ends in a `def` line with no body (MBPP-style bare signature)."""
    lines = [ln for ln in code_prompt.rstrip().splitlines() if ln.strip()]
    return bool(lines) and lines[-1].rstrip().endswith(":")


def run_cases(program: str, cases: list[str], timeout_s: float = SAMPLE_TIMEOUT_S,
              backend: str | None = None) -> tuple[int, int, bool]:
    """(cases passed, cases, timed out) for one program, in a fresh sandbox removed afterwards."""
    import warnings

    from envs.coding.sandbox import LocalSandbox, SandboxWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SandboxWarning)  # the sandbox's own warning is printed once at start-up
        sb = LocalSandbox.create({"solution.py": program, "cases.json": json.dumps(cases),
                                  "harness.py": HARNESS}, backend=backend, timeout_s=timeout_s,
                                 cpu_s=max(1, int(timeout_s) + 1), memory_bytes=1 << 30, nproc=64)
    try:
        res = sb.run("python harness.py", timeout_s=timeout_s)
    finally:
        sb.close()
    passed = len(re.findall(r"^CASE-PASS \d+$", res.output, re.M))
    return passed, len(cases), res.timed_out


def _score(completions, code_prompt, entry_point, tests, all_pass: bool, timeout_s: float) -> list[float]:
    out = []
    for completion, prompt, entry, cases in zip(completions, code_prompt, entry_point, tests):
        passed, total, _ = run_cases(build_program(prompt, completion_text(completion), entry), list(cases),
                                     timeout_s)
        out.append(float(passed == total) if all_pass else passed / max(1, total))
    return out


def code_tests(prompts: list, completions: list, code_prompt: list[str], entry_point: list[str],
               tests: list[list[str]], timeout_s: float = SAMPLE_TIMEOUT_S, **_) -> list[float]:
    """Fraction of the task's test cases the completion passes."""
    return _score(completions, code_prompt, entry_point, tests, False, timeout_s)


def code_all_pass(prompts: list, completions: list, code_prompt: list[str], entry_point: list[str],
                  tests: list[list[str]], timeout_s: float = SAMPLE_TIMEOUT_S, **_) -> list[float]:
    """1.0 when the completion passes every test case, else 0.0."""
    return _score(completions, code_prompt, entry_point, tests, True, timeout_s)
