"""The learner: a torch policy + optimizer that takes RolloutBatches and returns metrics.

Its forward shares each prompt's prefill across the group, as the engine does: the prompt is run
once (with gradients) and its KV cache is indexed out to the group's samples, so a group of 8
costs one prompt forward/backward instead of 8. Gradient accumulation over micro-batches uses the
global token/sequence counts, so any micro-batch split gives the same gradient.

Runs in-process (tests) or as a Ray actor (rl/workers/rollout_worker.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
import torch

from algorithms.aggregation import aggregate_loss, loss_normalizers
from algorithms.kl import approx_kl, kl_penalty
from algorithms.policy_losses import POLICY_LOSSES  # ppo, gspo, cispo
from algorithms.metrics import clip_fractions
from rl.types import RolloutBatch
from rl.workers.correction import correct_batch, correction_from
from rl.workers.learner_state import (_rng_state, _set_rng_state, load_sharded_state,  # noqa: F401
                                      save_hf_folder, sharded_extras)
from rl.workers.devices import actor_device, compute_autocast, move_state, peak_memory_mb, placement_info
from rl.workers.models import load_model
from rl.workers.realloc import ReallocPeer, held_boxes
from rollout.delta_sync import DeltaSender, bf16_crcs
from rollout.hf_engine import left_pad
from rollout.transport import SyncGroup, default_backend, flatten_payload
from rollout.weight_sync import pack_buckets, weights_checksum


@dataclass
class LossSettings:
    policy_loss: str = "ppo"  # a name in algorithms.losses.POLICY_LOSSES
    eps_low: float = 0.2
    eps_high: float = 0.28
    dual_clip_c: float | None = 3.0
    loss_aggregation: str = "token-mean"
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    temperature: float = 1.0
    max_new_tokens: int = 16  # Dr.GRPO's normalising constant
    rollout_correction: str = "none"  # a name in algorithms.rollout_correction.ROLLOUT_CORRECTIONS
    correction_params: dict = field(default_factory=dict)  # e.g. {"low": 0.5, "high": 5.0} for icepop


def shifted_outputs(model, prompt_ids: list[list[int]], completion_ids: torch.Tensor,
                    completion_mask: torch.Tensor, group_ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """The model's output at the position that PREDICTS each completion token (the state s_t before
    y_t), prompts prefilled once per group and their KV cache indexed out to the samples.

    `model` is a causal LM (returns logits) or a bare decoder (returns last hidden states: a critic).
    prompt_ids: [num_groups][len]; completion_ids, completion_mask: [S, T]; group_ids: [S] in 0..G-1.
    Returns [S, T, vocab] logits or [S, T, hidden] states.

    A model training with gradient checkpointing cannot keep a KV cache (the layers' recompute in
    backward would write it twice), so it runs each sample's prompt + completion as one sequence
    instead (`_unshared_outputs`): the same outputs, the prompt computed once per sample.
    """
    dev = completion_ids.device
    ids, attn = (t.to(dev) for t in left_pad(prompt_ids, pad_id))
    inner = getattr(model, "module", model)  # a DDP wrapper holds the LM in .module
    lm = hasattr(inner, "lm_head")
    if getattr(inner, "is_gradient_checkpointing", False) and inner.training:
        return _unshared_outputs(model, ids, attn, completion_ids, completion_mask, group_ids, lm)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True,
                **({"logits_to_keep": 1} if lm else {}))
    cache = out.past_key_values
    cache.batch_select_indices(group_ids)
    first = (out.logits if lm else out.last_hidden_state)[group_ids, -1:, :]  # predicts the first token
    T = completion_ids.shape[1]
    attn_full = torch.cat([attn[group_ids], completion_mask.to(attn.dtype)], dim=1)
    pos_c = pos[group_ids, -1:] + 1 + torch.arange(T, device=dev).unsqueeze(0)
    out2 = model(input_ids=completion_ids, attention_mask=attn_full, position_ids=pos_c,
                 past_key_values=cache, use_cache=True)
    rest = out2.logits if lm else out2.last_hidden_state
    return torch.cat([first, rest[:, :-1, :]], dim=1)


def _unshared_outputs(model, ids, attn, completion_ids, completion_mask, group_ids, lm: bool) -> torch.Tensor:
    """shifted_outputs without a cache: [left-padded prompt | completion] per sample, one forward."""
    full_ids = torch.cat([ids[group_ids], completion_ids], dim=1)
    full_attn = torch.cat([attn[group_ids], completion_mask.to(attn.dtype)], dim=1)
    pos = (full_attn.cumsum(-1) - 1).clamp(min=0)  # completion padding sits after every real token
    T = completion_ids.shape[1]
    out = model(input_ids=full_ids, attention_mask=full_attn, position_ids=pos, use_cache=False,
                **({"logits_to_keep": T + 1} if lm else {}))
    states = out.logits if lm else out.last_hidden_state[:, -(T + 1):]
    return states[:, :-1, :]  # the outputs at prompt end .. second-to-last token predict the T tokens


def completion_logprobs(model, prompt_ids: list[list[int]], completion_ids: torch.Tensor,
                        completion_mask: torch.Tensor, group_ids: torch.Tensor, temperature: float,
                        pad_id: int, with_entropy: bool = False):
    """log pi(y_t | x, y_<t) for every completion token, prompts prefilled once per group.

    Shapes as `shifted_outputs`. Returns logprobs [S, T] (and entropy [S, T], no grad, when asked).
    """
    logits = shifted_outputs(model, prompt_ids, completion_ids, completion_mask, group_ids, pad_id)
    logp_all = torch.log_softmax(logits.float() / temperature, dim=-1)
    logp = logp_all.gather(2, completion_ids.unsqueeze(2)).squeeze(2)
    if not with_entropy:
        return logp
    with torch.no_grad():
        entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


class Learner:
    def __init__(self, model_name: str, dtype: str = "float32", seed: int = 0, lr: float = 1e-5,
                 weight_decay: float = 0.0, max_grad_norm: float = 1.0, warmup_steps: int = 0,
                 minibatch_samples: int = 64, microbatch_samples: int = 16, updates_per_batch: int = 1,
                 loss: LossSettings = LossSettings(), num_threads: int | None = None, pad_id: int = 2,
                 master_dtype: str = "float32", gradient_checkpointing: bool = False):
        """`dtype` is the compute dtype of the forward; weights and AdamW state live in `master_dtype`
        (fp32 masters with bf16 compute: small updates are not rounded away). The model goes to the
        device Ray assigned this actor (rl/workers/devices.py), CPU when it has none. gradient_checkpointing:
        each decoder layer's activations are recomputed in backward (less memory, one more forward)."""
        self.policy_loss = POLICY_LOSSES.get(loss.policy_loss)  # a typo fails before any loading
        self.correction = correction_from(loss.rollout_correction, loss.correction_params)  # None: none
        if num_threads:
            torch.set_num_threads(num_threads)
        torch.manual_seed(seed)
        self.device, self.dtype, self.master_dtype, self.model_name = actor_device(), dtype, master_dtype, model_name
        self.model = load_model(model_name, master_dtype, seed=seed).to(self.device).train()
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.ref = load_model(model_name, dtype, seed=seed).to(self.device) if loss.kl_coef > 0 else None
        self._optimizer_settings = (lr, weight_decay, warmup_steps)
        self.opt, self.sched = self._make_optimizer()
        self.max_grad_norm, self.loss = max_grad_norm, loss
        self.minibatch_samples, self.microbatch_samples = minibatch_samples, microbatch_samples
        self.updates_per_batch, self.pad_id = updates_per_batch, pad_id

    def _make_optimizer(self):
        """AdamW over `self.model` and its linear-warmup schedule -> (optimizer, scheduler). A sharded
        learner (rl/workers/distributed.py) calls it again after wrapping, so the state is sharded."""
        lr, weight_decay, warmup_steps = self._optimizer_settings
        opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / warmup_steps) if warmup_steps > 0 else 1.0)
        return opt, sched

    def train_step(self, batch: RolloutBatch, advantages: torch.Tensor) -> dict[str, float]:
        batch, corrections = correct_batch(self, batch)  # algorithm.rollout_correction; none: unchanged
        sums: dict[str, float] = {}
        n_updates = 0
        for _ in range(self.updates_per_batch):
            for mb, rows in batch.chunks(self.minibatch_samples):
                m = self._update(mb, advantages[rows])
                for k, v in m.items():
                    sums[k] = sums.get(k, 0.0) + v
                n_updates += 1
        out = {k: v / n_updates for k, v in sums.items()}
        out["optimizer_steps"] = n_updates
        out["lr"] = self.sched.get_last_lr()[0]
        return {**out, **corrections}

    def proximal_logprobs(self, batch: RolloutBatch, forward_idle=None, n_micro: int | None = None) -> torch.Tensor:
        """log pi_old of every sampled token [S, T] (0 off the train mask) under the current weights, micro-batch
        by micro-batch without gradients (rl/workers/correction.py). `forward_idle` + `n_micro`: a sharded
        rank with fewer micro-batches runs idle forwards so every rank joins the same collectives."""
        out = torch.zeros_like(batch.logprobs)
        micros = batch.chunks(self.microbatch_samples) if batch.num_samples else []
        with torch.no_grad():
            for i in range(max(len(micros), n_micro or 0)):
                if i >= len(micros):
                    forward_idle()
                    continue
                micro, rows = micros[i]
                m = micro.to(self.device)
                with compute_autocast(self.device, self.dtype, self.master_dtype):
                    logp = completion_logprobs(self.model, m.prompt_ids, m.completion_ids, m.completion_mask,
                                               m.group_ids, self.loss.temperature, self.pad_id)
                out[rows] = logp.float().cpu() * micro.train_mask.float()
        return out

    def _update(self, mb: RolloutBatch, adv: torch.Tensor) -> dict[str, float]:
        self.opt.zero_grad(set_to_none=True)
        num_tokens, num_seqs = loss_normalizers(mb.train_mask)
        acc: dict[str, float] = {}
        for micro, rows in mb.chunks(self.microbatch_samples):
            loss, m = self._loss(micro, adv[rows], num_tokens, num_seqs)
            loss.backward()
            for k, v in m.items():
                acc[k] = acc.get(k, 0.0) + v
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.opt.step()
        self.sched.step()
        acc["grad_norm"] = float(grad_norm)
        return acc

    def _loss(self, micro: RolloutBatch, adv: torch.Tensor, num_tokens: float, num_seqs: float):
        L = self.loss
        micro, adv = micro.to(self.device), adv.to(self.device)
        mask = micro.train_mask.float()
        with compute_autocast(self.device, self.dtype, self.master_dtype):
            logp, entropy = completion_logprobs(self.model, micro.prompt_ids, micro.completion_ids,
                                                micro.completion_mask, micro.group_ids, L.temperature,
                                                self.pad_id, with_entropy=True)
        old = micro.logprobs if micro.old_logprobs is None else micro.old_logprobs  # a correction's baseline
        per_tok, clipped = self.policy_loss(logp, old, adv, mask, eps_low=L.eps_low,
                                            eps_high=L.eps_high, dual_clip_c=L.dual_clip_c)
        if micro.loss_weights is not None:
            per_tok = per_tok * micro.loss_weights
        m = {}
        if self.ref is not None:
            with torch.no_grad():
                ref_logp = completion_logprobs(self.ref, micro.prompt_ids, micro.completion_ids,
                                               micro.completion_mask, micro.group_ids, L.temperature, self.pad_id)
            kl = kl_penalty(logp, ref_logp, L.kl_estimator)
            per_tok = per_tok + L.kl_coef * kl
            m["kl_ref"] = float((kl.detach() * mask).sum()) / num_tokens
        loss = aggregate_loss(per_tok, mask, L.loss_aggregation, max_len=L.max_new_tokens,
                              num_tokens=num_tokens, num_seqs=num_seqs)
        with torch.no_grad():
            tok_share = float(mask.sum()) / num_tokens
            diff = (logp.detach() - micro.logprobs) * mask
            m.update({
                "loss": float(loss.detach()),
                "entropy": float((entropy * mask).sum()) / num_tokens,
                **clip_fractions(clipped, adv, mask, num_tokens),
                "approx_kl": float(approx_kl(logp.detach(), old, mask)) * tok_share,
                "logprob_mismatch": float(diff.abs().sum()) / num_tokens,
                "tokens_share": tok_share,
            })
        return loss, m

    # -- weights and checkpoints ----------------------------------------------------------
    def export_weights(self, bucket_bytes: int) -> list:
        return pack_buckets(self.model.named_parameters(), bucket_bytes)

    def peak_memory_mb(self, reset: bool = False) -> float:
        """This learner process's peak memory on its device since the last reset (rl/workers/devices.py)."""
        return peak_memory_mb(self.device, reset)

    def offload(self, optimizer: bool = True, params: bool = False) -> float:
        """Colocated mode, while the engines generate: AdamW state (and, optionally, the parameters) to host
        memory; `onload` brings them back before the next update. -> MiB moved. On a CPU device host memory
        IS the device, so nothing moves (0). FSDP2-sharded tensors (DTensors) stay where they are: a rank holds
        1/N of them; FSDP2's own CPUOffloadPolicy is the static alternative."""
        self._offloaded = (optimizer, params)
        return self._move(torch.device("cpu"), optimizer, params)

    def onload(self) -> float:
        optimizer, params = getattr(self, "_offloaded", (False, False))
        self._offloaded = (False, False)
        return self._move(self.device, optimizer, params)

    def _move(self, device: torch.device, optimizer: bool, params: bool) -> float:
        return 0.0 if self.device.type == "cpu" else move_state(self.model, self.opt, device, optimizer, params)

    def weights_checksum(self, dtype: str | None = None) -> int:
        """`rollout.weight_sync.weights_checksum` of the policy cast to `dtype` (what an engine serving
        in that dtype must report after a sync)."""
        return weights_checksum(self.model.parameters(), getattr(torch, dtype) if dtype else None)

    def save(self, path: str) -> None:
        """learner.pt (model, optimizer, scheduler, RNG: what `--resume` needs) and hf/ (the policy as an
        HF folder: `from_pretrained`, the vllm engine or a new recipe's `model.name` load it as it is)."""
        torch.save({"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                    "scheduler": self.sched.state_dict(), "rng": _rng_state()}, Path(path) / "learner.pt")
        self.save_hf(str(Path(path) / "hf"), self.model_name)

    def save_hf(self, path: str, tokenizer_name: str) -> str:
        """An HF folder (safetensors, config, generation config, tokenizer) that transformers and vLLM load."""
        return save_hf_folder(self.model, tokenizer_name, path)

    def load(self, path: str) -> None:
        """learner.pt, or a sharded learners' checkpoint (dcp/: resharded into this one process)."""
        if not (Path(path) / "learner.pt").exists() and (Path(path) / "dcp").is_dir():
            load_sharded_state(self.model, self.opt, Path(path) / "dcp")
            extra = sharded_extras(Path(path), 0, 1)
            self.sched.load_state_dict(extra["scheduler"])
            _set_rng_state(extra["rng"])
            return
        state = torch.load(Path(path) / "learner.pt", weights_only=False, map_location=self.device)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])

    def placement_info(self) -> dict:
        return placement_info()

    def state_bytes(self) -> dict[str, int]:
        """Bytes this process holds of parameters, gradients and optimizer state (its shard when sharded)."""
        local = lambda t: t.to_local() if hasattr(t, "to_local") else t  # noqa: E731  (DTensor shard)
        size = lambda ts: sum(local(t).numel() * local(t).element_size() for t in ts)  # noqa: E731
        params = list(self.model.parameters())
        opt = [v for st in self.opt.state.values() for v in st.values() if torch.is_tensor(v) and v.dim() > 0]
        return {"params": size(params), "grads": size(p.grad for p in params if p.grad is not None), "optimizer": size(opt)}

    def node_id(self) -> str:
        import ray
        return ray.get_runtime_context().get_node_id()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


