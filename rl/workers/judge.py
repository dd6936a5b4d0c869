"""An LLM judge as a reward: each completion is graded by a model behind an OpenAI-compatible
`POST {base_url}/chat/completions` endpoint (vLLM, llama.cpp, TGI, an API), over httpx.

Per sample: the judge's prompt template filled with {prompt}, {completion}, {answer} and the dataset
columns, sent as one user message; the answer parsed into a score (`score_0_10`: the first number,
0..10, scaled to [0, 1]; `yes_no`: YES -> 1.0, NO -> 0.0). Each call has its own timeout; timeouts,
connection errors, 429 and 5xx are retried `max_retries` times with exponential backoff
(backoff_s * 2**k); an unparseable answer, a 4xx or a call out of retries is that sample's error
(the caller scores it on_error and counts it). A batch runs `max_concurrency` calls at a time.

    judge_batch(JudgeConfig(base_url="http://127.0.0.1:8000/v1", model="m"), ["2+2?"], ["4"], {}) -> [1.0]
"""
from __future__ import annotations

import math
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from envs.sources import prompt_text
from rl.config_rewards import JudgeConfig

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_WORD = re.compile(r"[A-Za-z]+")


class JudgeError(Exception):
    """The judge could not give a score for a sample (unparseable answer, HTTP error, out of retries)."""


def parse_judgement(text: str, answer_format: str) -> float:
    """The judge's answer -> a score in [0, 1]; JudgeError when it holds none.
    parse_judgement("Score: 7/10", "score_0_10") -> 0.7; parse_judgement("Yes.", "yes_no") -> 1.0"""
    if answer_format == "yes_no":
        words = [w.upper() for w in _WORD.findall(text)]
        if words and words[0] in ("YES", "NO"):
            return 1.0 if words[0] == "YES" else 0.0
        raise JudgeError(f"judge answer {text[:200]!r} starts with neither YES nor NO")
    m = _NUMBER.search(text)
    if m is None:
        raise JudgeError(f"judge answer {text[:200]!r} holds no number")
    value = float(m.group())
    if not 0.0 <= value <= 10.0:
        raise JudgeError(f"judge answer {text[:200]!r}: {value} is outside 0..10")
    return value / 10.0


def judge_message(template: str, prompt, completion: str, columns: dict) -> str:
    """The template filled for one sample (columns: this sample's dataset values)."""
    return template.format_map({**columns, "prompt": prompt_text(prompt), "completion": completion})


def ask(client: httpx.Client, j: JudgeConfig, content: str, headers: dict, sleep=time.sleep) -> str:
    """One grading request with retries and exponential backoff. -> the judge's answer text"""
    body = {"model": j.model, "messages": [{"role": "user", "content": content}],
            "max_tokens": j.max_tokens, "temperature": j.temperature}
    url = j.base_url.rstrip("/") + "/chat/completions"
    last = None
    for attempt in range(j.max_retries + 1):
        if attempt:
            sleep(j.backoff_s * 2 ** (attempt - 1))
        try:
            r = client.post(url, json=body, headers=headers, timeout=j.timeout_s)
        except httpx.TimeoutException as e:
            last = JudgeError(f"no answer within timeout_s={j.timeout_s} from {url} ({type(e).__name__})")
            continue
        except httpx.TransportError as e:
            last = JudgeError(f"cannot reach {url}: {type(e).__name__}: {e}")
            continue
        if r.status_code in RETRY_STATUS:
            last = JudgeError(f"{url} answered HTTP {r.status_code}: {r.text[:200]}")
            continue
        if r.status_code != 200:
            raise JudgeError(f"{url} answered HTTP {r.status_code} (not retried): {r.text[:200]}")
        try:
            return r.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise JudgeError(f"{url} answered 200 without choices[0].message.content: {r.text[:200]}") from None
    raise JudgeError(f"gave up after {j.max_retries + 1} calls: {last}")


def judge_batch(j: JudgeConfig, prompts: list, completions: list[str], columns: dict) -> list[float | Exception]:
    """Grades every sample, `max_concurrency` calls at a time. -> per sample a score in [0, 1] or the
    exception that prevented one."""
    headers = {}
    if j.api_key_env:
        key = os.environ.get(j.api_key_env)
        if not key:
            raise JudgeError(f"judge.api_key_env: environment variable {j.api_key_env} is not set")
        headers["Authorization"] = f"Bearer {key}"

    def one(i: int):
        try:
            content = judge_message(j.prompt_template, prompts[i], completions[i],
                                    {k: v[i] for k, v in columns.items()})
            return parse_judgement(ask(client, j, content, headers), j.answer_format)
        except Exception as e:  # noqa: BLE001 - a sample's failure is its own, scored on_error by the caller
            return e

    limits = httpx.Limits(max_connections=j.max_concurrency, max_keepalive_connections=j.max_concurrency)
    with httpx.Client(limits=limits) as client, ThreadPoolExecutor(j.max_concurrency) as pool:
        return list(pool.map(one, range(len(completions))))


def batch_deadline_s(j: JudgeConfig, n: int) -> float:
    """The longest a batch of n samples can take when every call times out and is retried."""
    per_sample = (j.max_retries + 1) * j.timeout_s + j.backoff_s * (2 ** j.max_retries - 1)
    return math.ceil(n / j.max_concurrency) * per_sample
