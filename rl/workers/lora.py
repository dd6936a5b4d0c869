"""LoRA on the learner (`model.lora` in the recipe): the policy wrapped with peft, only the adapters train
and sync. W = W0 + (alpha / r) * B @ A per target linear layer (Hu et al. 2021, arXiv:2106.09685).

- The frozen base W0 lives in the compute dtype `model.dtype` (bf16 or fp32: exactly the weights the
  engines load), the adapters A [r, in], B [out, r] in fp32; AdamW holds the adapters only.
- The reference policy of the KL term is the same model with its adapters switched off (peft's
  `disable_adapter()`), not a second copy.
- Weight sync ships a `rollout.lora.LoraUpdate` (fp32 A and B); each engine merges it into its own
  base weights (`rollout.lora.LoraMerger`). The learner's `weights_checksum` is that of the merged
  effective weights (`effective_weights`), computed by the same `merged_weight`, so
  sync/checksum == sync/checksum_engine{j} bit for bit. Stats add `full_bytes` (what a full sync of
  this model ships) for `sync/full_bytes` and `sync/bytes_ratio_vs_full`.
- Checkpoints hold the adapters (learner.pt: adapters by base weight name, optimizer, scheduler, RNG;
  adapter/: peft's own adapter folder), not the model; `rl export` merges them into a plain HF folder
  (`export_merged`).

Example: LoraLearner("tiny-llama", lora=LoraSettings(r=8, alpha=16)).export_update(32 << 20, 1)
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ray
import torch

from rl.workers.learner import SyncingLearner, _rng_state, _set_rng_state, save_hf_folder
from rl.workers.models import load_model
from rollout.delta_sync import bf16_crcs
from rollout.lora import merged_weight, pack_adapters
from rollout.transport import flatten_payload
from rollout.weight_sync import pack_buckets, weights_checksum


@dataclass(frozen=True)
class LoraSettings:
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = field(default=("q_proj", "k_proj", "v_proj", "o_proj"))

    @property
    def scaling(self) -> float:
        return self.alpha / self.r


def wrap_policy(base, lora: LoraSettings):
    """peft's LoRA around `base` (frozen), adapters in fp32 (B = 0 at the start: the base's outputs)."""
    from peft import LoraConfig, get_peft_model
    cfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                     target_modules=list(lora.target_modules), bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(base, cfg)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    return model


def lora_modules(peft_model) -> dict[str, torch.nn.Module]:
    """Plain-model weight name (e.g. model.layers.0.self_attn.q_proj.weight) -> its peft LoRA layer."""
    return {f"{name}.weight": m for name, m in peft_model.get_base_model().named_modules()
            if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})}


def adapter_weights(peft_model) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Plain-model weight name -> (A [r, in], B [out, r]) of the active adapter."""
    return {n: (m.lora_A["default"].weight, m.lora_B["default"].weight) for n, m in lora_modules(peft_model).items()}


def effective_weights(peft_model, scaling: float):
    """(plain-model name, weight) of the model as it would be merged: the base's weights, each target
    replaced by W0 + scaling * B @ A (`rollout.lora.merged_weight`; what the engines hold after a sync)."""
    adapters = adapter_weights(peft_model)
    for name, p in peft_model.get_base_model().named_parameters():
        if ".lora_" in name:
            continue
        name = name.replace(".base_layer.", ".")
        yield name, (merged_weight(p, *adapters[name], scaling) if name in adapters else p.detach())


def merge_adapters(model, adapters: dict[str, tuple[torch.Tensor, torch.Tensor]], scaling: float):
    """Writes W0 + scaling * B @ A into the plain `model`'s weights in place. -> model."""
    with torch.no_grad():
        for name, (a, b) in adapters.items():
            p = model.get_parameter(name)
            p.copy_(merged_weight(p, a, b, scaling))
    return model


class AdapterFreeRef:
    """The reference policy pi_ref for the KL term: the LoRA model with its adapters disabled, i.e. the
    frozen base (no second copy of the model). Called like a model by `completion_logprobs`."""

    def __init__(self, peft_model):
        self.peft = peft_model

    def __call__(self, *args, **kwargs):
        with self.peft.disable_adapter():
            return self.peft(*args, **kwargs)

    @property
    def lm_head(self):
        return self.peft.get_base_model().lm_head

    @property
    def is_gradient_checkpointing(self) -> bool:
        return bool(getattr(self.peft.get_base_model(), "is_gradient_checkpointing", False))

    @property
    def training(self) -> bool:
        return self.peft.training


