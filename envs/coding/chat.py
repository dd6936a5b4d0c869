"""What the agent loops and the chat models share: the reply of one model call and the error that ends
a whole run (not just one trajectory) when the model server is gone.

Models implement `chat(messages) -> (text, input_tokens, output_tokens)` (the bash-in-markdown
agent) and, for the tool-calling agent, `chat_tools(messages, tools) -> ChatReply`.

Example:
    reply = model.chat_tools(messages, TOOLS); reply.tool_calls[0].name   # -> "bash"
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from envs.coding.tool_format import ToolCall


class ModelUnavailable(RuntimeError):
    """The model server cannot answer at all (unreachable after every retry, or it refuses the model
    or the key): every later call would fail the same way, so the run stops with this one line."""


@dataclass
class ChatReply:
    text: str                      # the assistant's free text ("" when it only called tools)
    tool_calls: list[ToolCall] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str | None = None
    parse_errors: list[str] = field(default_factory=list)   # calls written as text that did not parse


def approx_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def history_tokens(messages: list[dict]) -> int:
    return sum(approx_tokens(m.get("content") or "") + 4 for m in messages)


def api_messages(messages: list[dict]) -> list[dict]:
    """The history as the API takes it: the trajectory's own `extra` metadata left out."""
    return [{k: v for k, v in m.items() if k != "extra"} for m in messages]
