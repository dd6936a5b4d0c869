"""Supervised fine-tuning data: chat conversations -> token ids under the model's chat template and
a loss mask that is 1 exactly on the assistant's tokens.

Sources are what envs/sources.py reads (.jsonl / .json / .parquet, a datasets save_to_disk folder,
a hub id). A row is TRL's conversational SFT format,
    {"messages": [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"}]}
(the column name is `sft.messages_column`), or TRL's prompt/completion format: `prompt` (a string or
messages) + `completion` (a string or assistant messages).

The mask: the conversation is rendered once with the chat template; assistant turn i starts where
the template's rendering of turns[:i] plus the generation prompt ends (so its header, e.g.
`<|im_start|>assistant\\n`, is not trained on), and runs through the first end-of-turn token
(`tok.eos_token_id`, `<|im_end|>` for SmolLM2) after it, inclusive: the model learns to stop.
System and user turns and the template's scaffolding get 0.

Packing (`sft.packing`): conversations are concatenated, in order, into rows of at most
`max_seq_tokens`; `segment_ids` say which conversation each token belongs to, and the learner turns
them into position ids that restart per conversation and a block-diagonal causal attention mask,
so no token attends across a conversation boundary.

Example: ids, mask = encode_conversation(tok, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from envs.sources import as_prompt, column, read_rows
from rl.config import ConfigError
from rl.data.prompts import chat_prompt_ids


@dataclass
class TokenRows:
    """Training sequences. input_ids, loss_mask, segment_ids: [num_rows][len]. loss_mask 1 = an
    assistant token (a prediction target); segment_ids: the conversation within a packed row (all 0
    when unpacked)."""
    input_ids: list[list[int]] = field(default_factory=list)
    loss_mask: list[list[int]] = field(default_factory=list)
    segment_ids: list[list[int]] = field(default_factory=list)
    dropped: int = 0  # conversations with no assistant token left within max_seq_tokens

    def __len__(self) -> int:
        return len(self.input_ids)

    def select(self, idx: list[int]) -> "TokenRows":
        return TokenRows([self.input_ids[i] for i in idx], [self.loss_mask[i] for i in idx],
                         [self.segment_ids[i] for i in idx])

    def assistant_tokens(self) -> int:
        return sum(sum(m) for m in self.loss_mask)


def _template_ids(tok, messages: list[dict]) -> list[int]:
    enc = tok.apply_chat_template(messages, tokenize=True)
    return list(enc["input_ids"] if hasattr(enc, "keys") else enc)


def encode_conversation(tok, messages: list[dict], system_prompt: str | None = None
                        ) -> tuple[list[int], list[int]]:
    """-> (ids, loss_mask) of one conversation (see the module docstring for the mask).

    Example (SmolLM2): user "What is 2 + 3?", assistant "5" -> mask 1 on exactly ["5", "<|im_end|>"].
    """
    msgs = list(messages)
    if system_prompt and msgs[0]["role"] != "system":
        msgs = [{"role": "system", "content": system_prompt}] + msgs
    ids = _template_ids(tok, msgs)
    mask = [0] * len(ids)
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        if i == 0:
            raise ValueError("a conversation cannot open with an assistant turn (nothing to answer)")
        prefix = chat_prompt_ids(tok, msgs[:i])
        if ids[:len(prefix)] != prefix:
            raise ValueError("the chat template renders earlier turns differently once later turns follow "
                             "(not prefix-stable), so assistant tokens cannot be located")
        end = next((j for j in range(len(prefix), len(ids)) if ids[j] == tok.eos_token_id), len(ids) - 1)
        mask[len(prefix):end + 1] = [1] * (end + 1 - len(prefix))
    return ids, mask


def conversation(row: dict, messages_column: str, where: str) -> list[dict]:
    """The messages of one row: `messages_column`, or `prompt` + `completion` (strings or messages)."""
    try:
        value = column(row, messages_column)
    except KeyError:
        value = None
    if value is not None:
        msgs = as_prompt(value, where)
        if isinstance(msgs, str):
            raise ValueError(f"{where}: {messages_column!r} must be a list of {{role, content}} messages")
        return msgs
    if "prompt" in row and "completion" in row:
        prompt, completion = as_prompt(row["prompt"], where), as_prompt(row["completion"], where)
        as_msgs = lambda v, role: [{"role": role, "content": v}] if isinstance(v, str) else v  # noqa: E731
        return as_msgs(prompt, "user") + as_msgs(completion, "assistant")
    raise ValueError(f"{where}: no {messages_column!r} column, nor prompt + completion (columns: {sorted(row)})")


def load_conversations(source: str, split: str, messages_column: str, key: str) -> list[list[dict]]:
    """All conversations of a source; a bad row is a ConfigError naming `key` and the row."""
    try:
        rows = read_rows(source, split, key)
        convs = [conversation(r, messages_column, f"{key}: {source} row {i}") for i, r in enumerate(rows)]
    except (FileNotFoundError, ValueError) as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(key) else f"{key}: {msg}") from None
    if not convs:
        raise ConfigError(f"{key}: {source} holds no conversations")
    return convs


def split_conversations(convs: list, eval_fraction: float, seed: int) -> tuple[list, list]:
    """A seeded held-out slice (at least one conversation when eval_fraction > 0 and there are two)."""
    order = list(range(len(convs)))
    random.Random(seed).shuffle(order)
    n_eval = round(eval_fraction * len(convs))
    if eval_fraction > 0 and len(convs) >= 2:
        n_eval = min(max(1, n_eval), len(convs) - 1)
    held = set(order[:n_eval])
    return [c for i, c in enumerate(convs) if i not in held], [c for i, c in enumerate(convs) if i in held]


def encode_conversations(tok, convs: list[list[dict]], max_seq_tokens: int, system_prompt: str | None = None,
                         packing: bool = False) -> TokenRows:
    """Each conversation cut to max_seq_tokens (dropped, and counted, when no assistant token is
    left), then packed into rows of at most max_seq_tokens when `packing`."""
    out = TokenRows()
    for c in convs:
        ids, mask = encode_conversation(tok, c, system_prompt)
        ids, mask = ids[:max_seq_tokens], mask[:max_seq_tokens]
        if not any(mask):
            out.dropped += 1
            continue
        out.input_ids.append(ids)
        out.loss_mask.append(mask)
        out.segment_ids.append([0] * len(ids))
    if packing:
        out = pack(out, max_seq_tokens)
    return out


def pack(rows: TokenRows, max_seq_tokens: int) -> TokenRows:
    """Consecutive sequences concatenated into rows of at most max_seq_tokens (in order: a sequence
    that does not fit in the open row starts the next). segment_ids number them within a row."""
    out = TokenRows(dropped=rows.dropped)
    for ids, mask in zip(rows.input_ids, rows.loss_mask):
        if not out.input_ids or len(out.input_ids[-1]) + len(ids) > max_seq_tokens:
            out.input_ids.append([])
            out.loss_mask.append([])
            out.segment_ids.append([])
        seg = out.segment_ids[-1][-1] + 1 if out.segment_ids[-1] else 0
        out.input_ids[-1] += ids
        out.loss_mask[-1] += mask
        out.segment_ids[-1] += [seg] * len(ids)
    return out