class SyncingLearner(ReallocPeer, Learner):
    """The learner plus the sender side of weight sync, kept where the weights live."""

    def _realloc_held(self) -> dict:
        return held_boxes(self.model.named_parameters())

    _sender: DeltaSender | None = None

    _group: SyncGroup | None = None
    _pending = None

    @ray.method(num_returns=2)
    def export_update(self, bucket_bytes: int, version: int, mode: str = "full", dense_threshold: float = 0.4,
                      full_every_steps: int = 10, force_full: bool = False, transport: str = "object_store"):
        """-> (payload for RolloutWorker.update_weights, stats {bytes, density, full}).

        mode "full": fp32 buckets (the engine gets the exact weights); "delta": a bf16 DeltaUpdate.
        transport "broadcast": the payload is (skeleton, nbytes) for RolloutWorker.receive_update and
        the bytes wait here for `broadcast_pending`.
        """
        t0 = time.perf_counter()
        if mode == "full":
            payload = pack_buckets(self.model.named_parameters(), bucket_bytes)
            stats = {"bytes": sum(b.nbytes for b in payload), "density": 1.0, "full": True}
        elif mode == "delta":
            if self._sender is None or (self._sender.dense_threshold, self._sender.full_every_steps) != \
                    (dense_threshold, full_every_steps):
                self._sender = DeltaSender(dense_threshold, full_every_steps)
            payload = self._sender.encode(self.model.named_parameters(), bucket_bytes, version, force_full)
            stats = {"bytes": payload.nbytes, "density": payload.density(), "full": payload.is_full}
        else:
            raise ValueError(f"sync mode must be 'full' or 'delta', got {mode!r}")
        if transport == "broadcast":
            skeleton, self._pending = flatten_payload(payload)
            payload = (skeleton, int(self._pending.nbytes))
        return payload, {**stats, "encode_s": time.perf_counter() - t0}

    def default_sync_backend(self) -> str:
        return default_backend()

    def send_vllm(self, engines: list, version: int, timeout_s: float) -> dict:
        """sync.transport: vllm: the full weights into every engine through vLLM's own weight-transfer
        interface (rollout/vllm_transfer.py; the rendezvous once per set of engines). -> sync stats."""
        from rollout.vllm_transfer import EngineActorClient, VLLMWeightSender
        if getattr(self, "_vllm_key", None) != (key := tuple(e._actor_id.hex() for e in engines)):
            self._vllm_sender, self._vllm_key = VLLMWeightSender(EngineActorClient(engines), timeout_s=timeout_s), key
        t0 = time.perf_counter()
        self._vllm_sender.send(self.model.named_parameters(), version)
        return {"bytes": sum(p.numel() * p.element_size() for p in self.model.parameters()), "density": 1.0,
                "full": True, "encode_s": time.perf_counter() - t0}

    def open_sync_group(self, world_size: int, timeout_s: float) -> tuple[str, int]:
        """Rank 0 of the broadcast transport: listen, -> (host, port) for the engines."""
        self._store, host, port = SyncGroup.listen(world_size, timeout_s)
        return host, port

    def join_sync_group(self, world_size: int, backend: str, timeout_s: float) -> int:
        self._group = SyncGroup.join("", 0, 0, world_size, backend, timeout_s, store=self._store)
        return 0

    def broadcast_pending(self) -> int:
        """Send the bytes of the last exported payload to every engine in the group. -> bytes sent."""
        flat, self._pending = self._pending, None
        self._group.broadcast(flat, flat.nbytes)
        return int(flat.nbytes)

    def weights_crc(self) -> dict[str, int]:
        """bf16 CRC32 per parameter name: what every engine must hold after a sync."""
        return bf16_crcs(self.model.named_parameters())


LearnerActor = ray.remote(num_cpus=0.5, max_restarts=0)(SyncingLearner)
