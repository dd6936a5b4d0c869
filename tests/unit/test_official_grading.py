"""Official rows are graded by the `swebench` package itself (envs/coding/official.py).

Recorded logs (tests/fixtures/swebench/logs, written in each official parser's format: django's
runner, sympy's bin/test, pytest -rA) for a django, a sympy and a pytest instance: our report equals
the package's get_eval_report on the same row and log, for rows carrying the harness columns and for
classic rows whose parser comes from the package's tables. No docker: the docker path is exercised
with a stand-in sandbox, and for real only where an engine answers.
"""
import json
from pathlib import Path

import pytest

pytest.importorskip("swebench")
from swebench.harness.grading import get_eval_report  # noqa: E402
from swebench.harness.utils import make_test_spec  # noqa: E402

from envs.coding.grading import grade_log  # noqa: E402
from envs.coding.official import (OfficialTask, evaluate_official, grade_official_log,  # noqa: E402
                                  is_official, load_official_rows, official_spec,
                                  to_official_report)
from envs.coding.sandbox import ExecResult  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "swebench"
ROWS = {json.loads(line)["instance_id"]: json.loads(line)
        for line in (FIXTURES / "rows.jsonl").read_text().splitlines()}
LOGS = sorted((FIXTURES / "logs").glob("*.log"))
HARNESS_COLUMNS = ("eval_script", "log_parser", "image", "eval_type")
PATCH = "diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a\n+b\n"
EXPECTED = {   # case -> (resolved, log valid): hand-read from the fixture logs
    "gold": (True, True), "fail": (False, True), "p2p_error": (False, True),
    "error": (False, True), "fake_pass": (False, False)}


def _official(row: dict, log_path: Path) -> dict:
    pred = {"instance_id": row["instance_id"], "model_name_or_path": "m", "model_patch": PATCH}
    report = get_eval_report(make_test_spec(row), pred, str(log_path), include_tests_status=True)
    for entry in report.values():
        entry.pop("infra_failure", None)
        entry.pop("infra_failure_reason", None)
    return report


def _task(iid: str, classic: bool):
    row = {k: v for k, v in ROWS[iid].items() if not (classic and k in HARNESS_COLUMNS)}
    return OfficialTask.from_row(row)


@pytest.mark.parametrize("classic", [False, True], ids=["harness-columns", "classic-row"])
@pytest.mark.parametrize("log_path", LOGS, ids=[p.stem for p in LOGS])
def test_report_equals_official(log_path, classic):
    iid, case = log_path.stem.split(".")
    task = _task(iid, classic)
    assert is_official(task)
    ours = grade_official_log(task, log_path.read_text(), PATCH)
    assert to_official_report(task, ours, PATCH) == _official(ROWS[iid], log_path)
    assert (ours.resolved, ours.log_valid) == EXPECTED[case]


def test_all_three_styles_covered():
    parsers = {ROWS[p.stem.split(".")[0]]["log_parser"] for p in LOGS}
    assert parsers == {"parse_log_django", "parse_log_sympy", "parse_log_pytest"}
    assert len(LOGS) >= 9


def test_classic_rows_get_the_parser_the_dataset_names():
    for iid, row in ROWS.items():
        assert official_spec(_task(iid, classic=True)).log_parser == row["log_parser"]


def test_spec_is_the_packages_eval_script():
    spec = official_spec(load_official_rows(FIXTURES / "rows.jsonl")[0])
    script = spec.eval_script
    assert "conda activate testbed" in script and "./tests/runtests.py --verbosity 2" in script
    assert script.index("SWEBENCH_TEST_EXIT_CODE=$?") < script.index(">>>>> End Test Output")


def test_pytest_only_harness_would_misgrade_django():
    """Why official rows leave grading.py: its pytest parser finds no result in a django log."""
    log = (FIXTURES / "logs" / "django__django-11099.gold.log").read_text()
    row = ROWS["django__django-11099"]
    mine = grade_log(log, json.loads(row["FAIL_TO_PASS"]), json.loads(row["PASS_TO_PASS"]))
    assert not mine.resolved
    assert grade_official_log(_task("django__django-11099", False), log, PATCH).resolved


def test_offline_tasks_stay_with_grading_py():
    from envs.coding.generator import generate_tasks
    assert not any(is_official(t) for t in generate_tasks(2, seed=0))
    assert official_spec(generate_tasks(1, seed=0)[0]) is None


class StandInImage:
    """Answers like the official image would: patch applies, eval.sh prints the recorded log."""
    has_repo = True

    def __init__(self, log: str, apply_rc: int = 0):
        self.log, self.apply_rc, self.commands, self.files = log, apply_rc, [], {}

    def put_tmp(self, name, text):
        self.files[f"/tmp/{name}"] = text
        return f"/tmp/{name}"

    def run(self, command, timeout_s=None):
        self.commands.append(command)
        if command.startswith(("git apply", "patch ")):
            return ExecResult(self.apply_rc, "error: patch failed\n" if self.apply_rc else "ok\n", False, 0.0)
        if command.startswith("/bin/bash /tmp/eval.sh"):
            return ExecResult(0, self.log, False, 0.0)
        return ExecResult(0, "", False, 0.0)

    def close(self):
        pass


@pytest.mark.parametrize("iid", sorted(ROWS))
def test_docker_path_runs_the_official_script(iid):
    task = _task(iid, classic=False)
    box = StandInImage((FIXTURES / "logs" / f"{iid}.gold.log").read_text())
    report, log = evaluate_official(task, PATCH, lambda t: box)
    assert report.resolved and box.commands[0] == "git apply --verbose /tmp/patch.diff"
    assert box.files["/tmp/eval.sh"] == official_spec(task).eval_script
    failing = StandInImage("", apply_rc=1)
    report, log = evaluate_official(task, PATCH, lambda t: failing)
    assert not report.resolved and not report.log_valid and report.reason == "patch apply failed"
    assert not any(c.startswith("/bin/bash") for c in failing.commands)


def test_classic_row_without_eval_script_explains():
    with pytest.raises(ValueError, match="eval_script"):
        evaluate_official(_task("sympy__sympy-20590", classic=True), PATCH, lambda t: None)


def test_real_docker_engine_or_clear_skip():
    from envs.coding.docker_backend import DockerSandbox, check_docker
    from envs.coding.sandbox import SandboxUnavailable
    try:
        check_docker(timeout_s=5)
    except SandboxUnavailable as exc:
        pytest.skip(f"docker path not run: {exc}")
    # the fixture rows are not the real instances' full test sets, so only the mechanics are checked:
    # the official image starts, the apply chain runs in it, an empty patch fails as in the harness
    task = _task("sympy__sympy-20590", classic=False)
    report, log = evaluate_official(task, "", lambda t: DockerSandbox.create(t), timeout_s=900)
    assert not report.resolved and report.reason == "patch apply failed", log[-500:]
