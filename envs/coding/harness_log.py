"""The official harness's log markers and the grade report both graders return (envs/coding/grading.py
for generated and HumanEval tasks, envs/coding/official.py for SWE-bench rows)."""
from __future__ import annotations

from dataclasses import dataclass, field

APPLY_PATCH_FAIL = ">>>>> Patch Apply Failed"
APPLY_PATCH_PASS = ">>>>> Applied Patch"
RESET_FAILED = ">>>>> Reset Failed"
TESTS_ERROR = ">>>>> Tests Errored"
TESTS_TIMEOUT = ">>>>> Tests Timed Out"
START_TEST_OUTPUT = ">>>>> Start Test Output"
END_TEST_OUTPUT = ">>>>> End Test Output"
TEST_EXIT_CODE = ">>>>> Test Exit Code"
FAILURE_MARKERS = (APPLY_PATCH_FAIL, RESET_FAILED, TESTS_ERROR, TESTS_TIMEOUT)


@dataclass
class GradeReport:
    resolved: bool
    log_valid: bool
    reason: str = ""                      # why the log was invalid, or "" when it was valid
    f2p_success: list[str] = field(default_factory=list)
    f2p_failure: list[str] = field(default_factory=list)
    p2p_success: list[str] = field(default_factory=list)
    p2p_failure: list[str] = field(default_factory=list)
    status_map: dict[str, str] = field(default_factory=dict)
