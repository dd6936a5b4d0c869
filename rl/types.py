"""What the driver and the workers pass between themselves."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


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

    @property
    def num_samples(self) -> int:
        return int(self.completion_ids.shape[0])

    @property
    def train_mask(self) -> torch.Tensor:
        """Where the loss applies: `loss_mask` when set, else every completion token."""
        return self.completion_mask if self.loss_mask is None else self.loss_mask

    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(1)

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
            loss_mask=None if self.loss_mask is None else self.loss_mask[idx])
