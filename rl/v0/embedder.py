"""V0's frozen prompt embedder: the policy's own model (or any HF model) pooled over prompt tokens.

e(x) = masked mean of the last hidden layer over `chat_prompt_ids(tok, x, system_prompt)`, the
project's one prompt encoder, so a prompt is embedded exactly as the policy is trained on it.

Example:
    embedder = get_embedder("tiny-llama")
    embedder(["What is 1 + 2?", "What is 3 + 4?"])   # -> [2, 64]
"""
from __future__ import annotations

from typing import Sequence

import torch

from rl.data.prompts import chat_prompt_ids
from rl.run.logging import progress
from rl.workers.models import load_policy, load_tokenizer, resolve_model_path


class _NoBar:
    update = set_postfix = close = staticmethod(lambda *_, **__: None)


def optional_progress(total: int, desc: str, show: bool):
    """A progress bar when `show`, else an object with the same no-op update/set_postfix/close."""
    return progress(total, desc) if show else _NoBar()


def _load_embedding_model(name: str):
    """(model, tokenizer): a causal LM through `load_policy`, else any HF encoder (AutoModel)."""
    try:
        return load_policy(name)
    except ValueError:  # not a causal LM (e.g. a BERT-style encoder folder)
        from transformers import AutoModel
        model = AutoModel.from_pretrained(resolve_model_path(name), dtype=torch.float32).eval()
        return model, load_tokenizer(name)


class PromptEmbedder:
    """Frozen prompt embeddings: masked mean of the last hidden layer over the prompt tokens.

    e(x) = (1/L) sum_t h_t^{last}(chat_template(x)), no grad, batched with right padding (causal
    models: padding at the end changes no real token's state), cached per prompt text.
    Shapes: prompts [N] -> [N, dim]. Example: PromptEmbedder("tiny-llama")(["What is 1 + 2?"]) -> [1, 64]
    """

    def __init__(self, name: str, system_prompt: str | None = None, batch_size: int = 16):
        self.name, self.system_prompt, self.batch_size = name, system_prompt, int(batch_size)
        model, self.tokenizer = _load_embedding_model(name)
        self.model = getattr(model, "base_model", model)  # the trunk: no vocab-sized logits
        self.dim = int(model.config.hidden_size)
        self.pad_id = self.tokenizer.pad_token_id or 0
        self._cache: dict[str, torch.Tensor] = {}

    def _ids(self, prompt: str) -> list[int]:
        if getattr(self.tokenizer, "chat_template", None):
            return chat_prompt_ids(self.tokenizer, prompt, self.system_prompt)
        return list(self.tokenizer(prompt)["input_ids"])  # encoders without a chat template

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], show_progress: bool = False) -> torch.Tensor:
        missing = sorted({p for p in prompts if p not in self._cache}, key=len)
        bar = optional_progress(len(missing), f"embed {self.name}", show_progress and bool(missing))
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start:start + self.batch_size]
            ids = [self._ids(p) for p in chunk]
            width = max(len(x) for x in ids)
            input_ids = torch.tensor([x + [self.pad_id] * (width - len(x)) for x in ids])
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
            hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1)             # [b, dim]
            for p, e in zip(chunk, pooled.float()):
                self._cache[p] = e.clone()
            bar.update(len(chunk))
        bar.close()
        if not prompts:
            return torch.zeros(0, self.dim)
        return torch.stack([self._cache[p] for p in prompts])


_EMBEDDERS: dict[tuple, PromptEmbedder] = {}


def get_embedder(name: str, system_prompt: str | None = None) -> PromptEmbedder:
    """One `PromptEmbedder` per (name, system prompt) per process, so its cache is shared."""
    key = (name, system_prompt)
    if key not in _EMBEDDERS:
        _EMBEDDERS[key] = PromptEmbedder(name, system_prompt)
    return _EMBEDDERS[key]
