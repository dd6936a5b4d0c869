"""Chat models the agent can drive: scripted/replayed (tests), an OpenAI-compatible HTTP endpoint,
and the in-process policy engine (`generate(list[GenerationRequest]) -> list[Completion]`).

All implement `chat(messages) -> (text, input_tokens, output_tokens)`. Models that cannot count
tokens use approx_tokens = ceil(chars / 4), applied to the whole history each turn (it is resent).

Example:
    model = OpenAIChatModel("http://localhost:8000/v1", "Qwen2.5-Coder-7B"); model.chat(msgs)
"""
from __future__ import annotations

import json
import math
import os
import random
import urllib.error
import urllib.request

from rollout.types import GenerationRequest

SUBMIT = "```bash\necho COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\n```"


def approx_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def history_tokens(messages: list[dict]) -> int:
    return sum(approx_tokens(m["content"]) + 4 for m in messages)


class ScriptedModel:
    """Replies from a fixed list, in order; after the list it submits."""

    def __init__(self, replies: list[str]):
        self.replies = list(replies)
        self.calls = 0

    def chat(self, messages: list[dict]) -> tuple[str, int, int]:
        reply = self.replies[self.calls] if self.calls < len(self.replies) else SUBMIT
        self.calls += 1
        return reply, history_tokens(messages), approx_tokens(reply)


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


class OpenAIChatModel:
    """Any OpenAI-compatible /chat/completions endpoint (vLLM, SGLang, llama.cpp server, ...)."""

    def __init__(self, base_url: str, model: str, temperature: float = 0.0, max_tokens: int = 1024,
                 timeout_s: float = 300.0, api_key: str | None = None):
        url = base_url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model, self.temperature, self.max_tokens = model, temperature, max_tokens
        self.timeout_s = timeout_s
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")

    def chat(self, messages: list[dict]) -> tuple[str, int, int]:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": self.temperature,
                           "max_tokens": self.max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                data = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"endpoint {self.url} answered {exc.code}: {exc.read()[:300]!r}") from exc
        text = data["choices"][0]["message"].get("content") or ""
        usage = data.get("usage") or {}
        return (text, int(usage.get("prompt_tokens", history_tokens(messages))),
                int(usage.get("completion_tokens", approx_tokens(text))))


class EngineChatModel:
    """The in-process policy engine behind the chat protocol.

    The history is chat-templated with the policy's tokenizer each turn; input tokens = prompt length,
    output tokens = completion length (exact, from the engine).
    """

    def __init__(self, engine, tokenizer, max_new_tokens: int = 512, temperature: float = 0.7):
        self.engine, self.tokenizer = engine, tokenizer
        self.max_new_tokens, self.temperature = max_new_tokens, temperature

    def chat(self, messages: list[dict]) -> tuple[str, int, int]:
        prompt_ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                        tokenize=True)
        if isinstance(prompt_ids, dict) or hasattr(prompt_ids, "input_ids"):
            prompt_ids = prompt_ids["input_ids"]
        prompt_ids = [int(t) for t in prompt_ids]
        req = GenerationRequest(prompt_ids=prompt_ids, n=1, max_new_tokens=self.max_new_tokens,
                                temperature=self.temperature)
        comp = self.engine.generate([req])[0]
        text = comp.text or self.tokenizer.decode(comp.token_ids, skip_special_tokens=True)
        return text, len(prompt_ids), len(comp.token_ids)
