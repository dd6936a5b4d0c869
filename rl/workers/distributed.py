"""One policy sharded over N learner ranks (FSDP2 or DDP over torch.distributed: gloo on CPU, NCCL on
GPU, the same code), whose update equals a single `Learner`'s on the same batch.

The driver side (rl/workers/learner_group.py) cuts every minibatch exactly as `Learner.train_step`
does (`batch.chunks(minibatch_samples)`), gives each rank whole groups of it (`shard_minibatch`) and
the minibatch's GLOBAL normalisers (num_tokens, num_seqs of `loss_normalizers` over the whole
minibatch). Each rank then runs, per minibatch, one optimizer step:

    g = sum over ranks r, micro-batches k of grad aggregate_loss(micro_rk; global counts)
      = grad of the single learner's minibatch loss          (algorithms/aggregation.py)

- Gradient SUM: FSDP2's reduce-scatter and DDP's all-reduce AVERAGE over ranks, so each rank
  back-propagates loss * world_size (exact for a power-of-two world size; FSDP2's
  `set_gradient_divide_factor(1)` would need a PREMUL_SUM that gloo lacks, and DDP has no such knob).
- Same collectives on every rank: ranks run max-over-ranks micro-batches; a rank with fewer (or an
  empty part) runs the missing ones on a 1-token dummy with loss * 0 (the same two forwards and one
  backward, so the same all-gathers and reductions). Gradients sync on the last micro-batch only.
- Clipping: `clip_grad_norm_` on the sharded (DTensor) gradients clips by the global norm; the norm
  reported is that global one, as a float.
- Metrics: every rank's per-micro-batch sums are already normalised by the global counts, so the sums
  over ranks (one all_gather_object per call) are the single learner's numbers on every rank.

Example (one process per rank; LearnerGroup does this through Ray):
    learner = ShardedLearner("tiny-llama", num_threads=1)
    learner.setup_group(host, port, rank, world_size, "gloo", "fsdp")   # rank 0: open_group() first
    metrics = learner.train_shard(parts, normalizers)
"""
from __future__ import annotations

import contextlib
import datetime
from pathlib import Path

import ray
import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from rl.types import RolloutBatch
from rl.workers.correction import correct_parts
from rl.workers.devices import compute_autocast
from rl.workers.learner import (SyncingLearner, _rng_state, _set_rng_state, completion_logprobs, load_sharded_state,
                                save_hf_folder, sharded_extras)
from rl.workers.realloc import held_boxes
from rollout.transport import SyncGroup
from rollout.weight_sync import CHECKSUM_MOD, pack_buckets, weights_checksum

STRATEGIES = ("fsdp", "ddp")

Part = tuple[RolloutBatch, torch.Tensor] | None  # one rank's groups of one minibatch and their advantages


def decoder_layers(model) -> list[torch.nn.Module]:
    """The transformer blocks FSDP shards one by one: `model.model.layers` of HF causal LMs,
    `model.backbone.layers` of a critic's value head."""
    for owner in (getattr(model, "model", None), getattr(model, "backbone", None)):
        layers = getattr(owner, "layers", None)
        if isinstance(layers, torch.nn.ModuleList):
            return list(layers)
    raise ValueError(f"{type(model).__name__} has no model.layers: cannot shard it layer by layer")


