"""An OpenAI-compatible model server (vLLM, SGLang, llama.cpp server, ...) through the official
`openai` client, with retries, exponential backoff with jitter, and a per-request timeout.

Retried: connection errors, timeouts, HTTP 408 / 409 / 429 and 5xx. Wait before retry k (k = 0, 1, ...):
    delay_k = min(max_backoff_s, backoff_s * 2**k) * U(0.5, 1)          ("equal jitter")
After `max_retries` retries the call raises ModelUnavailable naming the URL, the attempts and the
last error; so do 401 / 403 / 404 at once (wrong key or model: no retry helps). Other 4xx (e.g. a
context longer than the server allows) raise RuntimeError: that trajectory ends, the run goes on.
The model name defaults to the first model the server lists (`GET /v1/models`).

Example:
    model = OpenAIChatModel("http://127.0.0.1:8000/v1", timeout_s=60, max_retries=4)
    text, n_in, n_out = model.chat([{"role": "user", "content": "hi"}])
"""
from __future__ import annotations

import json
import os
import random
import time
from typing import Callable

from envs.coding.chat import ChatReply, ModelUnavailable, api_messages, approx_tokens, history_tokens
from envs.coding.tool_format import ToolCall, parse_tool_calls, text_before_calls

_RETRY_STATUS = {408, 409, 429}
_FATAL_STATUS = {401, 403, 404}


def backoff_delay_s(retry_index: int, backoff_s: float, max_backoff_s: float, u: float) -> float:
    """Delay before retry `retry_index` (0-based); u in [0, 1) is the jitter draw.
    backoff_delay_s(2, 1.0, 30.0, 0.0) -> 2.0  (half of 4 s)."""
    return min(max_backoff_s, backoff_s * 2 ** retry_index) * (0.5 + 0.5 * u)


def _base_url(url: str) -> str:
    url = url.rstrip("/")
    return url[: -len("/chat/completions")] if url.endswith("/chat/completions") else url


class OpenAIChatModel:
    """`chat` (bash-in-markdown) and `chat_tools` (chat-completions tools API) over one server."""

    def __init__(self, base_url: str, model: str | None = None, temperature: float = 0.0,
                 max_tokens: int = 1024, timeout_s: float = 120.0, max_retries: int = 4,
                 backoff_s: float = 1.0, max_backoff_s: float = 30.0, api_key: str | None = None,
                 tool_choice: str = "auto", seed: int | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        try:
            import openai
        except ImportError as exc:
            raise ImportError("--model openai:<url> needs the `openai` package: "
                              "pip install 'rl-toolkit[swe]'") from exc
        self._openai = openai
        self.url = _base_url(base_url)
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        self.client = openai.OpenAI(base_url=self.url, api_key=key or "EMPTY", timeout=timeout_s,
                                    max_retries=0)   # retries are ours: counted, logged in the error
        self.model, self.temperature, self.max_tokens = model, temperature, max_tokens
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.tool_choice, self.seed, self._sleep = tool_choice, seed, sleep
        self._rng = random.Random(seed)

    def _call(self, what: str, fn):
        """fn() with retries; ModelUnavailable after the last one."""
        errors = self._openai
        start, last = time.monotonic(), None
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._sleep(backoff_delay_s(attempt - 1, self.backoff_s, self.max_backoff_s, self._rng.random()))
            try:
                return fn()
            except (errors.APIConnectionError, errors.APITimeoutError) as exc:   # timeout: a subclass
                last = f"{type(exc).__name__}: {exc}"
            except errors.APIStatusError as exc:
                code = exc.status_code
                if code in _FATAL_STATUS:
                    raise ModelUnavailable(f"model server {self.url} refused {what} with HTTP {code}: "
                                           f"{str(exc)[:300]}") from None
                if code < 500 and code not in _RETRY_STATUS:
                    raise RuntimeError(f"model server {self.url} answered HTTP {code}: {str(exc)[:300]}") from None
                last = f"HTTP {code}: {str(exc)[:200]}"
        raise ModelUnavailable(
            f"model server {self.url} unreachable: {what} failed {self.max_retries + 1} attempts "
            f"({self.max_retries} retries, timeout {self.timeout_s:g} s each) over "
            f"{time.monotonic() - start:.1f} s; last error: {last}")

    def model_name(self) -> str:
        if self.model is None:
            listed = self._call("GET /models", lambda: list(self.client.models.list()))
            if not listed:
                raise ModelUnavailable(f"model server {self.url} lists no models")
            self.model = listed[0].id
        return self.model

    def _complete(self, messages: list[dict], **extra):
        name = self.model_name()
        kwargs = dict(model=name, messages=api_messages(messages), temperature=self.temperature,
                      max_tokens=self.max_tokens, **extra)
        if self.seed is not None:
            kwargs["seed"] = self.seed
        return self._call("POST /chat/completions", lambda: self.client.chat.completions.create(**kwargs))

    def chat(self, messages: list[dict]) -> tuple[str, int, int]:
        resp = self._complete(messages)
        text = resp.choices[0].message.content or ""
        n_in, n_out = _usage(resp, messages, text)
        return text, n_in, n_out

    def chat_tools(self, messages: list[dict], tools: list[dict]) -> ChatReply:
        """One call with `tools=`; calls the server did not parse are looked for in the text."""
        resp = self._complete(messages, tools=tools, tool_choice=self.tool_choice)
        choice = resp.choices[0]
        msg, text = choice.message, choice.message.content or ""
        calls = [ToolCall(tc.id or f"call_{i}", tc.function.name, tc.function.arguments or "{}")
                 for i, tc in enumerate(msg.tool_calls or [])]
        errors: list[str] = []
        if not calls:
            calls, errors = parse_tool_calls(text)
            text = text_before_calls(text) if calls else text
        n_in, n_out = _usage(resp, messages, text + json.dumps([c.arguments for c in calls]))
        return ChatReply(text, calls, n_in, n_out, choice.finish_reason, errors)


def _usage(resp, messages: list[dict], text: str) -> tuple[int, int]:
    u = getattr(resp, "usage", None)
    if u is None or u.prompt_tokens is None:
        return history_tokens(messages), approx_tokens(text)
    return int(u.prompt_tokens), int(u.completion_tokens or 0)
