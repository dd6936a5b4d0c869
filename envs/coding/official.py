"""Official SWE-bench grading for official rows, done by the `swebench` package itself.

A row is official when the installed harness knows how to grade it: it carries its own harness
spec (`eval_script` + `log_parser`, the columns of the dataset revisions that swebench>=5 reads), or
its repo is in the package's spec tables (`MAP_REPO_VERSION_TO_SPECS[repo][version]` in swebench 4,
the per-language `MAP_REPO_TO_PARSER_*` tables in swebench 5). For those rows the package builds the
test spec (`make_test_spec`: the per-repo test command, `conda activate testbed` inside the official
image, test-file reset and test-patch apply between the output markers), names the log parser
(django's runner, sympy's bin/test, pytest -rA, ...) and `get_eval_report` decides "resolved".
Generated and HumanEval tasks (they carry their own repo) keep `envs.coding.grading`.

Running needs the official images (docker backend). Grading needs no docker: `grade_official_log`
grades a recorded test log (the harness's test_output.txt) with the same official code.

Example:
    task = load_official_rows(Path("lite.jsonl"))[0]
    report = grade_official_log(task, Path("test_output.txt").read_text(), model_patch)
    report.resolved
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import pkgutil
import tempfile
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from envs.coding.harness_log import (APPLY_PATCH_FAIL, FAILURE_MARKERS, START_TEST_OUTPUT,
                                     TESTS_TIMEOUT, GradeReport)
from envs.coding.tasks import CodingTask

# the harness's apply chain, in its order (a failed try is undone before the next)
APPLY_CMDS = ("git apply --verbose", "git apply --verbose --3way", "git apply --verbose --reject",
              "patch --batch --forward --fuzz=5 -p1 -i")
EVAL_TIMEOUT_S = 1800.0          # the harness's default per-instance timeout
NOT_INSTALLED = ("official SWE-bench rows are graded by the `swebench` package, which is not "
                 "installed: pip install 'rl[swe]' (or swebench>=5)")


@dataclass
class OfficialTask(CodingTask):
    """A SWE-bench row with the harness columns swebench>=5 reads from the dataset."""
    eval_script: str = ""
    log_parser: str = ""
    image: str = ""
    eval_type: str = ""
    image_assets: dict | str = field(default_factory=dict)
    hints_text: str = ""
    created_at: str = ""


def load_official_rows(path: Path) -> list[CodingTask]:
    """Rows of a SWE-bench JSONL, keeping the harness columns (eval_script, log_parser, image, ...)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [OfficialTask.from_row(r) for r in rows]


def swebench_installed() -> bool:
    return importlib.util.find_spec("swebench") is not None


def _spec_tables_v4() -> dict | None:
    """swebench 4's {repo: {version: spec}} table, or None on swebench 5 (specs live in the rows)."""
    try:
        from swebench.harness.constants import MAP_REPO_VERSION_TO_SPECS
    except ImportError:
        return None
    return MAP_REPO_VERSION_TO_SPECS


@lru_cache(maxsize=1)
def repo_parsers() -> dict[str, str]:
    """{repo: registry name of its log parser} from every MAP_REPO_TO_PARSER* table in the package."""
    import swebench.harness.log_parsers as pkg
    registry = getattr(pkg, "PARSER_REGISTRY", {})
    names = {id(fn): name for name, fn in reversed(list(registry.items()))}
    modules = [pkg] + [importlib.import_module(f"{pkg.__name__}.{m.name}")
                       for m in pkgutil.iter_modules(pkg.__path__)]
    out: dict[str, str] = {}
    for mod in modules:
        for attr, table in vars(mod).items():
            if attr.startswith("MAP_REPO_TO_PARSER") and isinstance(table, dict):
                for repo, fn in table.items():
                    out.setdefault(repo, names.get(id(fn), getattr(fn, "__name__", "")))
    return out


def _eval_type(repo: str) -> str:
    from swebench.harness.constants import FAIL_ONLY_REPOS
    return "fail_only" if repo in FAIL_ONLY_REPOS else "pass_and_fail"