class LoraLearner(SyncingLearner):
    """The learner with LoRA adapters on its policy; the sender side of adapter-only weight sync."""

    def __init__(self, model_name: str, lora: LoraSettings = LoraSettings(), dtype: str = "float32",
                 seed: int = 0, **kwargs):
        super().__init__(model_name, dtype=dtype, seed=seed, **kwargs)
        self.lora, self.seed = lora, seed
        base = self.model.to(getattr(torch, dtype))  # frozen: in the compute dtype, as the engines load it
        self.model = wrap_policy(base, lora).to(self.device).train()
        if self.ref is not None:
            self.ref = AdapterFreeRef(self.model)
        self.opt, self.sched = self._make_optimizer()
        self.full_bytes = sum(t.numel() * t.element_size() for _, t in self._effective())

    def _make_optimizer(self):
        """AdamW over the trainable (adapter) parameters only."""
        lr, weight_decay, warmup_steps = self._optimizer_settings
        opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=lr,
                                weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / warmup_steps) if warmup_steps > 0 else 1.0)
        return opt, sched

    def _effective(self):
        if not hasattr(self.model, "disable_adapter"):  # called by Learner.__init__ before wrapping
            return self.model.named_parameters()
        return effective_weights(self.model, self.lora.scaling)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The adapters by peft name (what the optimizer trains), detached CPU copies."""
        return {n: p.detach().cpu().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def frozen_checksum(self) -> int:
        """weights_checksum of the frozen base weights (must not change while training)."""
        return weights_checksum(p for p in self.model.parameters() if not p.requires_grad)

    @ray.method(num_returns=2)
    def export_update(self, bucket_bytes: int, version: int, mode: str = "full", dense_threshold: float = 0.4,
                      full_every_steps: int = 10, force_full: bool = False, transport: str = "object_store"):
        """-> (LoraUpdate of the adapters, stats {bytes, full_bytes, density, full}); every sync ships
        the adapters whole (mode and the delta settings do not apply: they are already small)."""
        t0 = time.perf_counter()
        payload = pack_adapters(adapter_weights(self.model), self.lora.scaling, bucket_bytes)
        stats = {"bytes": payload.nbytes, "full_bytes": self.full_bytes, "density": 1.0, "full": True}
        if transport == "broadcast":
            skeleton, self._pending = flatten_payload(payload)
            payload = (skeleton, int(self._pending.nbytes))
        return payload, {**stats, "encode_s": time.perf_counter() - t0}

    def export_weights(self, bucket_bytes: int) -> list:
        return pack_buckets(self._effective(), bucket_bytes)

    def weights_checksum(self, dtype: str | None = None) -> int:
        """The checksum of the merged effective weights (what every engine holds after a sync)."""
        return weights_checksum((t for _, t in self._effective()), getattr(torch, dtype) if dtype else None)

    def weights_crc(self) -> dict[str, int]:
        return bf16_crcs(self._effective())

    def send_vllm(self, engines: list, version: int, timeout_s: float) -> dict:
        raise NotImplementedError("model.lora syncs adapters over sync.transport object_store or broadcast")

    def _realloc_held(self) -> dict:
        raise NotImplementedError("model.lora syncs adapters over sync.transport object_store or broadcast")

    # -- checkpoints ----------------------------------------------------------------------
    def save(self, path: str) -> None:
        """learner.pt (adapters by plain weight name, optimizer, scheduler, RNG, LoRA settings) and
        adapter/ (peft's adapter folder); the merged model comes from `rl export`."""
        adapters = {n: (a.detach().cpu(), b.detach().cpu()) for n, (a, b) in adapter_weights(self.model).items()}
        torch.save({"adapters": adapters, "lora": asdict(self.lora), "optimizer": self.opt.state_dict(),
                    "scheduler": self.sched.state_dict(), "rng": _rng_state()}, Path(path) / "learner.pt")
        self.model.save_pretrained(str(Path(path) / "adapter"))

    def load(self, path: str) -> None:
        state = torch.load(Path(path) / "learner.pt", weights_only=False, map_location=self.device)
        modules = lora_modules(self.model)
        if set(state["adapters"]) != set(modules):
            raise ValueError(f"{path}: its adapters target other weights than model.lora.target_modules")
        with torch.no_grad():
            for name, (a, b) in state["adapters"].items():
                modules[name].lora_A["default"].weight.copy_(a)
                modules[name].lora_B["default"].weight.copy_(b)
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])

    def save_hf(self, path: str, tokenizer_name: str) -> str:
        """A plain HF folder of the merged model (transformers and vLLM load it without peft)."""
        base = load_model(self.model_name, self.dtype, seed=self.seed)
        merged = merge_adapters(base, adapter_weights(self.model), self.lora.scaling)
        return save_hf_folder(merged, tokenizer_name, path)


def is_lora_checkpoint(ckpt: str | Path) -> bool:
    return (Path(ckpt) / "learner.pt").exists() and (Path(ckpt) / "adapter").is_dir()


def merged_checkpoint_model(ckpt: str | Path, model_name: str, dtype: str, seed: int):
    """A LoRA checkpoint's policy as a plain model: the base (`model_name` in `dtype`, as the run trained
    on it) with W0 + (alpha / r) * B @ A written into every target weight."""
    state = torch.load(Path(ckpt) / "learner.pt", weights_only=False, map_location="cpu")
    lora = LoraSettings(**{**state["lora"], "target_modules": tuple(state["lora"]["target_modules"])})
    return merge_adapters(load_model(model_name, dtype, seed=seed), state["adapters"], lora.scaling)


def export_merged(ckpt: str | Path, out: str | Path, model_name: str, dtype: str, seed: int) -> Path:
    """A LoRA checkpoint -> a plain HF folder (safetensors, config, tokenizer) of its merged policy."""
    return Path(save_hf_folder(merged_checkpoint_model(ckpt, model_name, dtype, seed), model_name, str(out)))


LoraLearnerActor = ray.remote(num_cpus=0.5, max_restarts=0)(LoraLearner)
