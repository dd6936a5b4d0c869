"""The `hf` rollout engine: batched sampling on a transformers causal LM with a KV cache.

Each prompt is prefilled once and its KV cache forked for its n samples (`share_prefill`), so a
group of 8 costs one prefill, not 8. Finished rows are compacted out of the batch as they end.
Log-probs are those of the sampling distribution, log softmax(logits / temperature), which is what
the learner recomputes; the engine records the weight version it sampled with.

Example: HFEngine(model, tok).generate([GenerationRequest(prompt_ids=ids, n=8, max_new_tokens=16)])
"""
from __future__ import annotations

import torch

from rollout.types import Completion, GenerationRequest
from rollout.weight_sync import WeightBucket, apply_bucket, weights_checksum


class HFEngine:
    partial_updates = True  # update_weights may get a subset of the buckets (applied in place)

    def __init__(self, model, tokenizer, max_batch_samples: int = 256, share_prefill: bool = True):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch_samples = max_batch_samples
        self.share_prefill = share_prefill
        self.weight_version = 0
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.eos_ids = stop_token_ids(tokenizer, model)

    # -- engine protocol -------------------------------------------------------------------
    def generate(self, requests: list[GenerationRequest], seed: int | None = None) -> list[Completion]:
        gen = torch.Generator().manual_seed(seed if seed is not None else torch.seed() % 2**62)
        out: list[Completion] = []
        for chunk in self._chunks(requests):
            out.extend(self._generate_chunk(chunk, gen))
        return out

    def update_weights(self, buckets: list[WeightBucket], version: int) -> None:
        params = dict(self.model.named_parameters())
        for b in buckets:
            apply_bucket(params, b)
        self.weight_version = version

    def serving_dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def weights_checksum(self, dtype: torch.dtype | None = None) -> int:
        """`rollout.weight_sync.weights_checksum` of the weights this engine samples with."""
        return weights_checksum(self.model.parameters(), dtype)

    def sleep(self) -> None:
        """Colocated mode, while the learners train: weights to host memory (the KV cache lives per call).
        On a CPU device host memory is the device: nothing moves."""
        self._device = next(self.model.parameters()).device
        if self._device.type != "cpu":
            self.model.to("cpu")
            torch.cuda.empty_cache()
        self._sleeping = True

    def wake(self) -> None:
        if getattr(self, "_sleeping", False) and self._device.type != "cpu":
            self.model.to(self._device)
        self._sleeping = False

    def is_sleeping(self) -> bool:
        return bool(getattr(self, "_sleeping", False))

    # -- internals -------------------------------------------------------------------------
    def _chunks(self, requests):
        chunk, size = [], 0
        for r in requests:
            if chunk and size + r.n > self.max_batch_samples:
                yield chunk
                chunk, size = [], 0
            chunk.append(r)
            size += r.n
        if chunk:
            yield chunk

    @torch.no_grad()
    def _generate_chunk(self, reqs: list[GenerationRequest], gen: torch.Generator) -> list[Completion]:
        counts = torch.tensor([r.n for r in reqs])
        prompts = [r.prompt_ids for r in reqs] if self.share_prefill else \
            [r.prompt_ids for r in reqs for _ in range(r.n)]
        dev = next(self.model.parameters()).device  # sampling stays on the CPU generator: same draws anywhere
        input_ids, attn = (t.to(dev) for t in left_pad(prompts, self.pad_id))
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=input_ids, attention_mask=attn, position_ids=pos,
                         use_cache=True, logits_to_keep=1)
        cache, logits = out.past_key_values, out.logits[:, -1, :].float().cpu()
        if self.share_prefill:
            rows = torch.repeat_interleave(torch.arange(len(reqs)), counts)
            cache.batch_select_indices(rows.to(dev))
            logits, attn, pos = logits[rows], attn[rows.to(dev)], pos[rows.to(dev)]
        owner = torch.repeat_interleave(torch.arange(len(reqs)), counts)  # request index per row
        temp = torch.tensor([reqs[i].temperature for i in owner.tolist()]).unsqueeze(1)
        top_p = torch.tensor([reqs[i].top_p for i in owner.tolist()])
        cap = torch.tensor([reqs[i].max_new_tokens for i in owner.tolist()])
        n_rows = len(owner)
        tokens: list[list[int]] = [[] for _ in range(n_rows)]
        lps: list[list[float]] = [[] for _ in range(n_rows)]
        reason = ["length"] * n_rows
        live = torch.arange(n_rows)  # original row index of each batch row
        next_pos = pos[:, -1] + 1
        eos = torch.tensor(sorted(self.eos_ids))
        step = 0
        while len(live):
            greedy = temp.squeeze(1) == 0
            logp = torch.log_softmax(logits / torch.where(greedy[:, None], 1.0, temp), dim=-1)
            tok = sample(logp, top_p, gen)
            if bool(greedy.any()):  # temperature 0: argmax, log-probs of the untempered logits
                tok = torch.where(greedy, logp.argmax(-1), tok)
            tok_lp = logp.gather(1, tok[:, None]).squeeze(1)
            done = torch.isin(tok, eos) | (step + 1 >= cap)
            for j, row in enumerate(live.tolist()):
                tokens[row].append(int(tok[j]))
                lps[row].append(float(tok_lp[j]))
                if torch.isin(tok[j], eos):
                    reason[row] = "stop"
                elif reqs[owner[row]].stop and hits_stop(self.tokenizer, tokens[row], reqs[owner[row]].stop):
                    reason[row], done[j] = "stop", True
            step += 1
            keep = (~done).nonzero().squeeze(1)
            if len(keep) == 0:
                break
            if len(keep) < len(live):
                cache.batch_select_indices(keep.to(dev))
                live, tok, attn, next_pos = live[keep], tok[keep], attn[keep.to(dev)], next_pos[keep.to(dev)]
                temp, top_p, cap = temp[keep], top_p[keep], cap[keep]
            attn = torch.cat([attn, torch.ones(len(live), 1, dtype=attn.dtype, device=dev)], dim=1)
            out = self.model(input_ids=tok[:, None].to(dev), attention_mask=attn, position_ids=next_pos[:, None],
                             past_key_values=cache, use_cache=True)
            cache, logits = out.past_key_values, out.logits[:, -1, :].float().cpu()
            next_pos = next_pos + 1
        texts = self.tokenizer.batch_decode(tokens, skip_special_tokens=True)
        return [Completion(request_id=reqs[owner[i]].request_id, token_ids=tokens[i], logprobs=lps[i],
                           text=texts[i], finish_reason=reason[i], weight_version=self.weight_version)
                for i in range(n_rows)]


def stop_token_ids(tokenizer, model) -> set[int]:
    ids = set()
    for tid in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(tid, int):
            ids.add(tid)
        elif isinstance(tid, (list, tuple)):
            ids.update(tid)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    return ids


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """-> input_ids [B, L], attention_mask [B, L] with padding on the left."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids, mask


def sample(logp: torch.Tensor, top_p: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Samples one token per row from log-probs [B, V]; nucleus filtering where top_p < 1.

    Inverse-CDF sampling (one uniform per row, a cumsum and a binary search): on CPU it is several
    times faster than torch.multinomial over a 49k vocabulary, which draws one exponential per token.
    """
    probs = logp.exp()
    if bool((top_p < 1).any()):
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = (sorted_p.cumsum(-1) - sorted_p) > top_p[:, None]
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(1, order, sorted_p)
    cdf = probs.cumsum(-1)
    u = torch.rand(probs.shape[0], 1, generator=gen, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u).squeeze(1).clamp(max=probs.shape[1] - 1)


def hits_stop(tokenizer, token_ids: list[int], stop: list[str]) -> bool:
    tail = tokenizer.decode(token_ids[-8:], skip_special_tokens=True)
    return any(s in tail for s in stop)
