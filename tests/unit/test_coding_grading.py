"""Grading from recorded test logs: pass, fail, timeout, patch that does not apply, missing markers."""
import pytest

from envs.coding.grading import (APPLY_PATCH_FAIL, END_TEST_OUTPUT, START_TEST_OUTPUT, TEST_EXIT_CODE,
                                 TESTS_TIMEOUT, grade_log, grade_status_map, parse_pytest_log)

F2P = ["tests/test_m.py::test_bug"]
P2P = ["tests/test_m.py::test_ok", "tests/test_m.py::test_other"]


def _log(body: str, exit_code: int | None = 0, before: str = ">>>>> Applied Patch\n") -> str:
    tail = f"\n{TEST_EXIT_CODE}: {exit_code}\n" if exit_code is not None else "\n"
    return f"{before}{START_TEST_OUTPUT}\n{body}\n{END_TEST_OUTPUT}{tail}"


PASS_BODY = """============================= test session starts ==============================
collected 3 items

tests/test_m.py ...                                                      [100%]

==================================== PASSES ====================================
=========================== short test summary info ============================
PASSED tests/test_m.py::test_bug
PASSED tests/test_m.py::test_ok
PASSED tests/test_m.py::test_other
============================== 3 passed in 0.01s ==============================="""

FAIL_BODY = """tests/test_m.py F..                                                      [100%]
=========================== short test summary info ============================
PASSED tests/test_m.py::test_ok
PASSED tests/test_m.py::test_other
FAILED tests/test_m.py::test_bug - assert 3 == 4
========================= 1 failed, 2 passed in 0.02s =========================="""


def test_parse_pytest_log():
    sm = parse_pytest_log(FAIL_BODY + "\nSKIPPED [1] tests/test_m.py:9: no numpy\nERROR tests/test_e.py::t")
    assert sm == {"tests/test_m.py::test_ok": "PASSED", "tests/test_m.py::test_other": "PASSED",
                  "tests/test_m.py::test_bug": "FAILED", "tests/test_e.py::t": "ERROR"}


def test_all_pass_resolves():
    rep = grade_log(_log(PASS_BODY), F2P, P2P)
    assert rep.resolved and rep.log_valid and rep.f2p_success == F2P and rep.p2p_success == P2P


def test_failing_f2p_does_not_resolve():
    rep = grade_log(_log(FAIL_BODY, exit_code=1), F2P, P2P)
    assert not rep.resolved and rep.log_valid and rep.f2p_failure == F2P and rep.p2p_failure == []


def test_broken_p2p_does_not_resolve():
    body = PASS_BODY.replace("PASSED tests/test_m.py::test_ok", "FAILED tests/test_m.py::test_ok - boom")
    rep = grade_log(_log(body, exit_code=1), F2P, P2P)
    assert not rep.resolved and rep.p2p_failure == ["tests/test_m.py::test_ok"]


def test_missing_test_counts_as_failure():
    body = PASS_BODY.replace("PASSED tests/test_m.py::test_bug\n", "")
    assert not grade_log(_log(body), F2P, P2P).resolved


def test_skip_semantics():
    sm = {F2P[0]: "PASSED", P2P[0]: "SKIPPED", P2P[1]: "XFAIL"}
    assert grade_status_map(sm, F2P, P2P).resolved            # skipped P2P is no regression
    sm = {F2P[0]: "SKIPPED", P2P[0]: "PASSED", P2P[1]: "PASSED"}
    assert not grade_status_map(sm, F2P, P2P).resolved        # skipped F2P is no resolution


def test_timeout_is_invalid():
    rep = grade_log(_log(PASS_BODY) + f"\n{TESTS_TIMEOUT}\n", F2P, P2P)
    assert not rep.resolved and not rep.log_valid and "timed out" in rep.reason
    assert rep.f2p_failure == F2P


def test_patch_apply_failure_is_invalid():
    rep = grade_log(f"{APPLY_PATCH_FAIL}\n", F2P, P2P)
    assert not rep.resolved and not rep.log_valid and "apply" in rep.reason


@pytest.mark.parametrize("log", [
    PASS_BODY,                                                   # no markers at all
    f"{START_TEST_OUTPUT}\n{PASS_BODY}\n",                       # end marker missing
])
def test_missing_markers_is_invalid(log):
    rep = grade_log(log, F2P, P2P)
    assert not rep.resolved and not rep.log_valid and "markers" in rep.reason


def test_empty_run_is_invalid():
    rep = grade_log(_log("ImportError: cannot import name 'x'", exit_code=2), F2P, [])
    assert not rep.resolved and not rep.log_valid and "no test results" in rep.reason


def test_exit_code_cross_check():
    # a patch that prints fake PASSED lines while the test command failed
    rep = grade_log(_log("PASSED tests/test_m.py::test_bug", exit_code=1), F2P, [])
    assert not rep.resolved and not rep.log_valid


def test_results_outside_markers_are_used():
    log = f"{START_TEST_OUTPUT}\n{END_TEST_OUTPUT}\n{TEST_EXIT_CODE}: 0\n" + PASS_BODY
    assert grade_log(log, F2P, P2P).resolved
