"""Offline SWE-style tasks: small pure-Python repos with one injected bug each.

A bug is one AST mutation of a library module (flip a comparison, swap + and -, shift an integer
constant by one, swap and/or, negate a boolean constant). The mutant is kept only when it breaks some
of the module's tests and leaves others passing (so the row has FAIL_TO_PASS and PASS_TO_PASS).
The base repo holds the buggy module and the other modules' tests; the test patch adds the hidden
test file of the mutated module; the gold patch reverts the mutation.

Example:
    tasks = generate_tasks(4, seed=0)   # -> 4 CodingTask rows, source="generator"
"""
from __future__ import annotations

import ast
import random

from envs.coding.generator_templates import REPOS
from envs.coding.grading import parse_pytest_log
from envs.coding.tasks import CodingTask, unified_diff

_MUTATE_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
               ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}
_MUTATE_BIN = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Add, ast.FloorDiv: ast.Mod,
               ast.Mod: ast.FloorDiv}


def _canonical(src: str) -> str:
    return ast.unparse(ast.parse(src)) + "\n"


def mutation_sites(src: str) -> list[int]:
    """Indices (in ast.walk order) of nodes `mutate` can change."""
    sites = []
    for i, node in enumerate(ast.walk(ast.parse(src))):
        if isinstance(node, ast.Compare) and type(node.ops[0]) in _MUTATE_CMP:
            sites.append(i)
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _MUTATE_BIN:
            sites.append(i)
        elif isinstance(node, ast.BoolOp):
            sites.append(i)
        elif isinstance(node, ast.Constant) and type(node.value) in (int, bool):
            sites.append(i)
    return sites


def mutate(src: str, site: int) -> str:
    """The canonical source with the node at `site` mutated (see module docstring)."""
    tree = ast.parse(src)
    node = list(ast.walk(tree))[site]
    if isinstance(node, ast.Compare):
        node.ops[0] = _MUTATE_CMP[type(node.ops[0])]()
    elif isinstance(node, (ast.BinOp, ast.AugAssign)):
        node.op = _MUTATE_BIN[type(node.op)]()
    elif isinstance(node, ast.BoolOp):
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif isinstance(node.value, bool):
        node.value = not node.value
    else:
        node.value = node.value + 1
    return ast.unparse(tree) + "\n"


def _candidates(seed: int) -> list[tuple[str, str, int]]:
    cands = []
    for repo, files in REPOS.items():
        for rel, src in files.items():
            if rel.startswith("tests/") or rel.endswith("__init__.py"):
                continue
            cands += [(repo, rel, s) for s in mutation_sites(_canonical(src))]
    random.Random(seed).shuffle(cands)
    return cands


def _test_file_for(rel: str) -> str:
    return "tests/test_" + rel.rsplit("/", 1)[1]


PROBE_TIMEOUT_S = 5.0          # a mutant whose tests hang (e.g. a loop that never ends) is dropped
_PROBE_CACHE: dict[tuple[str, str, int], dict | None] = {}


def _probe_cached(repo: str, rel: str, site: int, make_sandbox, cacheable: bool) -> dict | None:
    key = (repo, rel, site)
    if cacheable and key in _PROBE_CACHE:
        return _PROBE_CACHE[key]
    row = _probe(repo, rel, site, make_sandbox)
    if cacheable:
        _PROBE_CACHE[key] = row
    return row


def _probe(repo: str, rel: str, site: int, make_sandbox) -> dict | None:
    """Run the mutated module's tests; the row fields when the bug is kept, else None."""
    files = {k: (_canonical(v) if k.endswith(".py") and v else v) for k, v in REPOS[repo].items()}
    test_file = _test_file_for(rel)
    buggy = {**files, rel: mutate(files[rel], site)}
    probe = CodingTask("probe", "probe", "", "", repo_files=buggy)
    sb = make_sandbox(probe)
    try:
        for path, text in buggy.items():
            sb.write_file(path, text)
        res = sb.run(f"{probe.test_cmd} {test_file}", timeout_s=PROBE_TIMEOUT_S)
    finally:
        sb.close()
    status = {} if res.timed_out else parse_pytest_log(res.output)
    f2p = sorted(t for t, s in status.items() if s in ("FAILED", "ERROR"))
    p2p = sorted(t for t, s in status.items() if s == "PASSED")
    if not f2p or not p2p:
        return None
    module = rel[:-3].replace("/", ".")
    return dict(
        repo=f"synthetic/{repo}", base_commit="",
        problem_statement=_statement(module, f2p, files[test_file]),
        patch=unified_diff({rel: buggy[rel]}, {rel: files[rel]}),
        test_patch=unified_diff({}, {test_file: files[test_file]}),
        FAIL_TO_PASS=f2p, PASS_TO_PASS=p2p, version="0.1",
        repo_files={k: v for k, v in buggy.items() if k != test_file}, source="generator")


def _statement(module: str, f2p: list[str], test_src: str) -> str:
    name = f2p[0].split("::")[1]
    tree = ast.parse(test_src)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    return (f"Bug report: a function in `{module}` returns wrong results.\n\n"
            f"This check fails on the current code but should pass:\n\n```python\n"
            f"{ast.unparse(fn)}\n```\n\nFix the library code (not the check).")


def generate_tasks(num_tasks: int, seed: int = 0, make_sandbox=None, workers: int = 2) -> list[CodingTask]:
    """`num_tasks` rows with injected bugs that break some tests and leave others passing."""
    from concurrent.futures import ThreadPoolExecutor

    from envs.coding.sandbox import LocalSandbox
    cacheable = make_sandbox is None       # same repos + same sandbox -> same outcome per mutant
    make_sandbox = make_sandbox or (lambda task: LocalSandbox.create(timeout_s=30))
    cands = _candidates(seed)
    tasks: list[CodingTask] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i in range(0, len(cands), max(1, workers)):
            if len(tasks) >= num_tasks:
                break
            chunk = cands[i:i + max(1, workers)]
            for (repo, _, _), row in zip(chunk, pool.map(
                    lambda c: _probe_cached(*c, make_sandbox, cacheable), chunk)):
                if row is not None and len(tasks) < num_tasks:
                    tasks.append(CodingTask(instance_id=f"synthetic__{repo}-{len(tasks)}", **row))
    if len(tasks) < num_tasks:
        raise ValueError(f"only {len(tasks)} bug tasks can be generated (asked for {num_tasks})")
    return tasks
