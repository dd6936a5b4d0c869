"""Parity with the official `swebench` grading code on the same logs (runs only where it is installed).

For every recorded log: the official get_logs_eval + get_eval_tests_report + get_resolution_status
and our grade_log must agree on validity, the parsed status map, the F2P/P2P success lists and
"resolved".
"""
import pytest

from envs.coding.grading import grade_log

swebench = pytest.importorskip("swebench")
from swebench.harness.grading import (  # noqa: E402
    get_eval_tests_report,
    get_logs_eval,
    get_resolution_status,
)
from swebench.types import TestSpec  # noqa: E402
from test_coding_grading import F2P, FAIL_BODY, P2P, PASS_BODY, _log  # noqa: E402

LOGS = {
    "pass": _log(PASS_BODY),
    "fail": _log(FAIL_BODY, exit_code=1),
    "broken_p2p": _log(PASS_BODY.replace("PASSED tests/test_m.py::test_ok",
                                         "FAILED tests/test_m.py::test_ok - boom"), exit_code=1),
    "missing_test": _log(PASS_BODY.replace("PASSED tests/test_m.py::test_bug\n", "")),
    "skipped_p2p": _log(PASS_BODY.replace("PASSED tests/test_m.py::test_ok", "SKIPPED tests/test_m.py::test_ok")),
    "skipped_f2p": _log(PASS_BODY.replace("PASSED tests/test_m.py::test_bug", "SKIPPED tests/test_m.py::test_bug")),
    "xfail": _log(PASS_BODY.replace("PASSED tests/test_m.py::test_bug", "XFAIL tests/test_m.py::test_bug")),
    "skip_summary": _log(PASS_BODY + "\nSKIPPED [1] tests/test_m.py:3: no numpy"),
    "timeout": _log(PASS_BODY) + "\n>>>>> Tests Timed Out\n",
    "apply_failed": ">>>>> Patch Apply Failed\nerror: patch failed\n",
    "no_markers": PASS_BODY,
    "no_end_marker": ">>>>> Start Test Output\n" + PASS_BODY,
    "empty_run": _log("ImportError: cannot import name 'x'", exit_code=2),
    "fake_pass": _log("PASSED tests/test_m.py::test_bug", exit_code=1),
    "outside_markers": ">>>>> Start Test Output\n>>>>> End Test Output\n>>>>> Test Exit Code: 0\n" + PASS_BODY,
}


def _official(log: str, tmp_path) -> tuple[bool, dict, dict | None, bool]:
    path = tmp_path / "test_output.txt"
    path.write_text(log)
    spec = TestSpec(instance_id="x__y-1", image="", eval_script_list=[], repo="x/y", version="1",
                    FAIL_TO_PASS=F2P, PASS_TO_PASS=P2P, log_parser="parse_log_pytest",
                    eval_type="pass_and_fail")
    status_map, found = get_logs_eval(spec, str(path))
    if not found:
        return False, {}, None, False
    report = get_eval_tests_report(status_map, {"FAIL_TO_PASS": F2P, "PASS_TO_PASS": P2P})
    return True, status_map, report, get_resolution_status(report) == "RESOLVED_FULL"


@pytest.mark.parametrize("name", list(LOGS))
def test_grading_matches_official(name, tmp_path):
    found, status_map, report, resolved = _official(LOGS[name], tmp_path)
    ours = grade_log(LOGS[name], F2P, P2P)
    assert ours.log_valid == found
    assert ours.resolved == resolved
    if found:
        assert ours.status_map == status_map
        assert ours.f2p_success == report["FAIL_TO_PASS"]["success"]
        assert ours.p2p_success == report["PASS_TO_PASS"]["success"]
