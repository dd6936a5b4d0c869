"""The tool-calling agent (`--agent tools`) end to end on generated tasks: the scripted oracle solves
them through `bash` / `submit` tool calls; replies with no call, broken JSON or an unknown tool each
cost a turn and get an error observation, never a crash; turn control (fixed cap + reminder, dynamic)
counts turns exactly as in the bash format; the in-process engine path renders tools with the
Hermes-style template and parses calls from its text; trajectories are mini-swe-agent JSON; a model
server that is not there gives one error line and exit 2 (a real `rl` subprocess)."""
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from allocation.turn_control import parse_turn_control
from envs.coding.agent import run_agent
from envs.coding.chat import ChatReply
from envs.coding.generator import generate_tasks
from envs.coding.models import EngineChatModel, ScriptedModel, oracle_replies
from envs.coding.runner import format_kwargs
from envs.coding.sandbox import LocalSandbox
from envs.coding.tool_format import ToolCall
from rollout.types import Completion


def make_sandbox(task):
    return LocalSandbox.create(timeout_s=60)


@pytest.fixture(scope="module")
def task():
    return generate_tasks(1, seed=3, workers=1)[0]


class BadCaller:
    """Replies in turn: text only, broken arguments, an unknown tool, then ls forever."""

    def __init__(self):
        self.calls = 0

    def chat_tools(self, messages, tools):
        self.calls += 1
        kind = min(self.calls, 4)
        calls = {1: [], 2: [ToolCall("a", "bash", "{command")], 3: [ToolCall("b", "python", "{}")],
                 4: [ToolCall(f"c{self.calls}", "bash", '{"command": "ls"}')]}[kind]
        return ChatReply("hmm" if kind == 1 else "", calls, 10, 3, "stop")


def test_scripted_oracle_solves_through_tools_cli(tmp_path):
    from rl.tools.swebench import main
    out = tmp_path / "run"
    rc = main(["--tasks", "generator:2", "--model", "scripted", "--agent", "tools", "--workers", "2",
               "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())[0]
    assert summary["solve_rate"] == 1.0 and summary["format_ok_rate"] == 1.0
    preds = json.loads((out / "unlimited" / "preds.json").read_text())
    for iid, pred in preds.items():
        data = json.loads((out / "unlimited" / iid / f"{iid}.traj.json").read_text())
        assert data["trajectory_format"] == "mini-swe-agent-1.1" and data["instance_id"] == iid
        assert data["info"]["exit_status"] == "Submitted" and data["info"]["submission"] == pred["model_patch"]
        assert data["info"]["model_stats"]["api_calls"] == 3 and data["info"]["config"]["agent"]["agent_format"] == "tools"
        msgs = data["messages"]
        assert msgs[-1]["role"] == "exit" and msgs[-1]["extra"]["exit_status"] == "Submitted"
        ids = [c["id"] for m in msgs if m["role"] == "assistant" for c in m["tool_calls"]]
        assert [m["tool_call_id"] for m in msgs if m["role"] == "tool"] == ids[:-1]   # submit: the end
        assert msgs[-2]["tool_calls"][0]["function"]["name"] == "submit"


def test_bad_calls_cost_turns_and_get_errors(task):
    traj = run_agent(task, BadCaller(), parse_turn_control("fixed:5"), make_sandbox, **format_kwargs("tools"))
    assert traj.num_turns == 5 and traj.exit_status == "turn_cap"
    assert [t.format_ok for t in traj.turns] == [False, False, False, True, True]
    obs = [m for m in traj.messages[2:] if m["role"] != "assistant"]
    assert obs[0]["role"] == "user" and "called no tool" in obs[0]["content"]
    assert obs[1]["role"] == "tool" and "not valid JSON" in obs[1]["content"]
    assert obs[2]["tool_call_id"] == "b" and "unknown tool 'python'" in obs[2]["content"]
    assert "<returncode>0</returncode>" in obs[3]["content"]
    assert all(t.reminder for t in traj.turns[:4])                  # the cap's per-turn reminder
    assert traj.turns[0].reminder in obs[0]["content"]


@pytest.mark.parametrize("spec", ["fixed:3", "dynamic:2-4", "unlimited"])
def test_turn_control_same_in_both_formats(task, spec):
    script = oracle_replies(task, explore_turns=4, verify_turns=1)
    got = {}
    for fmt in ("bash", "tools"):
        traj = run_agent(task, ScriptedModel(script), parse_turn_control(spec), make_sandbox, **format_kwargs(fmt))
        got[fmt] = (traj.num_turns, traj.exit_status, traj.extended, bool(traj.patch.strip()),
                    [t.reminder for t in traj.turns])
    assert got["bash"] == got["tools"]


class FixedTextEngine:
    """An engine whose every completion is one fixed text (what a model writes)."""

    def __init__(self, tok, text):
        self.tok, self.text, self.prompts = tok, text, []

    def generate(self, requests):
        self.prompts.append(self.tok.decode(requests[0].prompt_ids))
        ids = self.tok.encode(self.text, add_special_tokens=False)
        return [Completion(0, ids, [0.0] * len(ids), self.text, "stop")]


def test_engine_renders_tools_and_parses_text_calls(task):
    from rl.workers.models import load_tokenizer
    try:
        tok = load_tokenizer("tiny-llama")
    except Exception as exc:
        pytest.skip(f"tiny-llama tokenizer not available: {exc}")
    engine = FixedTextEngine(tok, 'Look.\n<tool_call>\n{"name": "bash", "arguments": {"command": "ls"}}\n</tool_call>')
    model = EngineChatModel(engine, tok, max_new_tokens=32)
    traj = run_agent(task, model, parse_turn_control("fixed:2"), make_sandbox, **format_kwargs("tools"))
    assert traj.num_turns == 2 and all(t.format_ok for t in traj.turns)
    assert "<tools>" in engine.prompts[0] and '"name": "submit"' in engine.prompts[0]
    assert "<tool_response>" in engine.prompts[1] and "<returncode>0</returncode>" in engine.prompts[1]
    assert traj.messages[2]["content"] == "Look." and traj.messages[2]["tool_calls"][0]["function"]["name"] == "bash"


def _rl() -> list[str]:
    script = Path(sys.executable).with_name("rl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "rl.cli"]


def test_cli_unreachable_server_is_one_error_line(tmp_path):
    pytest.importorskip("openai")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    res = subprocess.run(_rl() + ["eval", "swebench", "--tasks", "generator:2", "--model", f"openai:{url}",
                                  "--agent", "tools", "--max-retries", "2", "--backoff-s", "0.05",
                                  "--workers", "2", "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert res.returncode == 2, (res.stdout[-2000:], res.stderr[-2000:])
    assert "Traceback" not in res.stderr + res.stdout
    line = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and url in line[0] and "3 attempts" in line[0], res.stderr[-2000:]
