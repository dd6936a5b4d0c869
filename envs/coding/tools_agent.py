"""The tool-calling agent format (`--agent tools`): the chat-completions tools API instead of bash in
markdown. Two tools (tool_format.py): `bash(command)` and `submit()`.

Each turn: the model is called with `tools=[bash, submit]`; the assistant message keeps its
`tool_calls`; each bash call runs in the sandbox (a fresh shell, cwd = the repo) and its result goes
back as a `role: tool` message with that call's `tool_call_id`. `submit` ends the episode (the patch
is the sandbox's git diff, as in the bash format). A reply with no call, an unknown tool or
arguments that are not a JSON object with a string "command" costs a turn: every call gets a tool
message with the error (a reply with no call gets a user message), so the history stays valid for
the API. Several calls in one reply run in order, up to the first submit. Turn control is run_agent's,
unchanged: one model call = one turn; its reminder is appended to the turn's last observation.

Example:
    traj = run_agent(task, model, TurnPolicy(), make_sandbox, step=tools_step, agent_format="tools",
                     system_prompt=TOOLS_SYSTEM_PROMPT)
"""
from __future__ import annotations

import json
import time

from envs.coding.agent import ChatModel, Step, _obs_extra, format_observation
from envs.coding.tool_format import TOOL_NAMES, TOOLS, ToolCall

TOOLS_SYSTEM_PROMPT = """You are a software engineer fixing an issue in a Python repository.
You work through two tools. `bash` runs ONE command in a fresh shell in the repository root (chain
several with &&; directory changes do not persist; there is no network); edit files with sed,
cat <<'EOF' > file, or python scripts. Call `submit` when the repository holds your fix.
Every reply must call exactly one tool."""

NO_TOOL_CALL = ("Format error: your reply called no tool ({why}). Every reply must call exactly one "
                "tool: `bash` with {{\"command\": \"...\"}} to run a command, or `submit` to finish.")


def check_call(call: ToolCall) -> tuple[str | None, str | None]:
    """(bash command or None, error or None) for one call; submit -> (None, None)."""
    if call.name not in TOOL_NAMES:
        return None, f"unknown tool {call.name!r}; the tools are: {', '.join(TOOL_NAMES)}"
    try:
        args = json.loads(call.arguments or "{}")
    except json.JSONDecodeError as exc:
        return None, f"the arguments of {call.name} are not valid JSON ({exc.msg})"
    if call.name == "submit":
        return None, None
    if not isinstance(args, dict) or not isinstance(args.get("command"), str) or not args["command"].strip():
        return None, "bash needs {\"command\": \"<a non-empty string>\"}"
    return args["command"], None


def _tool_msg(call: ToolCall, content: str, extra: dict) -> dict:
    return {"role": "tool", "tool_call_id": call.id, "content": content, "extra": extra}


def tools_step(model: ChatModel, messages: list[dict], sb, command_timeout_s: float) -> Step:
    """One model call with the tools; run its calls; tool messages back."""
    reply = model.chat_tools(messages, TOOLS)
    checked = [(c, *check_call(c)) for c in reply.tool_calls]
    actions = [{"command": cmd, "tool_call_id": c.id} if c.name == "bash" else
               {"tool": "submit", "tool_call_id": c.id} for c, cmd, err in checked if err is None]
    content = reply.text or (None if reply.tool_calls else "")   # the API wants text when there are no calls
    assistant = {"role": "assistant", "content": content, "extra": {
        "actions": actions, "input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens,
        "finish_reason": reply.finish_reason, "parse_errors": reply.parse_errors, "timestamp": time.time()}}
    if reply.tool_calls:
        assistant["tool_calls"] = [c.to_message() for c in reply.tool_calls]
    else:
        why = "; ".join(reply.parse_errors) or "no tool_calls in the reply"
        obs = {"role": "user", "content": NO_TOOL_CALL.format(why=why[:500]),
               "extra": {"interrupt_type": "FormatError", "timestamp": time.time()}}
        return Step(assistant, [obs], None, None, False, reply.input_tokens, reply.output_tokens)
    observations, last_cmd, last_rc, submitted = [], None, None, False
    for call, cmd, err in checked:
        if submitted:
            observations.append(_tool_msg(call, "not run: the task was already submitted", {}))
        elif err is not None:
            observations.append(_tool_msg(call, f"Tool call error: {err}",
                                          {"interrupt_type": "FormatError", "timestamp": time.time()}))
        elif call.name == "submit":
            submitted = True
            observations.append(_tool_msg(call, "submitted", {"timestamp": time.time()}))
        else:
            res = sb.run(cmd, timeout_s=command_timeout_s)
            last_cmd, last_rc = cmd, res.returncode
            observations.append(_tool_msg(call, format_observation(res.returncode, res.output, res.timed_out),
                                          _obs_extra(res)))
    action = last_cmd if last_cmd is not None else ("submit" if submitted else None)
    return Step(assistant, observations, action, last_rc, submitted, reply.input_tokens, reply.output_tokens)
