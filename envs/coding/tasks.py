"""SWE-bench task rows, predictions JSONL, and putting a task's repo into a sandbox.

A row has the official SWE-bench fields (instance_id, repo, base_commit, problem_statement, patch,
test_patch, FAIL_TO_PASS, PASS_TO_PASS, version, environment_setup_commit); the official datasets
store the two test lists as JSON strings, which `CodingTask.from_row` accepts as well as lists.
Offline tasks (generated repos, HumanEval) also carry the repo itself (`repo_files`: path -> text)
and the test command, so they need neither network nor docker.

Predictions are the official JSONL: one {"instance_id", "model_name_or_path", "model_patch"} per line.

Example:
    task = load_tasks("tasks.jsonl")[0]; write_predictions(Path("preds.jsonl"), [pred])
"""
from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_TEST_CMD = "python -m pytest -rA -p no:cacheprovider"
GITIGNORE = "__pycache__/\n*.pyc\n.pytest_cache/\n"
_GIT_ENV = ("GIT_AUTHOR_NAME=rl GIT_AUTHOR_EMAIL=rl@localhost GIT_COMMITTER_NAME=rl "
            "GIT_COMMITTER_EMAIL=rl@localhost GIT_AUTHOR_DATE=2000-01-01T00:00:00Z "
            "GIT_COMMITTER_DATE=2000-01-01T00:00:00Z")


@dataclass
class CodingTask:
    instance_id: str
    repo: str
    base_commit: str
    problem_statement: str
    patch: str = ""
    test_patch: str = ""
    FAIL_TO_PASS: list[str] = field(default_factory=list)
    PASS_TO_PASS: list[str] = field(default_factory=list)
    version: str = ""
    environment_setup_commit: str = ""
    repo_files: dict[str, str] | None = None     # offline tasks: the repo at base_commit
    test_cmd: str = DEFAULT_TEST_CMD             # offline tasks: run with the test files appended
    source: str = "swebench"                     # "generator" | "humaneval" | "swebench"

    @classmethod
    def from_row(cls, row: dict) -> "CodingTask":
        known = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in row.items() if k in known}
        for key in ("FAIL_TO_PASS", "PASS_TO_PASS"):
            if isinstance(kwargs.get(key), str):
                kwargs[key] = json.loads(kwargs[key])
        return cls(**kwargs)

    def to_row(self) -> dict:
        return asdict(self)

    def test_files(self) -> list[str]:
        """Files the test patch touches (the tests the harness runs), in patch order."""
        files = []
        for line in self.test_patch.splitlines():
            if line.startswith("+++ ") and not line.endswith("/dev/null"):
                path = line[4:].split("\t")[0]
                files.append(path[2:] if path.startswith("b/") else path)
        return files


def load_tasks(path: Path) -> list[CodingTask]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [CodingTask.from_row(r) for r in rows]


def save_tasks(path: Path, tasks: list[CodingTask]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for t in tasks:
            fh.write(json.dumps(t.to_row()) + "\n")


def write_predictions(path: Path, preds: list[dict]) -> None:
    """Official predictions JSONL: instance_id, model_name_or_path, model_patch (str, may be "")."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for p in preds:
            row = {"instance_id": p["instance_id"], "model_name_or_path": p["model_name_or_path"],
                   "model_patch": p.get("model_patch") or ""}
            fh.write(json.dumps(row) + "\n")


def read_predictions(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def unified_diff(before: dict[str, str], after: dict[str, str]) -> str:
    """A git-apply-able patch turning file set `before` into `after` (added/changed/deleted files).

    Example: unified_diff({"a.py": "x = 1\\n"}, {"a.py": "x = 2\\n"}) starts with "diff --git a/a.py b/a.py"
    """
    out = []
    for rel in sorted(set(before) | set(after)):
        old, new = before.get(rel), after.get(rel)
        if old == new:
            continue
        head = [f"diff --git a/{rel} b/{rel}\n"]
        if old is None:
            head.append("new file mode 100644\n")
        elif new is None:
            head.append("deleted file mode 100644\n")
        a = "/dev/null" if old is None else f"a/{rel}"
        b = "/dev/null" if new is None else f"b/{rel}"
        body = difflib.unified_diff((old or "").splitlines(True), (new or "").splitlines(True), a, b)
        out += head + [line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
                       for line in body]
    return "".join(out)


def materialize(task: CodingTask, sandbox) -> str:
    """Write the task's repo into `sandbox` as a git repo at one base commit; return that commit.

    Only offline tasks carry their repo; official rows need the docker backend (their images hold
    the repo at base_commit).
    """
    if task.repo_files is None and getattr(sandbox, "has_repo", False):
        res = sandbox.run("git rev-parse HEAD", timeout_s=30)
        return res.output.strip().splitlines()[-1] if res.returncode == 0 else task.base_commit
    if task.repo_files is None:
        raise ValueError(f"task {task.instance_id} has no repo_files; official SWE-bench rows run "
                         "with --backend docker (the images hold the repo)")
    files = {".gitignore": GITIGNORE, **task.repo_files}
    for rel, text in files.items():
        sandbox.write_file(rel, text)
    res = sandbox.run(f"git init -q && git add -A && {_GIT_ENV} git commit -q -m base && "
                      "git rev-parse HEAD", timeout_s=30)
    if res.returncode != 0:
        raise RuntimeError(f"git init failed for {task.instance_id}: {res.output[-500:]}")
    return res.output.strip().splitlines()[-1]


def current_patch(sandbox, base_commit: str = "HEAD") -> str:
    """The agent's patch: `git add -A && git diff --cached <base>` (mini-swe-agent's submission)."""
    res = sandbox.run(f"git add -A >/dev/null 2>&1; git diff --cached {base_commit}", timeout_s=30)
    return res.output if res.returncode == 0 else ""