def _row(task: CodingTask) -> dict:
    from envs.coding.docker_backend import official_image
    row = {k: v for k, v in task.to_row().items() if k not in ("repo_files", "test_cmd", "source")}
    row.setdefault("eval_script", "")
    row.setdefault("log_parser", "")
    row["image"] = row.get("image") or official_image(task.instance_id)
    row["eval_type"] = row.get("eval_type") or _eval_type(task.repo)
    return row


def is_official(task: CodingTask) -> bool:
    """Offline tasks (they carry their repo) never are; else: the row or the package's tables know it."""
    if task.repo_files is not None:
        return False
    if getattr(task, "log_parser", "") and getattr(task, "eval_script", ""):
        return True
    if not swebench_installed():
        if task.source == "swebench":
            warnings.warn(NOT_INSTALLED + "; until then these rows grade with the pytest-only harness")
        return False
    tables = _spec_tables_v4()
    if tables is not None:
        return task.version in tables.get(task.repo, {})
    return task.repo in repo_parsers()


def official_spec(task: CodingTask):
    """The harness's TestSpec for an official row, None for any other task.

    swebench 4: make_test_spec builds the eval script from the spec tables. swebench 5: from the
    row's own eval_script/log_parser columns; a classic row without them (repo in the parser tables)
    gets a spec that grades recorded logs but has no eval script to run.
    """
    if not is_official(task):
        return None
    if not swebench_installed():
        raise RuntimeError(NOT_INSTALLED)
    row = _row(task)
    tables = _spec_tables_v4()
    if tables is not None:
        return _spec_v4(row, tables[task.repo][task.version])
    if not row["log_parser"]:
        row["log_parser"] = repo_parsers()[task.repo]
    from swebench.harness.utils import make_test_spec
    return make_test_spec(row)


def _spec_v4(row: dict, specs: dict):
    """swebench 4's TestSpec with only the eval script built (make_test_spec would also build the
    image-setup scripts, which fetch requirement files over the network; the images exist already)."""
    from swebench.harness.constants import MAP_REPO_TO_EXT
    from swebench.harness.test_spec.create_scripts import make_eval_script_list
    from swebench.harness.test_spec.test_spec import TestSpec
    eval_list = make_eval_script_list(row, specs, "testbed", "/testbed", row["base_commit"],
                                      row["test_patch"])
    return TestSpec(instance_id=row["instance_id"], repo=row["repo"], version=row["version"],
                    repo_script_list=[], eval_script_list=eval_list, env_script_list=[],
                    arch="x86_64", FAIL_TO_PASS=list(row["FAIL_TO_PASS"]),
                    PASS_TO_PASS=list(row["PASS_TO_PASS"]), language=MAP_REPO_TO_EXT[row["repo"]],
                    docker_specs=specs.get("docker_specs", {}), namespace="swebench")


def _reason(log: str, report: dict) -> str:
    for marker in FAILURE_MARKERS:
        if marker in log:
            return marker.strip("> ").lower()
    if START_TEST_OUTPUT not in log:
        return "missing test output markers"
    return report.get("infra_failure_reason") or "no valid test results in log"


