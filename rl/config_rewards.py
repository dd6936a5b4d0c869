"""The `rewards:` entries of the config tree: a rule function, a reward model or an LLM judge, each
with a weight. Exactly one of `fn` / `model` / `judge` per entry (an entry with none is the built-in
`exact_match`); `check_rewards_config` explains a bad entry by its dotted key (`rewards.1.model: ...`).

    rewards:
      - {fn: exact_match, weight: 1.0}
      - {model: path/to/reward-model, weight: 0.5, batch_size: 16}
      - {judge: {base_url: "http://127.0.0.1:8000/v1", model: judge-model}, weight: 0.5}
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Literal

from rl.data.mapping import ConfigError

JUDGE_PROMPT = ("Grade the reply to the request below for correctness and helpfulness.\n\nRequest:\n{prompt}\n\n"
                "Reply:\n{completion}\n\nAnswer with only an integer from 0 (worst) to 10 (best).")


@dataclass
class JudgeConfig:
    """An LLM judge behind an OpenAI-compatible `POST {base_url}/chat/completions` endpoint."""
    base_url: str = "http://127.0.0.1:8000/v1"  # up to and including /v1
    model: str = "judge"  # the served model's name, as the server lists it
    prompt_template: str = JUDGE_PROMPT  # fields: {prompt}, {completion}, {answer} and any dataset column
    answer_format: Literal["score_0_10", "yes_no"] = "score_0_10"  # 0..10 -> [0, 1]; YES -> 1, NO -> 0
    timeout_s: float = 30.0  # per HTTP call
    max_retries: int = 3  # after the first call, on timeouts, connection errors, 429 and 5xx
    backoff_s: float = 1.0  # wait before retry k: backoff_s * 2**k
    max_concurrency: int = 8  # calls in flight at once
    max_tokens: int = 16  # of the judge's answer
    temperature: float = 0.0
    api_key_env: str | None = None  # name of the environment variable holding the bearer token


@dataclass
class RewardConfig:
    fn: str | None = None  # built-in name, package.module:function or path/file.py:function (none set: exact_match)
    weight: float = 1.0
    style: Literal["trl", "verl"] = "trl"
    timeout_s: float = 10.0  # rule: per batch call; model: per batch_size samples
    workers: int = 1  # rule: the batch is split into this many Ray tasks scored in parallel
    on_error: float = 0.0  # score for a sample whose reward raised, returned NaN or timed out
    max_error_fraction: float = 0.5  # a step where more of the samples fail stops the run (exit 2)
    # model: a sequence-classification reward model (local HF folder or hub id) in its own Ray actor
    model: str | None = None
    batch_size: int = 16  # samples per forward
    label_index: int | None = None  # which output label; None: the model's single label
    output: Literal["logit", "softmax", "sigmoid"] = "logit"  # the label's raw logit or a probability
    max_length_tokens: int = 1024  # prompt + completion, longer inputs are cut from the left
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bfloat16 on CUDA, float32 on CPU
    num_gpus: float | None = None  # per actor; None: 1 when the cluster has GPUs, else 0
    num_cpus: float = 0.5  # per actor
    # judge: an LLM grading each completion over HTTP
    judge: JudgeConfig | None = None

    def __post_init__(self):
        if self.fn is None and self.model is None and self.judge is None:
            self.fn = "exact_match"

    @property
    def kind(self) -> Literal["fn", "model", "judge"]:
        return "model" if self.model is not None else "judge" if self.judge is not None else "fn"

    @property
    def label(self) -> str:
        """What the reward is, for messages: the function, the model or the judge's endpoint."""
        if self.kind == "judge":
            return f"judge {self.judge.model} at {self.judge.base_url}"
        return self.model if self.kind == "model" else self.fn


def check_rewards_config(rewards: list[RewardConfig]) -> None:
    """Cross-field checks of every `rewards:` entry."""
    if not rewards:
        raise ConfigError("rewards: at least one reward function is needed")
    for i, r in enumerate(rewards):
        key = f"rewards.{i}"
        given = [k for k in ("fn", "model", "judge") if getattr(r, k) is not None]
        if len(given) != 1:
            raise ConfigError(f"{key}: give exactly one of fn, model, judge (got {', '.join(given)})")
        if not 0.0 <= r.max_error_fraction <= 1.0:
            raise ConfigError(f"{key}.max_error_fraction: must be in [0, 1], got {r.max_error_fraction}")
        if not r.timeout_s > 0:
            raise ConfigError(f"{key}.timeout_s: must be > 0 seconds, got {r.timeout_s}")
        if r.workers < 1:
            raise ConfigError(f"{key}.workers: must be >= 1 (parallel Ray tasks per batch), got {r.workers}")
        if r.model is not None:
            _check_model(key, r)
        if r.judge is not None:
            _check_judge(f"{key}.judge", r.judge)


def _check_model(key: str, r: RewardConfig) -> None:
    if not r.model.strip():
        raise ConfigError(f"{key}.model: empty (a local HF folder or a hub id)")
    for name in ("batch_size", "max_length_tokens"):
        if getattr(r, name) <= 0:
            raise ConfigError(f"{key}.{name}: must be > 0, got {getattr(r, name)}")
    if r.label_index is not None and r.label_index < 0:
        raise ConfigError(f"{key}.label_index: must be >= 0 or null, got {r.label_index}")
    if r.num_gpus is not None and r.num_gpus < 0:
        raise ConfigError(f"{key}.num_gpus: must be >= 0 or null, got {r.num_gpus}")
    if r.num_cpus < 0:
        raise ConfigError(f"{key}.num_cpus: must be >= 0, got {r.num_cpus}")


def _check_judge(key: str, j: JudgeConfig) -> None:
    if not j.base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{key}.base_url: must start with http:// or https://, got {j.base_url!r}")
    if not j.model:
        raise ConfigError(f"{key}.model: empty (the served model's name)")
    for name in ("timeout_s", "max_concurrency", "max_tokens"):
        if not getattr(j, name) > 0:
            raise ConfigError(f"{key}.{name}: must be > 0, got {getattr(j, name)}")
    for name in ("max_retries", "backoff_s", "temperature"):
        if getattr(j, name) < 0:
            raise ConfigError(f"{key}.{name}: must be >= 0, got {getattr(j, name)}")
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(j.prompt_template) if f is not None}
    except ValueError as e:
        raise ConfigError(f"{key}.prompt_template: not a format string ({e}); write braces as {{{{ }}}}") from None
    if "completion" not in fields:
        raise ConfigError(f"{key}.prompt_template: must contain {{completion}} (fields: {{prompt}}, {{completion}}, "
                          "{answer}, dataset columns)")
    if any(not f.isidentifier() for f in fields):
        raise ConfigError(f"{key}.prompt_template: fields must be plain names, got {sorted(fields)}")
