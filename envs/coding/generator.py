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

from envs.coding.grading import parse_pytest_log
from envs.coding.tasks import CodingTask, unified_diff

_MUTATE_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
               ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}
_MUTATE_BIN = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Add, ast.FloorDiv: ast.Mod,
               ast.Mod: ast.FloorDiv}

REPOS: dict[str, dict[str, str]] = {
    "textkit": {
        "textkit/__init__.py": "",
        "textkit/strings.py": '''
def slugify(text):
    """Lower-case words joined by '-': slugify("Hello  World!") == "hello-world"."""
    words = "".join(c if c.isalnum() else " " for c in text.lower()).split()
    return "-".join(words)


def is_palindrome(text):
    """True if the letters read the same both ways, ignoring case and non-letters."""
    letters = [c.lower() for c in text if c.isalpha()]
    return letters == letters[::-1]


def truncate(text, width):
    """Cut to at most `width` characters, ending with '...' when cut (width >= 3)."""
    if len(text) <= width:
        return text
    return text[:width - 3] + "..."


def count_vowels(text):
    return sum(1 for c in text.lower() if c in "aeiou")
''',
        "textkit/numbers.py": '''
def clamp(x, low, high):
    """x limited to [low, high]."""
    if x < low:
        return low
    if x > high:
        return high
    return x


def mean(xs):
    return sum(xs) / len(xs)


def median(xs):
    s = sorted(xs)
    n = len(s)
    mid = n // 2
    if n % 2 == 1:
        return s[mid]
    return (s[mid - 1] + s[mid]) / 2


def is_prime(n):
    if n < 2:
        return False
    d = 2
    while d * d <= n:
        if n % d == 0:
            return False
        d += 1
    return True


def gcd(a, b):
    while b != 0:
        a, b = b, a % b
    return a
''',
        "tests/test_strings.py": '''
from textkit.strings import slugify, is_palindrome, truncate, count_vowels


def test_slugify_basic():
    assert slugify("Hello  World!") == "hello-world"


def test_slugify_empty():
    assert slugify("") == ""


def test_palindrome_true():
    assert is_palindrome("A man, a plan, a canal: Panama")


def test_palindrome_false():
    assert not is_palindrome("abca")


def test_truncate_short():
    assert truncate("abc", 5) == "abc"


def test_truncate_long():
    assert truncate("abcdefgh", 6) == "abc..."


def test_truncate_exact():
    assert truncate("abcdef", 6) == "abcdef"


def test_count_vowels():
    assert count_vowels("Education") == 5
''',
        "tests/test_numbers.py": '''
from textkit.numbers import clamp, mean, median, is_prime, gcd


def test_clamp_inside():
    assert clamp(5, 0, 10) == 5


def test_clamp_low():
    assert clamp(-3, 0, 10) == 0


def test_clamp_high():
    assert clamp(12, 0, 10) == 10


def test_mean():
    assert mean([1, 2, 3, 6]) == 3


def test_median_odd():
    assert median([5, 1, 3]) == 3


def test_median_even():
    assert median([4, 1, 3, 2]) == 2.5


def test_primes():
    assert [n for n in range(20) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19]


def test_prime_square():
    assert not is_prime(49)


def test_gcd():
    assert gcd(12, 18) == 6


def test_gcd_zero():
    assert gcd(7, 0) == 7
''',
    },
    "datakit": {
        "datakit/__init__.py": "",
        "datakit/intervals.py": '''
def merge_intervals(intervals):
    """Merge overlapping [start, end] intervals: [[1, 3], [2, 5], [7, 8]] -> [[1, 5], [7, 8]]."""
    out = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return out


def overlaps(a, b):
    """Closed intervals a and b share at least one point."""
    return a[0] <= b[1] and b[0] <= a[1]


def total_length(intervals):
    return sum(end - start for start, end in merge_intervals(intervals))
''',
        "datakit/search.py": '''
def binary_search(xs, target):
    """Index of target in sorted xs, or -1."""
    lo, hi = 0, len(xs) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if xs[mid] == target:
            return mid
        if xs[mid] < target:
            lo = mid + 1
        else:
            hi = mid - 1
    return -1


def argmax(xs):
    best = 0
    for i in range(1, len(xs)):
        if xs[i] > xs[best]:
            best = i
    return best


def chunk(xs, size):
    """Split xs into lists of `size` (the last may be shorter)."""
    return [xs[i:i + size] for i in range(0, len(xs), size)]


def running_sum(xs):
    out, total = [], 0
    for x in xs:
        total = total + x
        out.append(total)
    return out
''',
        "tests/test_intervals.py": '''
from datakit.intervals import merge_intervals, overlaps, total_length


def test_merge():
    assert merge_intervals([[1, 3], [2, 5], [7, 8]]) == [[1, 5], [7, 8]]


def test_merge_touching():
    assert merge_intervals([[1, 2], [2, 4]]) == [[1, 4]]


def test_merge_disjoint():
    assert merge_intervals([[5, 6], [1, 2]]) == [[1, 2], [5, 6]]


def test_overlaps_yes():
    assert overlaps([1, 4], [3, 6])


def test_overlaps_no():
    assert not overlaps([1, 2], [3, 4])


def test_total_length():
    assert total_length([[0, 2], [1, 5], [10, 11]]) == 6
''',
        "tests/test_search.py": '''
from datakit.search import binary_search, argmax, chunk, running_sum


def test_search_found():
    assert binary_search([1, 3, 5, 7, 9], 7) == 3


def test_search_first():
    assert binary_search([1, 3, 5, 7, 9], 1) == 0


def test_search_missing():
    assert binary_search([1, 3, 5], 4) == -1


def test_argmax():
    assert argmax([3, 9, 2, 9]) == 1


def test_chunk():
    assert chunk([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]


def test_running_sum():
    assert running_sum([1, 2, 3]) == [1, 3, 6]
''',
    },
}


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