class ShardedModel:
    """Mixin for a worker holding `self.model` and `self.device`: joins the default process group,
    shards `self.model` (FSDP2 per decoder layer + root, or DDP) and rebuilds its optimizer over
    the shards (`_make_optimizer() -> (optimizer, scheduler or None)`). The learner, the DPO learner
    and the critic share it; their sharded updates use `_grad_sync`, `_max_over_ranks`, `_clip_and_step`."""

    rank, world_size, strategy = 0, 1, None
    _group_store = None

    def open_group(self, world_size: int, timeout_s: float = 300.0) -> tuple[str, int]:
        """Rank 0, before `setup_group`: own the rendezvous store on a free port. -> (host, port)."""
        self._group_store, host, port = SyncGroup.listen(world_size, timeout_s)
        return host, port

    def setup_group(self, host: str, port: int, rank: int, world_size: int, backend: str = "auto",
                    strategy: str = "fsdp", timeout_s: float = 300.0) -> int:
        """Join the DEFAULT process group (FSDP2 and DTensor use it; all ranks call this at once), wrap
        the model and rebuild the optimizer (+ schedule) over the wrapped (sharded) parameters."""
        from torch.distributed.device_mesh import init_device_mesh
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if backend == "auto":
            backend = "nccl" if self.device.type == "cuda" else "gloo"
        timeout = datetime.timedelta(seconds=timeout_s)
        store = self._group_store if rank == 0 and self._group_store is not None else \
            dist.TCPStore(host, port, world_size, False, timeout=timeout)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        dist.init_process_group(backend, store=dist.PrefixStore("rl-learners", store), rank=rank,
                                world_size=world_size, timeout=timeout)
        self.rank, self.world_size, self.strategy = rank, world_size, strategy
        mesh = init_device_mesh(self.device.type, (world_size,))
        if strategy == "fsdp":
            from torch.distributed.fsdp import fully_shard
            for layer in decoder_layers(self.model):
                fully_shard(layer, mesh=mesh)
            fully_shard(self.model, mesh=mesh)
        else:
            import inspect

            from torch.nn.parallel import DistributedDataParallel
            # buffers (rotary tables) are the same on every rank: no broadcast before each forward
            no_sync_kw = "forward_sync_buffers" if "forward_sync_buffers" in \
                inspect.signature(DistributedDataParallel).parameters else "broadcast_buffers"
            self.model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                **{no_sync_kw: False})
        self.opt, self.sched = self._make_optimizer()  # after wrapping: the state lives on the shards
        return rank

    def teardown(self) -> None:
        """Barrier, then destroy the group (without it a SIGABRT at process exit was seen)."""
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    def _module(self) -> torch.nn.Module:
        """The model itself (DDP keeps it in .module; FSDP2 shards it in place)."""
        return self.model.module if self.strategy == "ddp" else self.model

    def _grad_sync(self, sync: bool):
        """Reduce gradients over ranks only on the minibatch's last micro-batch."""
        if self.strategy == "ddp":
            return contextlib.nullcontext() if sync else self.model.no_sync()
        self.model.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()

    def _max_over_ranks(self, n: int) -> int:
        t = torch.tensor([n], dtype=torch.long, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def _clip_and_step(self, max_grad_norm: float) -> float:
        """Clip by the GLOBAL gradient norm (over all shards), step; -> that norm."""
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_grad_norm)
        if isinstance(grad_norm, DTensor):
            grad_norm = grad_norm.full_tensor()
        self.opt.step()
        if self.sched is not None:
            self.sched.step()
        return float(grad_norm)

    def _sum_over_ranks(self, values: dict[str, float]) -> dict[str, float]:
        """Key-wise sum of every rank's floats (one all_gather_object; a rank may lack a key)."""
        gathered: list = [None] * self.world_size
        dist.all_gather_object(gathered, values)
        keys = sorted(set().union(*gathered))
        return {k: sum(g.get(k, 0.0) for g in gathered) for k in keys}

    def full_named_parameters(self):
        """(name, full tensor) one parameter at a time, gathered from the shards (a collective: every
        rank iterates it to the end, in the same order). Names as the unwrapped model's."""
        for name, p in self._module().named_parameters():
            t = p.detach()
            yield name, (t.full_tensor() if isinstance(t, DTensor) else t)

    def export_full(self, bucket_bytes: int) -> list | None:
        """Rank 0: the full fp32 weights as WeightBuckets (`rollout.weight_sync.pack_buckets`); other
        ranks take part in the gathers and return None. Beyond the shards, at most one bucket of
        gathered tensors is held before it is packed (the packed buckets are the return value)."""
        if self.rank == 0:
            return pack_buckets(self.full_named_parameters(), bucket_bytes)
        for _ in self.full_named_parameters():
            pass
        return None


