"""The SFT learner: the policy + AdamW of `Learner` (checkpoints, HF export, weight export for the
greedy eval), with the next-token loss on assistant tokens only.

    loss = sum_t mask_t * -log pi(x_t | x_<t) / sum_t mask_t     over the step's rows (token mean)

mask_t is TokenRows.loss_mask (rl/data/sft.py): 1 on assistant content and its end-of-turn token.
Micro-batches are scaled by the step's total assistant tokens, so any micro-batch split gives the
same gradient. Packed rows (several conversations in one row) get position ids that restart per
conversation and a block-diagonal causal mask ([B, 1, T, T] booleans), so attention never crosses
a conversation boundary; a target whose previous token is in another conversation is not trained on.
The logits are computed only at target positions (the vocabulary projection is the largest tensor).

Example: SFTLearnerActor.remote("tiny-llama", microbatch_sequences=4).sft_step.remote(rows)
"""
from __future__ import annotations

import ray
import torch

from rl.data.sft import TokenRows
from rl.types import index_chunks, right_pad
from rl.workers.devices import compute_autocast
from rl.workers.learner import Learner

LEARNER_CPUS = 0.5


def packed_inputs(segment_ids: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Position ids [B, T] restarting at 0 per segment, and the block-diagonal causal attention mask
    [B, 1, T, T] (True = may attend) of right-padded rows; padding (valid 0) is its own segment.

    Example: segment_ids [[0, 0, 1]] -> positions [[0, 1, 0]]; token 2 attends only to itself.
    """
    seg = torch.where(valid.bool(), segment_ids, -1)
    T = seg.shape[1]
    starts = torch.ones_like(seg, dtype=torch.bool)
    starts[:, 1:] = seg[:, 1:] != seg[:, :-1]
    idx = torch.arange(T, device=seg.device).expand_as(seg)
    last_start = torch.cummax(torch.where(starts, idx, torch.zeros_like(idx)), dim=1).values
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool, device=seg.device))
    attn = (seg[:, :, None] == seg[:, None, :]) & causal
    return idx - last_start, attn[:, None]


class SFTLearner(Learner):
    """The policy + AdamW of rl.workers.learner.Learner, with the assistant-token NLL and its update."""

    def __init__(self, model_name: str, microbatch_sequences: int = 8, **learner_kwargs):
        super().__init__(model_name, **learner_kwargs)
        self.microbatch_sequences = microbatch_sequences

    def nll_sum(self, rows: TokenRows) -> tuple[torch.Tensor, int]:
        """Summed -log pi of the rows' assistant tokens, and how many there are."""
        ids, valid = (t.to(self.device) for t in right_pad(rows.input_ids, self.pad_id, torch.long))
        mask = right_pad(rows.loss_mask, 0, torch.long)[0].to(self.device)
        seg = right_pad(rows.segment_ids, -1, torch.long)[0].to(self.device)
        pos, attn = packed_inputs(seg, valid)
        target = (mask[:, 1:] > 0) & (seg[:, 1:] == seg[:, :-1])  # predicted from a token of the same conversation
        inner = getattr(self.model, "module", self.model)
        with compute_autocast(self.device, self.dtype, self.master_dtype):
            out = inner.get_decoder()(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False)
            logits = inner.get_output_embeddings()(out.last_hidden_state[:, :-1][target])  # [num_targets, vocab]
        nll = torch.nn.functional.cross_entropy(logits.float(), ids[:, 1:][target], reduction="sum")
        return nll, int(target.sum())

    def sft_step(self, rows: TokenRows) -> dict:
        """One optimizer step on `rows`, accumulated over micro-batches of `microbatch_sequences`.
        -> sft/loss (mean per assistant token), sft/tokens (assistant tokens), grad_norm, lr."""
        self.opt.zero_grad(set_to_none=True)
        total, loss_sum = max(1, rows.assistant_tokens()), 0.0
        for idx in index_chunks(len(rows), self.microbatch_sequences):
            nll, _ = self.nll_sum(rows.select(idx))
            (nll / total).backward()
            loss_sum += float(nll.detach())
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.opt.step()
        self.sched.step()
        return {"sft/loss": loss_sum / total, "sft/tokens": rows.assistant_tokens(), "grad_norm": float(grad_norm),
                "lr": self.sched.get_last_lr()[0]}

    def eval_loss(self, rows: TokenRows) -> dict:
        """Held-out mean NLL per assistant token (no update): eval/sft_loss, eval/sft_tokens."""
        if len(rows) == 0:
            return {}
        loss_sum, tokens = 0.0, 0
        with torch.no_grad():
            for idx in index_chunks(len(rows), self.microbatch_sequences):
                nll, n = self.nll_sum(rows.select(idx))
                loss_sum, tokens = loss_sum + float(nll), tokens + n
        return {"eval/sft_loss": loss_sum / max(1, tokens), "eval/sft_tokens": tokens}


SFTLearnerActor = ray.remote(num_cpus=LEARNER_CPUS, max_restarts=0)(SFTLearner)


class ActorSFT:
    """One SFT learner actor behind a blocking interface (as learner_group.ActorDPO)."""

    def __init__(self, actor):
        self.actor, self.actors = actor, [actor]

    def sft_step(self, rows: TokenRows) -> dict:
        return ray.get(self.actor.sft_step.remote(rows))

    def eval_loss(self, rows: TokenRows) -> dict:
        return ray.get(self.actor.eval_loss.remote(rows))

    def export_weights(self, bucket_bytes: int):
        return self.actor.export_weights.remote(bucket_bytes)

    def save_hf(self, path: str, tokenizer_name: str) -> str:
        return ray.get(self.actor.save_hf.remote(path, tokenizer_name))

    def close(self) -> None:
        pass
