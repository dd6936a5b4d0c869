"""Tool calls written as text (the Hermes <tool_call> format, bare JSON, broken JSON), the tools
agent's per-call checks, and the mini-swe-agent trajectory keys."""
import json

from envs.coding.tool_format import TOOLS, ToolCall, parse_tool_calls, text_before_calls
from envs.coding.tools_agent import check_call
from envs.coding.trajectory import TRAJECTORY_FORMAT, mini_exit_status


def test_tagged_calls():
    text = ('I will look.\n<tool_call>\n{"name": "bash", "arguments": {"command": "ls -R"}}\n</tool_call>\n'
            '<tool_call>{"name": "submit", "arguments": {}}')          # last tag unterminated
    calls, errors = parse_tool_calls(text)
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("bash", {"command": "ls -R"}), ("submit", {})]
    assert [c.id for c in calls] == ["call_0", "call_1"] and errors == []
    assert text_before_calls(text) == "I will look."


def test_bare_json_and_parameters_key():
    calls, errors = parse_tool_calls('Sure: {"name": "bash", "parameters": {"command": "pwd"}} done {"x": 1}')
    assert [(c.name, c.arguments) for c in calls] == [("bash", '{"command": "pwd"}')] and errors == []


def test_broken_and_absent_calls_are_errors_not_crashes():
    assert parse_tool_calls("no calls here") == ([], [])
    calls, errors = parse_tool_calls('<tool_call>{"name": "bash", "arguments": {"command": </tool_call>')
    assert calls == [] and "not valid JSON" in errors[0]
    calls, errors = parse_tool_calls('<tool_call>["bash"]</tool_call>')
    assert calls == [] and 'no "name"' in errors[0]


def test_check_call():
    assert check_call(ToolCall("a", "bash", '{"command": "ls"}')) == ("ls", None)
    assert check_call(ToolCall("a", "submit", "{}")) == (None, None)
    assert "unknown tool 'python'" in check_call(ToolCall("a", "python", "{}"))[1]
    assert "not valid JSON" in check_call(ToolCall("a", "bash", "{command"))[1]
    assert "non-empty string" in check_call(ToolCall("a", "bash", '{"cmd": "ls"}'))[1]
    assert {t["function"]["name"] for t in TOOLS} == {"bash", "submit"}
    assert TOOLS[0]["function"]["parameters"]["required"] == ["command"]


def test_mini_exit_status():
    assert TRAJECTORY_FORMAT == "mini-swe-agent-1.1"
    assert [mini_exit_status(s) for s in ("submitted", "turn_cap", "hard_limit", "model_error: X: y")] == [
        "Submitted", "LimitsExceeded", "LimitsExceeded", "ModelError"]
