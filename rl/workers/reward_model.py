"""Reward models: a Hugging Face sequence-classification model scoring (prompt, completion) pairs,
served in a Ray actor on the device Ray gave it (CUDA when it asked for a GPU, else the CPU).

The input is the prompt + completion under the model tokenizer's chat template when it has one
(prompt messages, or the prompt as one user turn, then the completion as the assistant turn; cut
from the left so the completion survives), else the tokenizer's own text pair encoding (prompt,
completion), which is plain concatenation for tokenizers without pair tokens. The score of a sample
is the logit of the model's single label, or of `label_index`, or that label's softmax / sigmoid
probability. Batched `batch_size` samples per forward.

    rm = RewardModel("path/to/rm", batch_size=16); rm.score(["What is 2+2?"], ["4"]) -> [1.73]
    actor = RewardModelActor.options(num_gpus=1).remote("path/to/rm")   # one per model reward, per run
"""
from __future__ import annotations

from pathlib import Path

import ray
import torch

from envs.sources import prompt_text
from rl.workers.devices import actor_device, placement_info


def model_source(name: str) -> str:
    """A local folder (expanded) or, when no such folder exists, a hub id as given."""
    path = Path(name).expanduser()
    return str(path) if path.exists() else name


def input_messages(prompt, completion: str) -> list[dict]:
    """The conversation a chat-template reward model reads: the prompt's messages (a string prompt is
    one user turn), then the completion as the assistant's turn."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    return messages + [{"role": "assistant", "content": completion}]


def pick_scores(logits: torch.Tensor, label_index: int, output: str) -> list[float]:
    """logits [B, num_labels] -> one score per sample: the label's logit, softmax or sigmoid probability."""
    logits = logits.float()
    if output == "softmax":
        return torch.softmax(logits, dim=-1)[:, label_index].tolist()
    if output == "sigmoid":
        return torch.sigmoid(logits[:, label_index]).tolist()
    return logits[:, label_index].tolist()


class RewardModel:
    def __init__(self, name: str, *, label_index: int | None = None, output: str = "logit", batch_size: int = 16,
                 max_length_tokens: int = 1024, dtype: str = "auto", num_threads: int | None = None):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        if num_threads:
            torch.set_num_threads(num_threads)
        self.device = actor_device()
        if dtype == "auto":
            dtype = "bfloat16" if self.device.type == "cuda" else "float32"
        source = model_source(name)
        self.tok = AutoTokenizer.from_pretrained(source)
        self.model = AutoModelForSequenceClassification.from_pretrained(source, dtype=getattr(torch, dtype))
        self.model.to(self.device).eval()
        n_labels = self.model.config.num_labels
        if label_index is None and n_labels != 1:
            raise ValueError(f"reward model {name!r} has {n_labels} labels ({self.model.config.id2label}); "
                             "set label_index to the one to score")
        self.label_index = 0 if label_index is None else label_index
        if not 0 <= self.label_index < n_labels:
            raise ValueError(f"label_index {label_index} outside the {n_labels} labels of reward model {name!r}")
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token or self.tok.unk_token
        if self.model.config.pad_token_id is None:  # decoder classifiers read the last non-pad token
            self.model.config.pad_token_id = self.tok.pad_token_id
        self.tok.padding_side = "right"
        self.chat = bool(getattr(self.tok, "chat_template", None))
        self.output, self.batch_size, self.max_length = output, batch_size, max_length_tokens

    def encode(self, prompts: list, completions: list[str]):
        """The tokenized inputs of a batch (see the module docstring for the two forms)."""
        kw = dict(padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        if self.chat:
            self.tok.truncation_side = "left"
            texts = [self.tok.apply_chat_template(input_messages(p, c), tokenize=False)
                     for p, c in zip(prompts, completions)]
            return self.tok(texts, add_special_tokens=False, **kw)
        return self.tok([prompt_text(p) for p in prompts], list(completions), **kw)

    @torch.no_grad()
    def score(self, prompts: list, completions: list[str]) -> list[float]:
        """One score per (prompt, completion), in order; NaN stays NaN (the caller counts it)."""
        out = []
        for i in range(0, len(completions), self.batch_size):
            enc = self.encode(prompts[i:i + self.batch_size], completions[i:i + self.batch_size]).to(self.device)
            out += pick_scores(self.model(**enc).logits, self.label_index, self.output)
        return out

    def info(self) -> dict:
        return {"num_labels": self.model.config.num_labels, "chat_template": self.chat,
                "architecture": type(self.model).__name__, **placement_info()}


RewardModelActor = ray.remote(max_restarts=0)(RewardModel)


class RewardModels:
    """The run's reward-model actors by reward index (`rewards.<i>`), one per model reward; started by
    `rl.build.reward_models_from`, owned by the Run, and killed by handle in `close()`."""

    def __init__(self, actors: dict[int, object] | None = None):
        self.actors = dict(actors or {})

    def get(self, index: int):
        return self.actors.get(index)

    def close(self) -> None:
        for actor in self.actors.values():
            ray.kill(actor)
        self.actors.clear()
