"""Grading a patch the SWE-bench way: apply it, apply the test patch, run the tests, parse the log.

Resolved iff every FAIL_TO_PASS test now passes (PASSED or XFAIL) and every PASS_TO_PASS test still
passes (a SKIPPED P2P test is no regression; a SKIPPED F2P test is no resolution). A log is invalid
(nothing resolves) when it holds a failure marker (patch apply failed, tests timed out or errored),
when the start/end test-output markers are missing, when no test result parses and nothing shows the
suite ran, or when the recorded exit code is non-zero while no test is reported failing. The marker
strings are the official harness's, so logs are interchangeable. This is the harness of generated
and HumanEval tasks; official SWE-bench rows go to the `swebench` package (envs/coding/official.py).

Example:
    report = grade_log(log_text, ["t.py::test_a"], ["t.py::test_b"]); report.resolved
"""
from __future__ import annotations

import re

from envs.coding.harness_log import (APPLY_PATCH_FAIL, APPLY_PATCH_PASS, END_TEST_OUTPUT,  # noqa: F401
                                     FAILURE_MARKERS, RESET_FAILED, START_TEST_OUTPUT, TEST_EXIT_CODE,
                                     TESTS_ERROR, TESTS_TIMEOUT, GradeReport)

STATUSES = ("PASSED", "FAILED", "SKIPPED", "ERROR", "XFAIL")
PASSING = ("PASSED", "XFAIL")
_SUITE_RAN = re.compile(r"=+ .*\d+ (passed|failed|error)", re.M)
_EXIT_CODE = re.compile(re.escape(TEST_EXIT_CODE) + r":\s*(-?\d+)")
_SKIP_COUNT = re.compile(r"^\[\d+\]$")


def parse_pytest_log(log: str) -> dict[str, str]:
    """Test id -> status from `pytest -rA` summary lines ("PASSED t.py::x", "FAILED t.py::y - msg").

    Example: parse_pytest_log("PASSED t.py::a\\nFAILED t.py::b - assert 0") == {"t.py::a": "PASSED",
             "t.py::b": "FAILED"}
    """
    status_map: dict[str, str] = {}
    for line in log.split("\n"):
        if not line.startswith(STATUSES):
            continue
        if line.startswith("FAILED"):
            line = line.replace(" - ", " ")
        parts = line.split()
        if len(parts) <= 1 or parts[0] not in STATUSES:
            continue
        if parts[0] == "SKIPPED" and _SKIP_COUNT.match(parts[1]):
            continue                      # "SKIPPED [1] file:line: reason" is a summary, not a test
        status_map[parts[1]] = parts[0]
    return status_map


def extract_status_map(log: str) -> tuple[dict[str, str], str]:
    """(status map, "") for a valid log, ({}, reason) for an invalid one (see module docstring)."""
    for marker in FAILURE_MARKERS:
        if marker in log:
            return {}, marker.strip("> ").lower()
    if START_TEST_OUTPUT not in log or END_TEST_OUTPUT not in log:
        return {}, "missing test output markers"
    inner = log.split(START_TEST_OUTPUT)[1].split(END_TEST_OUTPUT)[0]
    status_map = parse_pytest_log(inner) or parse_pytest_log(log)
    if not status_map and not _SUITE_RAN.search(log):
        return {}, "no test results in log"
    m = _EXIT_CODE.search(log)
    exit_code = int(m.group(1)) if m else None
    if exit_code not in (None, 0) and status_map and not any(
            s in ("FAILED", "ERROR") for s in status_map.values()):
        return {}, "non-zero test exit code with no failing test"
    return status_map, ""


def grade_status_map(status_map: dict[str, str], fail_to_pass: list[str],
                     pass_to_pass: list[str]) -> GradeReport:
    """Resolved iff all F2P in PASSING and all P2P in PASSING or SKIPPED."""
    rep = GradeReport(resolved=False, log_valid=True, status_map=dict(status_map))
    for test in fail_to_pass:
        (rep.f2p_success if status_map.get(test) in PASSING else rep.f2p_failure).append(test)
    for test in pass_to_pass:
        ok = status_map.get(test) in PASSING + ("SKIPPED",)
        (rep.p2p_success if ok else rep.p2p_failure).append(test)
    rep.resolved = not rep.f2p_failure and not rep.p2p_failure
    return rep


def grade_log(log: str, fail_to_pass: list[str], pass_to_pass: list[str]) -> GradeReport:
    status_map, reason = extract_status_map(log)
    if reason:
        return GradeReport(resolved=False, log_valid=False, reason=reason,
                           f2p_failure=list(fail_to_pass), p2p_failure=list(pass_to_pass))
    return grade_status_map(status_map, fail_to_pass, pass_to_pass)


def eval_script(model_patch_path: str, test_patch_path: str, test_cmd: str) -> str:
    """Bash run in a fresh copy of the repo at base: apply the model patch, then the test patch,
    run the tests between the markers and record their exit code."""
    def apply(path: str) -> str:
        return (f"if [ -s {path} ]; then git apply -v {path} >/dev/null 2>&1 || "
                f"patch --batch --fuzz=5 -p1 -i {path} >/dev/null 2>&1 || "
                f"{{ echo '{APPLY_PATCH_FAIL}'; exit 1; }}; fi")
    return "\n".join([
        apply(model_patch_path),
        f'echo "{APPLY_PATCH_PASS}"',
        apply(test_patch_path),
        f'echo "{START_TEST_OUTPUT}"',
        f"{test_cmd}",
        "rc=$?",
        f'echo "{END_TEST_OUTPUT}"',
        f'echo "{TEST_EXIT_CODE}: $rc"',
    ])


def evaluate_patch(task, model_patch: str, make_sandbox, timeout_s: float = 120.0) -> tuple[GradeReport, str]:
    """Grade `model_patch` on `task` in a fresh sandbox from `make_sandbox(task)`; return (report, log).

    An empty patch is graded like any other (it cannot resolve a task whose F2P tests fail at base).
    Official SWE-bench rows (repo in the `swebench` package's spec tables) are run and graded by
    the package itself (envs.coding.official); this harness is for generated and HumanEval tasks.
    """
    from envs.coding.official import evaluate_official, is_official
    from envs.coding.tasks import materialize

    if is_official(task):
        return evaluate_official(task, model_patch, make_sandbox)

    sb = make_sandbox(task)
    try:
        materialize(task, sb)
        model_path = sb.put_tmp("model.diff", model_patch or "")
        test_path = sb.put_tmp("test.diff", task.test_patch or "")
        cmd = " ".join([task.test_cmd, *task.test_files()])
        script = eval_script(model_path, test_path, cmd)
        res = sb.run(script, timeout_s=timeout_s)
        log = res.output + (f"\n{TESTS_TIMEOUT}\n" if res.timed_out else "")
        return grade_log(log, task.FAIL_TO_PASS, task.PASS_TO_PASS), log
    finally:
        sb.close()

