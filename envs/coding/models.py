"""Chat models the agent can drive: scripted/replayed (tests), an OpenAI-compatible server
(envs/coding/openai_client.py, re-exported here) and the in-process policy engine
(`generate(list[GenerationRequest]) -> list[Completion]`).

All implement `chat(messages) -> (text, input_tokens, output_tokens)` (bash-in-markdown agent) and
`chat_tools(messages, tools) -> ChatReply` (tool-calling agent). Models that cannot count tokens use
approx_tokens = ceil(chars / 4), applied to the whole history each turn (it is resent).

Example:
    model = OpenAIChatModel("http://localhost:8000/v1", "Qwen2.5-Coder-7B"); model.chat(msgs)
"""
from __future__ import annotations

import json
import random
import re

from envs.coding.chat import ChatReply, api_messages, approx_tokens, history_tokens
from envs.coding.openai_client import OpenAIChatModel
from envs.coding.tool_format import (TOOLS_CHAT_TEMPLATE, ToolCall, parse_tool_calls, template_renders_tools,
                                     text_before_calls)
from rollout.types import GenerationRequest

__all__ = ["EngineChatModel", "OpenAIChatModel", "ScriptedModel", "approx_tokens", "history_tokens",
           "oracle_replies", "replay_profile", "reply_from_text"]

SUBMIT = "```bash\necho COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\n```"
_BLOCK = re.compile(r"```bash\s*\n(.*?)\n```", re.DOTALL)


class ScriptedModel:
    """Replies from a fixed list, in order; after the list it submits."""

    def __init__(self, replies: list[str]):
        self.replies = list(replies)
        self.calls = 0

    def chat(self, messages: list[dict]) -> tuple[str, int, int]:
        reply = self.replies[self.calls] if self.calls < len(self.replies) else SUBMIT
        self.calls += 1
        return reply, history_tokens(messages), approx_tokens(reply)

    def chat_tools(self, messages: list[dict], tools: list[dict]) -> ChatReply:
        """The same script as tool calls: a bash block -> `bash`, the submit echo -> `submit`;
        a reply with no block -> text only (no call)."""
        text, n_in, n_out = self.chat(messages)
        blocks = _BLOCK.findall(text)
        if len(blocks) != 1:
            return ChatReply(text, [], n_in, n_out, "stop")
        thought = text.split("```bash", 1)[0].strip()
        cmd = blocks[0].strip()
        call = (ToolCall(f"call_{self.calls}", "submit", "{}") if "COMPLETE_TASK_AND_SUBMIT" in cmd else
                ToolCall(f"call_{self.calls}", "bash", json.dumps({"command": cmd})))
        return ChatReply(thought, [call], n_in, n_out, "tool_calls")


def bash(thought: str, command: str) -> str:
    return f"THOUGHT: {thought}\n\n```bash\n{command}\n```"


def oracle_replies(task, explore_turns: int = 1, verify_turns: int = 0, solve: bool = True,
                   flail_turns: int = 0) -> list[str]:
    """A replayed agent's script: explore, apply the gold patch (if `solve`), verify, submit.

    Unsolved runs flail (read files, run tests) for `flail_turns` turns and submit no patch.
    Example: oracle_replies(task, 2, 1) -> [ls, cat, apply gold patch, run tests]  (then submit)
    """
    files = sorted((task.repo_files or {}).keys()) or ["."]
    looks = [bash("List the repository.", "ls -R | head -50")]
    looks += [bash(f"Read {f}.", f"cat {f}") for f in files if f.endswith(".py")]
    looks.append(bash("Search for the function.", "grep -rn 'def ' --include=*.py . | head -40"))
    checks = [bash("Review my change.", "git diff"), bash("Check the status.", "git status --short"),
              bash("Look at the changed file again.", "git diff --stat && git log --oneline | head -3")]
    out = [looks[i % len(looks)] for i in range(explore_turns)]
    if not solve:
        return out + [looks[i % len(looks)] for i in range(flail_turns)]
    out.append(bash("Apply the fix.", f"git apply <<'PATCH_EOF'\n{task.patch}PATCH_EOF"))
    return out + [checks[i % len(checks)] for i in range(verify_turns)]


def replay_profile(instance_id: str, seed: int = 0) -> dict:
    """Per-task behaviour of the replayed agent (deterministic in instance_id and seed).

    80% solve: 70% of those explore 1-6 turns, 30% explore 7-18 (a long tail that tight caps cut),
    then apply the fix and verify 0-8 turns. 20% flail 8-20 turns and submit no patch.
    """
    rng = random.Random(f"{seed}:{instance_id}")
    if rng.random() < 0.8:
        explore = rng.randint(1, 6) if rng.random() < 0.7 else rng.randint(7, 18)
        return {"explore_turns": explore, "verify_turns": rng.randint(0, 8), "solve": True}
    return {"explore_turns": rng.randint(2, 6), "flail_turns": rng.randint(8, 20), "solve": False}


class EngineChatModel:
    """The in-process policy engine behind the chat protocol.

    The history is chat-templated with the policy's tokenizer each turn; input tokens = prompt length,
    output tokens = completion length (exact, from the engine).
    """

    def __init__(self, engine, tokenizer, max_new_tokens: int = 512, temperature: float = 0.7):
        self.engine, self.tokenizer = engine, tokenizer
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self._own_tools: bool | None = None

    def _generate(self, prompt_ids) -> tuple[str, int, int]:
        if isinstance(prompt_ids, dict) or hasattr(prompt_ids, "input_ids"):
            prompt_ids = prompt_ids["input_ids"]
        prompt_ids = [int(t) for t in prompt_ids]
        req = GenerationRequest(prompt_ids=prompt_ids, n=1, max_new_tokens=self.max_new_tokens,
                                temperature=self.temperature)
        comp = self.engine.generate([req])[0]
        text = comp.text or self.tokenizer.decode(comp.token_ids, skip_special_tokens=True)
        return text, len(prompt_ids), len(comp.token_ids)

    def chat(self, messages: list[dict]) -> tuple[str, int, int]:
        return self._generate(self.tokenizer.apply_chat_template(
            api_messages(messages), add_generation_prompt=True, tokenize=True))

    def chat_tools(self, messages: list[dict], tools: list[dict]) -> ChatReply:
        """Rendered with the tokenizer's own template and `tools=` when that template shows tools,
        else with TOOLS_CHAT_TEMPLATE (Hermes style); calls parsed from the text (tool_format.py)."""
        if self._own_tools is None:
            self._own_tools = template_renders_tools(self.tokenizer)
        extra = {} if self._own_tools else {"chat_template": TOOLS_CHAT_TEMPLATE}
        text, n_in, n_out = self._generate(self.tokenizer.apply_chat_template(
            api_messages(messages), tools=tools, add_generation_prompt=True, tokenize=True, **extra))
        return reply_from_text(text, n_in, n_out)


def reply_from_text(text: str, n_in: int, n_out: int) -> ChatReply:
    """A sampled text as a tool-calling reply: its <tool_call> calls parsed, the text before them kept."""
    calls, errors = parse_tool_calls(text)
    return ChatReply(text_before_calls(text) if calls else text, calls, n_in, n_out, None, errors)
