"""LLM PPO's critic and reference: a value head on a decoder, and a frozen policy copy for the KL penalty.

The critic is the policy's architecture (or any HF causal LM, `critic.model`) without its LM head,
plus a scalar head initialised to zero: V(s_t) is read from the hidden state that predicts token
t, so values line up with the learner's log-probs ([S, T], one per completion token). It trains
with the clipped value loss of algorithms/losses.py, aggregated like the policy loss, with the same
shared-prefix forward and micro-batch accumulation as the policy learner.

Runs in-process (tests) or as Ray actors (`CriticActor`, `ReferenceActor`).
Example: c = Critic("tiny-llama"); v = c.values(batch); c.train_step(batch, v, returns)
"""
from __future__ import annotations

from pathlib import Path

import ray
import torch

from algorithms.aggregation import aggregate_loss, loss_normalizers
from algorithms.losses import value_loss
from rl.types import RolloutBatch
from rl.workers.learner import completion_logprobs, shifted_outputs
from rl.workers.devices import actor_device, placement_info
from rl.workers.distributed import ShardedModel
from rl.workers.models import load_model


class ValueHead(torch.nn.Module):
    """PPO critic: a decoder backbone + Linear(hidden, 1) (not "value model": that is V0's
    prompt-level predictor). forward() is the backbone's, so `shifted_outputs`
    treats it as a bare decoder; `head` maps its states to values."""

    def __init__(self, causal_lm):
        super().__init__()
        self.backbone = causal_lm.model
        self.head = torch.nn.Linear(causal_lm.config.hidden_size, 1)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)

    def forward(self, **kwargs):
        return self.backbone(**kwargs)


def completion_values(model: ValueHead, batch: RolloutBatch, pad_id: int) -> torch.Tensor:
    """V(s_t) for every completion token: [S, T] (zero on padding)."""
    states = shifted_outputs(model, batch.prompt_ids, batch.completion_ids, batch.completion_mask,
                             batch.group_ids, pad_id)
    head = getattr(model, "module", model).head  # a DDP wrapper holds the value head in .module
    return head(states).squeeze(-1).float() * batch.completion_mask


class Critic:
    def __init__(self, model_name: str, dtype: str = "float32", seed: int = 0, lr: float = 1e-5,
                 weight_decay: float = 0.0, max_grad_norm: float = 1.0, value_clip: float | None = 0.2,
                 value_loss_coef: float = 1.0, minibatch_samples: int = 64, microbatch_samples: int = 16,
                 updates_per_batch: int = 1, loss_aggregation: str = "token-mean", max_new_tokens: int = 16,
                 num_threads: int | None = None, pad_id: int = 2):
        if num_threads:
            torch.set_num_threads(num_threads)
        torch.manual_seed(seed)
        self.device = actor_device()
        self.model = ValueHead(load_model(model_name, dtype, seed=seed)).to(self.device).train()
        self._optimizer_settings = (lr, weight_decay)
        self.opt, self.sched = self._make_optimizer()
        self.max_grad_norm, self.value_clip, self.coef = max_grad_norm, value_clip, value_loss_coef
        self.minibatch_samples, self.microbatch_samples = minibatch_samples, microbatch_samples
        self.updates_per_batch, self.pad_id = updates_per_batch, pad_id
        self.loss_aggregation, self.max_new_tokens = loss_aggregation, max_new_tokens

    def _make_optimizer(self):
        """AdamW over the value head's model (no schedule); a sharded critic rebuilds it over the shards."""
        lr, weight_decay = self._optimizer_settings
        return torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=weight_decay), None

    @torch.no_grad()
    def values(self, batch: RolloutBatch) -> torch.Tensor:
        out = torch.zeros(batch.completion_mask.shape, dtype=torch.float32)
        for micro, rows in batch.chunks(self.microbatch_samples):
            out[rows] = completion_values(self.model, micro.to(self.device), self.pad_id).cpu()
        return out

    def train_step(self, batch: RolloutBatch, old_values: torch.Tensor, returns: torch.Tensor) -> dict[str, float]:
        """Clipped value regression onto the GAE returns; minibatches by prompt group."""
        sums: dict[str, float] = {}
        n_updates = 0
        for _ in range(self.updates_per_batch):
            for mb, rows in batch.chunks(self.minibatch_samples):
                m = self._update(mb, old_values[rows], returns[rows])
                for k, v in m.items():
                    sums[k] = sums.get(k, 0.0) + v
                n_updates += 1
        return {k: v / n_updates for k, v in sums.items()}

    def _update(self, mb: RolloutBatch, old_values: torch.Tensor, returns: torch.Tensor) -> dict[str, float]:
        self.opt.zero_grad(set_to_none=True)
        num_tokens, num_seqs = loss_normalizers(mb.completion_mask)
        acc = {"value_loss": 0.0, "value_clip_frac": 0.0}
        for micro, rows in mb.chunks(self.microbatch_samples):
            self._micro_loss(micro, old_values[rows], returns[rows], num_tokens, num_seqs, acc).backward()
        acc["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm))
        self.opt.step()
        return acc

    def _micro_loss(self, micro: RolloutBatch, old: torch.Tensor, ret: torch.Tensor, num_tokens: float,
                    num_seqs: float, acc: dict) -> torch.Tensor:
        """The clipped value loss of one micro-batch, normalised by its minibatch's counts; metrics into acc."""
        micro, old, ret = micro.to(self.device), old.to(self.device), ret.to(self.device)
        mask = micro.completion_mask.float()
        v = completion_values(self.model, micro, self.pad_id)
        per_tok = value_loss(v, old, ret, self.value_clip)
        loss = self.coef * aggregate_loss(per_tok, mask, self.loss_aggregation, max_len=self.max_new_tokens,
                                          num_tokens=num_tokens, num_seqs=num_seqs)
        acc["value_loss"] += float(loss.detach())
        if self.value_clip is not None:
            clipped = (v.detach() - old).abs() > self.value_clip
            acc["value_clip_frac"] += float((clipped.float() * mask).sum()) / num_tokens
        return loss

    def save(self, path: str) -> None:
        torch.save({"model": self.model.state_dict(), "optimizer": self.opt.state_dict()}, Path(path) / "critic.pt")

    def placement_info(self) -> dict:
        return placement_info()

    def load(self, path: str) -> None:
        state = torch.load(Path(path) / "critic.pt", weights_only=False, map_location=self.device)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])


