"""What the driver and the workers pass between themselves."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


def right_pad(rows: list[list], pad_value, dtype: torch.dtype, width: int | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged rows right-padded into one tensor, and the 0/1 mask of the real entries. The one
    padding routine of the shell (batches, DPO pairs).

    rows: [n][len_i] -> (padded [n, width], mask [n, width] long); width defaults to max(1, max len_i).
    Example: right_pad([[5], [6, 7]], 2, torch.long) -> ([[5, 2], [6, 7]], [[1, 0], [1, 1]])
    """
    if width is None:
        width = max(1, max((len(r) for r in rows), default=0))
    out = torch.full((len(rows), width), pad_value, dtype=dtype)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r) > width:
            raise ValueError(f"row {i} has {len(r)} entries, more than width {width}")
        out[i, :len(r)] = torch.tensor(r, dtype=dtype)
        mask[i, :len(r)] = 1
    return out, mask


def index_chunks(n: int, size: int) -> list[list[int]]:
    """0..n-1 cut into consecutive chunks of at most `size` indices (micro-batches of items that
    are not RolloutBatches, e.g. DPO pairs; RolloutBatch.chunks packs whole groups instead).

    Example: index_chunks(5, 2) -> [[0, 1], [2, 3], [4]]
    """
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    return [list(range(i, min(n, i + size))) for i in range(0, n, size)]


