"""The one prompt encoder: chat template + generation prompt, shared by GRPO, PPO, DPO, V0 and eval,
so a prompt is tokenised identically wherever it is scored, trained on or embedded.

Example: ids = chat_prompt_ids(tok, "What is 2 + 3?", system_prompt=None)
"""
from __future__ import annotations

from allocation.curriculum import with_length_budget


def chat_prompt_ids(tok, prompt: str | list[dict], system_prompt: str | None = None) -> list[int]:
    """The prompt as the policy sees it: a user message (or a list of chat messages) under the
    tokenizer's chat template, with the generation prompt appended."""
    msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system_prompt and msgs[0]["role"] != "system":
        msgs = [{"role": "system", "content": system_prompt}] + msgs
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    return list(enc["input_ids"] if hasattr(enc, "keys") else enc)


class PromptEncoder:
    """`chat_prompt_ids` of an example (optionally with a curriculum length budget written into the
    prompt), cached per (example key, budget)."""

    def __init__(self, tokenizer, system_prompt: str | None = None):
        self.tok, self.system_prompt, self._cache = tokenizer, system_prompt, {}

    def __call__(self, ex, length_budget: int | None = None) -> list[int]:
        key = (ex.key, length_budget)
        if key not in self._cache:
            prompt = ex.prompt if length_budget is None else _with_budget(ex.prompt, length_budget)
            self._cache[key] = chat_prompt_ids(self.tok, prompt, self.system_prompt)
        return self._cache[key]


def _with_budget(prompt: str | list[dict], budget: int) -> str | list[dict]:
    """The length budget written into a string prompt, or into the last user message of a chat."""
    if isinstance(prompt, str):
        return with_length_budget(prompt, budget)
    last = max(i for i, m in enumerate(prompt) if m["role"] == "user")
    return [dict(m, content=with_length_budget(m["content"], budget)) if i == last else m
            for i, m in enumerate(prompt)]