def grade_official_log(task: CodingTask, log: str, model_patch: str | None = "",
                       spec=None) -> GradeReport:
    """Grade a recorded test log of an official row with the package's own get_eval_report.

    `model_patch=None` is the harness's "no prediction" (unresolved, no log read).
    """
    from swebench.harness.grading import get_eval_report, get_logs_eval
    spec = spec if spec is not None else official_spec(task)
    if spec is None:
        raise ValueError(f"{task.instance_id}: not an official SWE-bench row (repo {task.repo!r} "
                         "is in no swebench spec table); grade it with envs.coding.grading")
    pred = {"instance_id": task.instance_id, "model_name_or_path": "rl", "model_patch": model_patch}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "test_output.txt"
        path.write_text(log)
        entry = get_eval_report(spec, pred, str(path), include_tests_status=True)[task.instance_id]
        status_map = get_logs_eval(spec, str(path))[0] if entry["patch_successfully_applied"] else {}
    tests = entry.get("tests_status", {})
    f2p, p2p = tests.get("FAIL_TO_PASS", {}), tests.get("PASS_TO_PASS", {})
    applied = entry["patch_successfully_applied"]
    return GradeReport(
        resolved=bool(entry["resolved"]), log_valid=applied,
        reason="" if applied else ("no prediction" if model_patch is None else _reason(log, entry)),
        f2p_success=list(f2p.get("success", [])),
        f2p_failure=list(f2p.get("failure", spec.FAIL_TO_PASS if not applied else [])),
        p2p_success=list(p2p.get("success", [])),
        p2p_failure=list(p2p.get("failure", spec.PASS_TO_PASS if not applied else [])),
        status_map=dict(status_map))


def to_official_report(task: CodingTask, report: GradeReport, model_patch: str | None = "") -> dict:
    """Our GradeReport in the harness's report.json shape ({instance_id: {...}}), for comparison."""
    entry = {"patch_is_None": model_patch is None, "patch_exists": model_patch is not None,
             "patch_successfully_applied": report.log_valid, "resolved": report.resolved}
    if report.log_valid:
        entry["tests_status"] = {
            "FAIL_TO_PASS": {"success": report.f2p_success, "failure": report.f2p_failure},
            "PASS_TO_PASS": {"success": report.p2p_success, "failure": report.p2p_failure},
            "FAIL_TO_FAIL": {"success": [], "failure": []},
            "PASS_TO_FAIL": {"success": [], "failure": []}}
    return {task.instance_id: entry}


def eval_script_text(spec) -> str:
    """The bash the harness runs in the image (conda activation, test command, markers)."""
    return spec.eval_script if any(line.strip() for line in spec.eval_script_list) else ""


def _apply_patch(sb, patch_path: str) -> tuple[bool, str]:
    """The harness's apply chain; the tree is reset between failed tries."""
    out = []
    for i, cmd in enumerate(APPLY_CMDS):
        if i:
            sb.run("git checkout -- . ; git clean -fd", timeout_s=60)
        res = sb.run(f"{cmd} {patch_path}", timeout_s=120)
        out.append(res.output)
        if res.returncode == 0:
            return True, res.output
    check = sb.run(f"git apply --check --reverse {patch_path}", timeout_s=60)
    return check.returncode == 0, "\n".join(out[-1:])


def evaluate_official(task: CodingTask, model_patch: str, make_sandbox, spec=None,
                      timeout_s: float = EVAL_TIMEOUT_S) -> tuple[GradeReport, str]:
    """Run the official eval script for `model_patch` in the task's image; grade it officially.

    Needs a sandbox holding the repo at base (the docker backend's official images).
    """
    spec = spec if spec is not None else official_spec(task)
    script = eval_script_text(spec)
    if not script:
        raise ValueError(f"{task.instance_id}: this row has no eval_script, and swebench>=5 reads the "
                         "eval script from the dataset row (current SWE-bench revisions carry it); "
                         "recorded logs still grade with grade_official_log")
    sb = make_sandbox(task)
    try:
        if not getattr(sb, "has_repo", False):
            raise ValueError(f"{task.instance_id}: official rows run in the official images "
                             "(--backend docker); the local sandbox has no repo for them")
        # like the harness, an empty patch is applied too (and fails): no tests run for it
        applied, apply_log = _apply_patch(sb, sb.put_tmp("patch.diff", model_patch or ""))
        if not applied:
            log = f"{APPLY_PATCH_FAIL}:\n{apply_log}"
        else:
            res = sb.run(f"/bin/bash {sb.put_tmp('eval.sh', script)}", timeout_s=timeout_s)
            log = res.output + (f"\n{TESTS_TIMEOUT}\n" if res.timed_out else "")
        return grade_official_log(task, log, model_patch, spec), log
    finally:
        sb.close()