@dataclass
class RolloutBatch:
    """One step's rollouts, grouped by prompt (group sizes may differ).

    prompt_ids: token ids of each distinct prompt (the group's shared prefix)  # [num_groups][len]
    completion_ids: right-padded completion tokens                             # [num_samples, max_len]
    completion_mask: 1 on real completion tokens                               # [num_samples, max_len]
    logprobs: engine log-probs of the sampled tokens (behaviour policy)        # [num_samples, max_len]
    group_ids: index into prompt_ids of each sample's prompt                   # [num_samples]
    rewards: total (weighted) reward per sample                                # [num_samples]
    finish_reasons: "stop" | "length" per sample
    turns: model calls per sample (1 for single-turn tasks)                     # [num_samples]
    weight_versions: engine weight version each sample was drawn with          # [num_samples]
    loss_mask: 1 on tokens the policy sampled (multi-turn: environment tokens   # [num_samples, max_len]
               are attended to but not trained on); None = completion_mask
    """
    prompt_ids: list[list[int]]
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    logprobs: torch.Tensor
    group_ids: torch.Tensor
    rewards: torch.Tensor
    finish_reasons: list[str] = field(default_factory=list)
    turns: torch.Tensor | None = None
    weight_versions: torch.Tensor | None = None
    loss_mask: torch.Tensor | None = None
    old_logprobs: torch.Tensor | None = None  # set by a rollout correction: the ratio's baseline [num_samples, max_len]
    loss_weights: torch.Tensor | None = None  # set by a rollout correction: per-token loss weights [num_samples, max_len]

    @property
    def num_samples(self) -> int:
        return int(self.completion_ids.shape[0])

    @property
    def train_mask(self) -> torch.Tensor:
        """Where the loss applies: `loss_mask` when set, else every completion token."""
        return self.completion_mask if self.loss_mask is None else self.loss_mask

    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(1)

    def to(self, device) -> "RolloutBatch":
        """The batch with every tensor on `device` (token-id lists stay lists)."""
        import dataclasses
        return dataclasses.replace(self, **{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)
                                            if isinstance(getattr(self, f.name), torch.Tensor)})

    def select_groups(self, keep_groups: list[int]) -> "RolloutBatch":
        """The sub-batch of the given prompt groups, renumbered 0..len(keep)-1."""
        remap = {g: i for i, g in enumerate(keep_groups)}
        rows = [i for i, g in enumerate(self.group_ids.tolist()) if g in remap]
        idx = torch.tensor(rows, dtype=torch.long)
        return RolloutBatch(
            prompt_ids=[self.prompt_ids[g] for g in keep_groups],
            completion_ids=self.completion_ids[idx], completion_mask=self.completion_mask[idx],
            logprobs=self.logprobs[idx],
            group_ids=torch.tensor([remap[g] for g in self.group_ids[idx].tolist()], dtype=torch.long),
            rewards=self.rewards[idx],
            finish_reasons=[self.finish_reasons[i] for i in rows] if self.finish_reasons else [],
            turns=None if self.turns is None else self.turns[idx],
            weight_versions=None if self.weight_versions is None else self.weight_versions[idx],
            loss_mask=None if self.loss_mask is None else self.loss_mask[idx],
            old_logprobs=None if self.old_logprobs is None else self.old_logprobs[idx],
            loss_weights=None if self.loss_weights is None else self.loss_weights[idx])

    # -- building, joining and splitting batches: the one copy of the padding and chunking glue --
    @classmethod
    def from_sequences(cls, prompt_ids: list[list[int]], completion_ids: list[list[int]],
                       logprobs: list[list[float]], group_ids: list[int], rewards, pad_id: int, *,
                       loss_masks: list[list[int]] | None = None, finish_reasons: list[str] | None = None,
                       turns: list[int] | None = None, weight_versions: list[int] | None = None) -> "RolloutBatch":
        """Right-pads ragged per-sample token lists into a batch.

        prompt_ids: [num_groups][len]; completion_ids, logprobs (and loss_masks): [num_samples][len_i];
        group_ids: [num_samples] in 0..num_groups-1; rewards: [num_samples].
        Example: RolloutBatch.from_sequences([[1, 2]], [[5], [6, 7]], [[-.1], [-.2, -.3]], [0, 0], [1., 0.], 2)
                 -> completion_ids [[5, 2], [6, 7]], completion_mask [[1, 0], [1, 1]]
        """
        lengths = [len(c) for c in completion_ids]
        for name, rows in (("logprobs", logprobs), ("loss_masks", loss_masks)):
            if rows is not None and [len(r) for r in rows] != lengths:
                raise ValueError(f"{name} must have one entry per completion token")
        ids, mask = right_pad(completion_ids, pad_id, torch.long)
        width = ids.shape[1]
        logps = right_pad(logprobs, 0.0, torch.float32, width)[0]
        lmask = None if loss_masks is None else right_pad(loss_masks, 0, torch.long, width)[0]
        n = len(completion_ids)
        return cls(prompt_ids=list(prompt_ids), completion_ids=ids, completion_mask=mask, logprobs=logps,
                   group_ids=torch.tensor(group_ids, dtype=torch.long),
                   rewards=torch.as_tensor(rewards, dtype=torch.float32), finish_reasons=list(finish_reasons or []),
                   turns=torch.tensor(turns if turns is not None else [1] * n, dtype=torch.long),
                   weight_versions=None if weight_versions is None else torch.tensor(weight_versions),
                   loss_mask=lmask)

    @classmethod
    def concat(cls, batches: list["RolloutBatch"], pad_id: int) -> "RolloutBatch":
        """One batch from several (e.g. DAPO dynamic-sampling rounds): groups renumbered in order,
        completions right-padded to the widest."""
        if len(batches) == 1:
            return batches[0]
        width = max(b.completion_ids.shape[1] for b in batches)

        def cat(name: str, value):
            parts = [getattr(b, name) for b in batches]
            if any(p is None for p in parts):
                return None
            if parts[0].dim() == 2:
                parts = [torch.nn.functional.pad(p, (0, width - p.shape[1]), value=value) for p in parts]
            return torch.cat(parts)
        offsets = [0]
        for b in batches[:-1]:
            offsets.append(offsets[-1] + len(b.prompt_ids))
        return cls(prompt_ids=[p for b in batches for p in b.prompt_ids], completion_ids=cat("completion_ids", pad_id),
                   completion_mask=cat("completion_mask", 0), logprobs=cat("logprobs", 0.0),
                   group_ids=torch.cat([b.group_ids + o for b, o in zip(batches, offsets)]),
                   rewards=torch.cat([b.rewards for b in batches]),
                   finish_reasons=[f for b in batches for f in b.finish_reasons], turns=cat("turns", 0),
                   weight_versions=cat("weight_versions", 0), loss_mask=cat("loss_mask", 0),
                   old_logprobs=cat("old_logprobs", 0.0), loss_weights=cat("loss_weights", 0.0))

    def chunks(self, max_samples: int) -> list[tuple["RolloutBatch", torch.Tensor]]:
        """Consecutive whole groups packed into sub-batches of at most `max_samples` samples (a bigger
        group alone), each with the boolean row mask [num_samples] that selects its samples here (to
        index per-sample tensors such as advantages). The one micro/mini-batch splitter."""
        sizes = torch.bincount(self.group_ids).tolist()
        out, cur, n = [], [], 0
        for g, s in enumerate(sizes):
            if s == 0:
                continue
            if cur and n + s > max_samples:
                out.append(cur)
                cur, n = [], 0
            cur.append(g)
            n += s
        if cur:
            out.append(cur)
        return [(self.select_groups(gs), torch.isin(self.group_ids, torch.tensor(gs))) for gs in out]
