"""The tool-calling agent's two tools, the text format of tool calls, and a tool-aware chat template.

Tools (OpenAI chat-completions `tools=` schemas): `bash(command)` runs one command in the sandbox;
`submit()` ends the episode (the patch is the sandbox's git diff).

Text format (what an in-process model writes, and what vLLM's `hermes` tool parser reads on a
server): one JSON object per call inside tags, after any free text:

    I will list the files.
    <tool_call>
    {"name": "bash", "arguments": {"command": "ls -R"}}
    </tool_call>

`parse_tool_calls` also accepts an unterminated last tag and a bare JSON object with "name" and
"arguments" (or "parameters"), since small models drop the tags. Tool results go back as
`role: tool` messages; TOOLS_CHAT_TEMPLATE renders them as `<tool_response>` blocks in a user turn
(the Hermes / Qwen2.5 convention) and is used where a model's own template ignores `tools=`
(SmolLM2's does): in-process via `apply_chat_template(chat_template=...)`, on a server via
`vllm serve --chat-template FILE --enable-auto-tool-choice --tool-call-parser hermes`.

Example:
    parse_tool_calls('<tool_call>{"name": "submit", "arguments": {}}</tool_call>')
    # -> ([ToolCall(id='call_0', name='submit', arguments='{}')], [])
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

BASH_TOOL = {"type": "function", "function": {
    "name": "bash",
    "description": "Run one bash command in a fresh shell in the repository root; returns the return "
                   "code and the output (stdout and stderr). Directory changes do not persist.",
    "parameters": {"type": "object", "properties": {
        "command": {"type": "string", "description": "The bash command to run"}},
        "required": ["command"]}}}

SUBMIT_TOOL = {"type": "function", "function": {
    "name": "submit",
    "description": "Submit your fix and end the task. Call it once the repository holds your change.",
    "parameters": {"type": "object", "properties": {}, "required": []}}}

TOOLS = [BASH_TOOL, SUBMIT_TOOL]
TOOL_NAMES = ("bash", "submit")

_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


@dataclass
class ToolCall:
    """One call as the chat-completions API carries it: `arguments` is a JSON string."""
    id: str
    name: str
    arguments: str

    def to_message(self) -> dict:
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}


def parse_tool_calls(text: str) -> tuple[list[ToolCall], list[str]]:
    """Tool calls written as text -> (calls, errors). A call that is not a JSON object with a
    "name" is an error (named), not a call; no tags and no bare JSON -> ([], [])."""
    chunks = _TAGGED.findall(text) if "<tool_call>" in text else _bare_json(text)
    calls, errors = [], []
    for chunk in chunks:
        try:
            obj = json.loads(chunk)
        except json.JSONDecodeError as exc:
            errors.append(f"tool call is not valid JSON ({exc.msg}): {chunk[:200]!r}")
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            errors.append(f"tool call has no \"name\": {chunk[:200]!r}")
            continue
        args = obj.get("arguments", obj.get("parameters", {}))
        calls.append(ToolCall(f"call_{len(calls)}", obj["name"],
                              args if isinstance(args, str) else json.dumps(args)))
    return calls, errors


def text_before_calls(text: str) -> str:
    """The free text of a reply whose calls are written in tags (what the assistant message keeps as
    content; the calls go in its `tool_calls`)."""
    i = text.find("<tool_call>")
    return (text if i == -1 else text[:i]).strip()


def _bare_json(text: str) -> list[str]:
    """JSON objects in free text that look like calls ({"name": ...}); nested braces are skipped."""
    decoder, out, i = json.JSONDecoder(), [], text.find("{")
    while i != -1:
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict) and "name" in obj:
            out.append(text[i:end])
        i = text.find("{", end)
    return out


def template_renders_tools(tokenizer) -> bool:
    """Does the tokenizer's own chat template show the tools to the model? (Rendered with and without.)"""
    msgs = [{"role": "user", "content": "hi"}]
    try:
        with_tools = tokenizer.apply_chat_template(msgs, tools=TOOLS, tokenize=False, add_generation_prompt=True)
        plain = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    except Exception:
        return False
    return with_tools != plain and "submit" in with_tools


def write_chat_template(path: Path) -> Path:
    """TOOLS_CHAT_TEMPLATE to a file (for `vllm serve --chat-template FILE`)."""
    Path(path).write_text(TOOLS_CHAT_TEMPLATE)
    return Path(path)


# ChatML (SmolLM2, Qwen, ...) with Hermes-style tools: the schemas in the system turn, calls as
# <tool_call> JSON in the assistant turn, results as <tool_response> in a user turn.
TOOLS_CHAT_TEMPLATE = r"""{%- set sys = messages[0]['content'] if messages and messages[0]['role'] == 'system' else 'You are a helpful AI assistant.' -%}
<|im_start|>system
{{ sys }}
{%- if tools %}{{ '\n\n# Tools\n\nYou may call one of these functions. Their signatures are within <tools></tools> XML tags:\n<tools>' }}
{%- for tool in tools %}{{ '\n' + (tool | tojson) }}{% endfor %}{{ '\n</tools>\n\nFor a function call, return a JSON object with the function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>' }}
{%- endif %}<|im_end|>
{% for message in messages -%}
{%- if loop.first and message['role'] == 'system' -%}
{%- elif message['role'] == 'tool' -%}
{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}<|im_start|>user
{% endif -%}
<tool_response>
{{ message['content'] }}
</tool_response>
{% if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}<|im_end|>
{% endif -%}
{%- elif message['role'] == 'assistant' and message.get('tool_calls') -%}
<|im_start|>assistant
{% if message['content'] %}{{ message['content'] }}
{% endif -%}
{%- for call in message['tool_calls'] -%}
{%- set fn = call['function'] if call.get('function') else call -%}
<tool_call>
{"name": "{{ fn['name'] }}", "arguments": {{ fn['arguments'] if fn['arguments'] is string else fn['arguments'] | tojson }}}
</tool_call>
{% endfor -%}
<|im_end|>
{% else -%}
<|im_start|>{{ message['role'] }}
{{ message['content'] or '' }}<|im_end|>
{% endif -%}
{%- endfor -%}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif -%}
"""


if __name__ == "__main__":   # python -m envs.coding.tool_format tools.jinja  (for vllm serve --chat-template)
    import sys
    print(write_chat_template(Path(sys.argv[1] if len(sys.argv) > 1 else "tools.jinja")))
