"""Requests and completions: the contract every rollout engine (hf, vllm) speaks.

An engine implements:
    generate(requests: list[GenerationRequest]) -> list[Completion]   # n completions per request, in order
    update_weights(named_tensors, version: int) -> None               # overwrite, never add
    sleep() / wake()                                                  # no-ops where nothing can be freed
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GenerationRequest:
    """One prompt to sample `n` completions for.

    prompt_ids: token ids of the (chat-templated) prompt.
    stop: extra stop strings; the tokenizer's eos ids always stop.
    """
    prompt_ids: list[int]
    n: int = 1
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    request_id: int = 0


@dataclass
class Completion:
    """One sampled completion.

    token_ids: generated ids (stop/eos token included when it ended the sample).
    logprobs: log-probs of the distribution the token was sampled from, one per token in token_ids:
              log softmax(logits / temperature) under the engine's weights (the tempered
              distribution; temperature 0 = greedy reports the untempered log softmax(logits)).
    finish_reason: "stop" (eos or stop string) or "length".
    weight_version: the engine's weight version when it sampled this.
    """
    request_id: int
    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str
    weight_version: int = 0