class Reference:
    """The frozen initial policy: log pi_ref(y_t | ...) for the per-token KL penalty."""

    def __init__(self, model_name: str, dtype: str = "float32", seed: int = 0, temperature: float = 1.0,
                 microbatch_samples: int = 16, num_threads: int | None = None, pad_id: int = 2):
        if num_threads:
            torch.set_num_threads(num_threads)
        self.device = actor_device()
        self.model = load_model(model_name, dtype, seed=seed).to(self.device)
        self.temperature, self.microbatch_samples, self.pad_id = temperature, microbatch_samples, pad_id

    @torch.no_grad()
    def logprobs(self, batch: RolloutBatch) -> torch.Tensor:
        out = torch.zeros(batch.completion_mask.shape, dtype=torch.float32)
        for mb, rows in batch.chunks(self.microbatch_samples):
            mb = mb.to(self.device)
            out[rows] = (completion_logprobs(self.model, mb.prompt_ids, mb.completion_ids, mb.completion_mask,
                                             mb.group_ids, self.temperature, self.pad_id) * mb.completion_mask).cpu()
        return out


CriticActor = ray.remote(num_cpus=0.5, max_restarts=0)(Critic)


class ShardedCritic(ShardedModel, Critic):
    """One rank of a critic sharded like the policy (FSDP2 per decoder layer / DDP; rl/workers/distributed.py):
    whole groups per rank, the minibatch's global normalisers, gradients summed over ranks, the global
    norm clipped; a rank short of micro-batches runs dummy ones (every forward is a collective)."""

    def minibatch_size(self) -> int:
        return self.minibatch_samples

    def values_shard(self, batch: RolloutBatch | None) -> torch.Tensor | None:
        """V(s_t) [S_rank, T] of this rank's groups (None: it got none; it still joins the forwards)."""
        chunks = list(batch.chunks(self.microbatch_samples)) if batch is not None else []
        out = None if batch is None else torch.zeros(batch.completion_mask.shape, dtype=torch.float32)
        with torch.no_grad():
            for i in range(self._max_over_ranks(len(chunks))):
                if i < len(chunks):
                    micro, rows = chunks[i]
                    out[rows] = completion_values(self.model, micro.to(self.device), self.pad_id).cpu()
                else:
                    self._idle_loss()
        return out

    def train_shard(self, parts: list, normalizers: list[tuple[float, float]]) -> dict[str, float]:
        """parts[i]: this rank's (groups, old_values, returns) of minibatch i or None; normalizers[i]: the
        whole minibatch's (num_tokens, num_seqs) of its completion mask. -> the single critic's metrics."""
        steps = []
        for _ in range(self.updates_per_batch):
            for part, (num_tokens, num_seqs) in zip(parts, normalizers):
                steps.append(self._sharded_update(part, num_tokens, num_seqs))
        return {k: sum(m[k] for m in steps) / len(steps) for k in steps[0]}

    def _sharded_update(self, part, num_tokens: float, num_seqs: float) -> dict[str, float]:
        self.opt.zero_grad(set_to_none=True)
        micros = [] if part is None else [(m, part[1][rows], part[2][rows]) for m, rows in part[0].chunks(self.microbatch_samples)]
        n_micro = self._max_over_ranks(len(micros))
        acc = {"value_loss": 0.0, "value_clip_frac": 0.0}
        for i in range(n_micro):
            with self._grad_sync(i == n_micro - 1):
                loss = self._micro_loss(*micros[i], num_tokens, num_seqs, acc) if i < len(micros) else self._idle_loss()
                (loss * self.world_size).backward()  # the wrappers average over ranks; we want the sum
        acc = self._sum_over_ranks(acc)
        acc["grad_norm"] = self._clip_and_step(self.max_grad_norm)
        return acc

    def _idle_loss(self) -> torch.Tensor:
        """Zero, through the same forwards as a micro-batch (a 1-token prompt and completion)."""
        dummy = RolloutBatch.from_sequences([[self.pad_id]], [[self.pad_id]], [[0.0]], [0], torch.zeros(1), self.pad_id)
        return completion_values(self.model, dummy.to(self.device), self.pad_id).sum() * 0.0

    def save(self, path: str) -> None:
        """path/critic_dcp: the value model and AdamW state, sharded (torch.distributed.checkpoint)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict
        model_sd, optim_sd = get_state_dict(self.model, self.opt)
        dcp.save({"model": model_sd, "optimizer": optim_sd}, checkpoint_id=str(Path(path) / "critic_dcp"))

    def load(self, path: str) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
        model_sd, optim_sd = get_state_dict(self.model, self.opt)
        state = {"model": model_sd, "optimizer": optim_sd}
        dcp.load(state, checkpoint_id=str(Path(path) / "critic_dcp"))
        set_state_dict(self.model, self.opt, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


ShardedCriticActor = ray.remote(num_cpus=0.5, max_restarts=0)(ShardedCritic)
ReferenceActor = ray.remote(num_cpus=0.25, max_restarts=0)(Reference)