class ShardedLearner(ShardedModel, SyncingLearner):
    """A `Learner` holding one rank's shard of the policy and of the AdamW state."""

    def minibatch_size(self) -> int:
        return self.minibatch_samples

    # -- the sharded update ---------------------------------------------------------------
    def train_shard(self, parts: list[Part], normalizers: list[tuple[float, float]]) -> dict[str, float]:
        """One optimizer step per minibatch (times updates_per_batch, as `Learner.train_step`).

        parts[i]: this rank's (groups, advantages [their samples]) of minibatch i, None if it got none;
        normalizers[i]: (num_tokens, num_seqs) of the WHOLE minibatch i. -> the metrics a single
        learner reports for the whole batch (the same on every rank).
        """
        if len(parts) != len(normalizers):
            raise ValueError(f"{len(parts)} parts but {len(normalizers)} normalisers")
        parts, corrections = correct_parts(self, parts)  # algorithm.rollout_correction; none: unchanged
        sums, norms = [], []
        for _ in range(self.updates_per_batch):
            for part, (num_tokens, num_seqs) in zip(parts, normalizers):
                acc, grad_norm = self._sharded_update(part, num_tokens, num_seqs)
                sums.append(acc)
                norms.append(grad_norm)
        return {**self._combine_metrics(sums, norms), **corrections}

    def _sharded_update(self, part: Part, num_tokens: float, num_seqs: float) -> tuple[dict, float]:
        self.opt.zero_grad(set_to_none=True)
        micros = [] if part is None else [(m, part[1][rows]) for m, rows in part[0].chunks(self.microbatch_samples)]
        n_micro = self._max_over_ranks(len(micros))
        acc: dict[str, float] = {}
        for i in range(n_micro):
            with self._grad_sync(i == n_micro - 1):
                if i < len(micros):
                    loss, m = self._loss(micros[i][0], micros[i][1], num_tokens, num_seqs)
                    for k, v in m.items():
                        acc[k] = acc.get(k, 0.0) + v
                else:
                    loss = self._idle_loss()
                # FSDP2 / DDP average the ranks' gradients; the loss is already normalised by the
                # minibatch's global counts, so the wanted gradient is their SUM: scale by world size.
                (loss * self.world_size).backward()
        return acc, self._clip_and_step(self.max_grad_norm)

    def _idle_loss(self) -> torch.Tensor:
        """A zero loss through the same forwards as a real micro-batch (1-token prompt, 1-token
        completion), so this rank joins every all-gather and gradient reduction."""
        pad = torch.tensor([[self.pad_id]], device=self.device)
        with compute_autocast(self.device, self.dtype, self.master_dtype):
            logp = completion_logprobs(self.model, [[self.pad_id]], pad, torch.ones_like(pad),
                                       torch.zeros(1, dtype=torch.long, device=self.device),
                                       self.loss.temperature, self.pad_id)
        return logp.sum() * 0.0

    def _combine_metrics(self, sums: list[dict], norms: list[float]) -> dict[str, float]:
        """Per optimizer step: the sum over ranks of each metric (global normalisers make these the
        single learner's values), the global grad norm; then the mean over steps, as Learner does."""
        gathered: list = [None] * self.world_size
        dist.all_gather_object(gathered, sums)
        totals: dict[str, float] = {}
        for step, grad_norm in enumerate(norms):
            for rank_sums in gathered:
                for k, v in rank_sums[step].items():
                    totals[k] = totals.get(k, 0.0) + v
            totals["grad_norm"] = totals.get("grad_norm", 0.0) + grad_norm
        out = {k: v / len(norms) for k, v in totals.items()}
        out["optimizer_steps"] = len(norms)
        out["lr"] = self.sched.get_last_lr()[0]
        return out

    def export_weights(self, bucket_bytes: int) -> list | None:
        return self.export_full(bucket_bytes)

    def bucket_plan(self, bucket_bytes: int) -> list[list[str]]:
        """Parameter names per bucket of at most bucket_bytes of full fp32 tensors (in model order;
        a tensor larger than a bucket gets one of its own)."""
        plan, size = [[]], 0
        for name, p in self._module().named_parameters():
            nbytes = p.numel() * p.element_size()  # a DTensor's numel is the full tensor's
            if plan[-1] and size + nbytes > bucket_bytes:
                plan.append([])
                size = 0
            plan[-1].append(name)
            size += nbytes
        return plan if plan[-1] else []

    def export_bucket(self, names: list[str]) -> list | None:
        """One bucket of full weights (a collective: every rank gathers the same names in the same
        order); rank 0 returns [WeightBucket], the others None. Only this bucket is ever gathered."""
        params = dict(self._module().named_parameters())
        tensors = ((n, params[n].detach().full_tensor() if isinstance(params[n], DTensor) else params[n].detach())
                   for n in names)
        if self.rank == 0:
            return pack_buckets(tensors, 2**62)
        for _ in tensors:
            pass
        return None

    def _realloc_held(self) -> dict:
        """This rank's FSDP2 rows of every parameter (DDP: the whole replica), for the in-loop reshard."""
        return held_boxes(self._module().named_parameters(), self.world_size, self.rank)

    def _realloc_gathered(self) -> dict:
        """Every full tensor, gathered (a collective); rank 0 keeps them all, the others nothing."""
        out = {}
        for name, p in self._module().named_parameters():
            full = p.detach().full_tensor() if isinstance(p, DTensor) else p.detach()
            if self.rank == 0:
                out[name] = (tuple(full.shape), tuple((0, k) for k in full.shape), full)
        return out

    def weights_checksum(self, dtype: str | None = None) -> int:
        """The checksum of the full policy from the shards: each rank sums its local pieces, the
        partials add up (mod 2**64) over ranks (DDP replicas: rank 0's alone). A collective."""
        torch_dtype = getattr(torch, dtype) if dtype else None
        local = [p.to_local() if isinstance(p, DTensor) else p for p in self._module().parameters()]
        part = weights_checksum(local, torch_dtype)
        if self.strategy != "fsdp":
            return part
        parts: list = [None] * self.world_size
        dist.all_gather_object(parts, part)
        return sum(parts) % CHECKSUM_MOD

    @ray.method(num_returns=2)
    def export_update(self, *args, **kwargs):
        raise NotImplementedError("a sharded learner ships full weights through LearnerGroup.export_full")

    # -- checkpoints ------------------------------------------------------------------------
    def save(self, path: str) -> None:
        """path/dcp (model + AdamW state, sharded, torch.distributed.checkpoint), path/rank{r}.pt
        (scheduler and RNG of each rank) and path/hf (the full policy as an HF folder)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict
        model_sd, optim_sd = get_state_dict(self.model, self.opt)
        dcp.save({"model": model_sd, "optimizer": optim_sd}, checkpoint_id=str(Path(path) / "dcp"))
        torch.save({"scheduler": self.sched.state_dict(), "rng": _rng_state(), "world_size": self.world_size},
                   Path(path) / f"rank{self.rank}.pt")
        self.save_hf(str(Path(path) / "hf"), self.model_name)

    def load(self, path: str) -> None:
        """A checkpoint of any number of ranks (DCP reshards the model and AdamW state to this layout)."""
        load_sharded_state(self.model, self.opt, Path(path) / "dcp")
        extra = sharded_extras(Path(path), self.rank, self.world_size)
        self.sched.load_state_dict(extra["scheduler"])
        _set_rng_state(extra["rng"])

    def save_hf(self, path: str, tokenizer_name: str) -> str | None:
        """Rank 0 writes a `save_pretrained` folder of the full weights; every rank joins the gather."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        full = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        out = None
        if self.rank == 0:  # with cpu_offload only rank 0 holds the gathered values
            out = save_hf_folder(self._unsharded_copy(full), tokenizer_name, path)
        dist.barrier()
        return out

    def _unsharded_copy(self, full_state: dict) -> torch.nn.Module:
        """A plain model of the policy's class holding `full_state` (built on meta: no extra copy)."""
        from transformers import AutoModelForCausalLM
        with torch.device("meta"):
            plain = AutoModelForCausalLM.from_config(self._module().config)
        missing, unexpected = plain.load_state_dict(full_state, strict=False, assign=True)
        plain.tie_weights()
        still_meta = [n for n, p in plain.named_parameters() if p.is_meta]
        if still_meta or unexpected:
            raise RuntimeError(f"full state dict does not fit the model: missing {still_meta}, unexpected {unexpected}")
        return plain


ShardedLearnerActor = ray.remote(num_cpus=0.5, max_restarts=0)(ShardedLearner)
