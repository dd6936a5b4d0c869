"""Memory preflight: before any actor starts, each placement bundle's peak memory is estimated from the
model config and the recipe, compared with the bundle's budget, and a recipe that cannot fit is refused
with one line naming the largest part, its estimate, the budget and the knob that would shrink it.

Notation (all estimates in MiB = 2**20 bytes): P parameters, h hidden, n layers, a heads, d head_dim,
k = kv_heads * d, i intermediate, V vocab; b_m master bytes (learner weights + AdamW), b_c compute bytes
(model.dtype); a micro-batch of S samples from G prompts of Lp tokens with T completion tokens.

    learner   params P*b_m/N + grads P*b_m/N + AdamW 2*P*b_m/N   (fsdp: N = ranks; ddp, one rank: N = 1)
              + activations of one micro-batch (`learner_activations_mb`) + runtime baseline
    engine    weights P*b_c + KV cache 2*n*k*b_c*rows*(Lp+T) + decode logits + runtime baseline
    bundle    the sum of its processes (on a GPU, the larger of the train and generate phases: colocated
              engines sleep while learners train, learners offload AdamW state / params while engines generate)

Budgets: `placement.memory_budget_mb` per bundle; else a GPU bundle gets its GPU share x the device's
memory, and all CPU bundles share the host's MemAvailable (what the run can take beside what already runs;
MemTotal would pass runs that the OOM killer then ends). Measured against real peaks by `rl bench preflight`.
Example: check(cfg, roles_from(cfg)) -> [{"bundle": 0, "actors": [...], "need_mb": 5600.0, ...}]
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from rl.data.mapping import ConfigError
from rl.workers.placement import Role, bundles_for

MIB = 2**20
# RSS of a fresh python after `import ray, torch, transformers.models.llama.modeling_llama,
# rl.workers.learner, rl.workers.rollout_worker` (369 MiB; torch alone 220, + transformers' llama 334),
# measured on this 2-core CPU box with torch 2.x / transformers 5.19; `rl bench preflight` re-measures it
# inside an idle Ray actor.
RUNTIME_BASELINE_MB = 370.0
CUDA_CONTEXT_MB = 512.0  # a process's CUDA context on its GPU: NOT measured here (no GPU on this machine)
HF_MAX_BATCH_SAMPLES = 256  # RolloutWorker's default: rows the hf engine decodes at once
FALLBACK_PROMPT_TOKENS = 128  # when the task's prompts cannot be encoded (an assumption, reported)
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class ModelShape:
    num_params: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int


# -- pure estimates (numbers in, MiB out) ------------------------------------------------------------
def weights_mb(num_params: int, bytes_per: int, world_size: int = 1) -> float:
    """P * b / N: parameters (or their gradients) of one rank. weights_mb(2**20, 4) == 4.0"""
    return num_params * bytes_per / world_size / MIB


def optimizer_mb(num_params: int, bytes_per: int, world_size: int = 1) -> float:
    """AdamW's exp_avg + exp_avg_sq, in the parameters' dtype: 2 * P * b / N."""
    return 2 * weights_mb(num_params, bytes_per, world_size)


def layer_token_floats(m: ModelShape) -> tuple[int, int]:
    """-> (elements kept per query token, per key position) by one Llama decoder layer for backward.
    Per query token: 2 RMSNorms (input + normalised: 4h), q and its rotate-half and rotated copy (3ad),
    attention output and its contiguous o_proj input (2ad), k and its rotate-half (2k), the MLP's gate,
    SiLU(gate), up and their product (4i). Per key position: the keys and values repeated to all heads
    for SDPA (a mask rules out its GQA path: 2ad). The attention kernel's own buffers are left out."""
    ad = m.heads * m.head_dim
    return 4 * m.hidden + 5 * ad + 2 * m.kv_heads * m.head_dim + 4 * m.intermediate, 2 * ad


def learner_activations_mb(m: ModelShape, samples: int, groups: int, prompt_tokens: int,
                           completion_tokens: int, compute_bytes: int, checkpointing: bool) -> float:
    """Activations of one micro-batch kept for backward, + the vocabulary part.

    Shared prefill (default): the prompt pass has G*Lp query tokens and key positions, the completion
    pass S*T query tokens over S*(Lp+T) keys: n * (q_floats * (G*Lp + S*T) + kv_floats * (G*Lp + S*(Lp+T))) * b_c.
    Gradient checkpointing (each sample runs prompt+completion, L = Lp+T): every layer keeps only its input
    (n * S*L*h * b_c) and one layer is recomputed at a time (q_floats*S*L + kv_floats*S*L) * b_c.
    Vocabulary: the fp32 log-softmax over V kept for backward plus the logits, their exp and product
    (entropy) or three gradients in backward: 4 * S*T*V*4 bytes, which dominates for a 49k vocab.
    Example: SmolLM2, S=64, G=8, Lp=44, T=16, fp32 -> ~3170 MiB (768 of it the vocabulary part)."""
    q, kv = layer_token_floats(m)
    S, G, Lp, T = samples, groups, prompt_tokens, completion_tokens
    if checkpointing:
        L = Lp + T
        layers = (m.layers * S * L * m.hidden + (q + kv) * S * L) * compute_bytes
    else:
        layers = m.layers * (q * (G * Lp + S * T) + kv * (G * Lp + S * (Lp + T))) * compute_bytes
    vocab = 4 * S * T * m.vocab * 4
    return (layers + vocab) / MIB


def kv_cache_mb(m: ModelShape, tokens_in_flight: int, bytes_per: int) -> float:
    """2 (keys, values) * n * kv_heads * d * b * tokens. kv_cache_mb(shape(n=2, kv_heads=2, d=4), 1024, 4) == 0.125"""
    return 2 * m.layers * m.kv_heads * m.head_dim * bytes_per * tokens_in_flight / MIB


def engine_rows(prompts_per_step: int, samples_per_prompt: int, engines: int,
                max_batch_samples: int = HF_MAX_BATCH_SAMPLES) -> int:
    """Sequences one hf engine decodes at once: its share of the step's prompts (round-robin) x samples,
    at most max_batch_samples (whole requests; at least one). engine_rows(8, 8, 1) == 64"""
    per_engine = math.ceil(prompts_per_step / max(engines, 1)) * samples_per_prompt
    return min(per_engine, max(max_batch_samples, samples_per_prompt))


def decode_logits_mb(m: ModelShape, rows: int) -> float:
    """One decode step's fp32 logits, tempered copy, log-softmax and sampling probabilities: 4 * rows*V*4."""
    return 4 * rows * m.vocab * 4 / MIB


# -- per process ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Workload:
    """The recipe's numbers that size the processes (bound from the config at the edge)."""
    master_bytes: int
    compute_bytes: int
    samples: int  # per learner micro-batch
    groups: int
    prompt_tokens: int
    completion_tokens: int
    checkpointing: bool
    rows: int  # per engine
    shard: int  # fsdp ranks the learner state is split over (1: replicated)
    reference_in_learner: bool
    engine: str
    vllm_mb: float | None  # vllm: its own reservation (weights + KV cache) when known


def learner_parts(m: ModelShape, w: Workload, baseline: float) -> dict[str, float]:
    P = m.num_params
    parts = {"params": weights_mb(P, w.master_bytes, w.shard), "grads": weights_mb(P, w.master_bytes, w.shard),
             "optimizer": optimizer_mb(P, w.master_bytes, w.shard),
             "activations": learner_activations_mb(m, w.samples, w.groups, w.prompt_tokens, w.completion_tokens,
                                                   w.compute_bytes, w.checkpointing), "baseline": baseline}
    if w.reference_in_learner:
        parts["reference weights"] = weights_mb(P, w.compute_bytes)
    return parts


def engine_parts(m: ModelShape, w: Workload, baseline: float) -> dict[str, float]:
    if w.engine == "vllm" and w.vllm_mb is not None:
        return {"vllm reservation": w.vllm_mb, "baseline": baseline}
    tokens = w.rows * (w.prompt_tokens + w.completion_tokens)
    return {"weights": weights_mb(m.num_params, w.compute_bytes), "kv cache": kv_cache_mb(m, tokens, w.compute_bytes),
            "activations": decode_logits_mb(m, w.rows), "baseline": baseline}


def critic_parts(m: ModelShape, w: Workload, baseline: float) -> dict[str, float]:
    """A value model trained like the policy, without the vocabulary part (a scalar head)."""
    parts = learner_parts(m, w, baseline)
    parts["activations"] -= 4 * w.samples * w.completion_tokens * m.vocab * 4 / MIB
    parts.pop("reference weights", None)
    return parts


def reference_parts(m: ModelShape, w: Workload, baseline: float) -> dict[str, float]:
    return {"weights": weights_mb(m.num_params, w.compute_bytes),
            "activations": 2 * w.samples * w.completion_tokens * m.vocab * 4 / MIB, "baseline": baseline}


PARTS = {"learner": learner_parts, "engine": engine_parts, "critic": critic_parts, "reference": reference_parts}


# -- bundles: which processes share one, and what each holds on the device per phase -------------------
def phase_parts(role: str, parts: dict[str, float], phase: str, on_gpu: bool, moves: dict[str, bool]) -> dict:
    """What a process holds on its device in `phase` ("train" | "generate"). On a CPU host memory is the
    device: nothing leaves, and glibc keeps freed activations resident, so every part counts in both.
    On a GPU (colocated): a sleeping engine holds nothing but its context while the learners train; while
    the engines generate a learner holds no activations, nor AdamW state / params it offloaded."""
    if not on_gpu:
        return parts
    drop: set[str] = set()
    if role == "engine" and phase == "train" and moves["engine_sleep"]:
        drop = set(parts) - {"baseline"}
    elif role in ("learner", "critic", "reference") and phase == "generate":
        drop = {"activations"} | ({"optimizer"} if moves["offload_optimizer"] and role == "learner" else set()) \
            | ({"params", "reference weights"} if moves["offload_params"] and role == "learner" else set())
    return {k: v for k, v in parts.items() if k not in drop}


def bundle_estimates(roles: dict[str, Role], per_role: dict[str, dict[str, float]], moves: dict[str, bool],
                     gpu_baseline: float = CUDA_CONTEXT_MB) -> list[dict]:
    """-> per bundle {bundle, actors, gpus, phase, need_mb, parts: [{actor, role, part, mb}]} at the bundle's
    peak phase. per_role holds each role's parts with the host runtime baseline; on a GPU the baseline that
    counts against device memory is the CUDA context instead."""
    bundles, index = bundles_for(roles)
    out = []
    for b, res in enumerate(bundles):
        on_gpu = res.get("GPU", 0.0) > 0
        members = [(role, i) for role, slots in index.items() for i, slot in enumerate(slots) if slot == b]
        best: tuple | None = None
        for phase in ("train", "generate"):
            parts = [{"actor": actor_label(role, i), "role": role, "part": name, "mb": mb}
                     for role, i in members
                     for name, mb in phase_parts(role, dict(per_role[role], **({"baseline": gpu_baseline} if on_gpu
                                                                              else {})), phase, on_gpu, moves).items()]
            need = sum(p["mb"] for p in parts)
            if best is None or need > best[1]:
                best = (phase, need, parts)
        out.append({"bundle": b, "actors": [actor_label(r, i) for r, i in members], "gpus": res.get("GPU", 0.0),
                    "phase": best[0], "need_mb": best[1], "parts": best[2]})
    return out


def actor_label(role: str, i: int) -> str:
    return {"learner": f"learner rank {i}", "critic": f"critic rank {i}"}.get(role, f"{role} {i}")


def refusal(estimates: list[dict], memory_budget_mb: float | None, host_mb: float | None, gpu_mb: float | None,
            details: dict[tuple[str, str], str], knobs: dict[tuple[str, str], str]) -> str | None:
    """The one-line refusal for the first bundle over its budget (or the CPU bundles together over the host's
    memory), else None. details / knobs: (role, part) -> what sizes that part / what would shrink it."""
    def line(what: str, verb: str, need: float, budget: str, parts: list[dict]) -> str:
        top = max(parts, key=lambda p: p["mb"])
        key = (top["role"], top["part"])
        detail = f" ({details[key]})" if key in details else ""
        return (f"preflight: {what} {verb} ~{need:.0f} MiB, budget {budget}: the largest part is {top['actor']} "
                f"{top['part']} ~{top['mb']:.0f} MiB{detail}; {knobs.get(key, 'give the run more memory')}")

    for e in estimates:
        what = f"bundle {e['bundle']} ({' + '.join(e['actors'])})"
        if memory_budget_mb is not None:
            if e["need_mb"] > memory_budget_mb:
                return line(what, "needs", e["need_mb"], f"{memory_budget_mb:.0f} MiB (placement.memory_budget_mb)",
                            e["parts"])
        elif e["gpus"] > 0 and gpu_mb is not None and e["need_mb"] > e["gpus"] * gpu_mb:
            return line(what, "needs", e["need_mb"], f"{e['gpus'] * gpu_mb:.0f} MiB ({e['gpus']:g} x {gpu_mb:.0f} "
                        "MiB GPU; placement.memory_budget_mb overrides)", e["parts"])
    cpu = [e for e in estimates if e["gpus"] == 0]
    need = sum(e["need_mb"] for e in cpu)
    if memory_budget_mb is None and cpu and host_mb is not None and need > host_mb:
        what = f"the run's {len(cpu)} CPU bundle(s) ({'; '.join(a for e in cpu for a in e['actors'])})"
        return line(what, "need", need, f"{host_mb:.0f} MiB (host MemAvailable; placement.memory_budget_mb sets "
                    "one per bundle)", [p for e in cpu for p in e["parts"]])
    return None


# -- the recipe bound at the edge -----------------------------------------------------------------------
def workload(cfg, roles: dict[str, Role], prompt_tokens: int, shape: ModelShape, device_mb: float | None) -> Workload:
    """The numbers of `cfg` that size each process: a learner rank's micro-batch is its share of the
    step's samples, at most trainer.microbatch_samples and its share of trainer.minibatch_samples."""
    t, r, res = cfg.trainer, cfg.rollout, cfg.resources
    ranks = roles["learner"].count if "learner" in roles else 1
    per_rank = math.ceil(t.prompts_per_step * r.samples_per_prompt / ranks)
    samples = max(1, min(t.microbatch_samples, math.ceil(t.minibatch_samples / ranks), per_rank))
    compute = BYTES[cfg.model.dtype]
    vllm_mb = None
    if r.engine == "vllm":
        weights = weights_mb(shape.num_params, compute)
        vllm_mb = weights + r.kv_cache_mb if r.kv_cache_mb else (
            r.gpu_memory_utilization * device_mb if device_mb else None)
    engines = roles["engine"].count if "engine" in roles else r.num_workers
    return Workload(master_bytes=BYTES[cfg.model.master_dtype], compute_bytes=compute, samples=samples,
                    groups=math.ceil(samples / r.samples_per_prompt), prompt_tokens=prompt_tokens,
                    completion_tokens=r.max_new_tokens, checkpointing=t.gradient_checkpointing,
                    rows=engine_rows(t.prompts_per_step, r.samples_per_prompt, engines),
                    shard=ranks if res.learner.sharding == "fsdp" else 1,
                    reference_in_learner=cfg.algorithm.kl_coef > 0, engine=r.engine, vllm_mb=vllm_mb)


def explain(cfg, w: Workload, shape: ModelShape, on_gpu: bool = False) -> tuple[dict, dict]:
    """-> (details, knobs) per (role, part) for the refusal line (offloading only helps on a GPU)."""
    seq = w.prompt_tokens + w.completion_tokens
    ranks = cfg.resources.learner.num_actors
    state = (f"{shape.num_params / 1e6:.1f}M parameters in {cfg.model.master_dtype}"
             + (f", 1/{w.shard} per rank" if w.shard > 1 else ""))
    shard = (f"shard the learner state over more ranks (resources.learner.num_actors: {2 * ranks} with "
             "resources.learner.sharding: fsdp)" + (" or set model.master_dtype: bfloat16"
                                                     if cfg.model.master_dtype == "float32" else ""))
    acts = "lower trainer.microbatch_samples" + ("" if w.checkpointing else
                                                 " or set trainer.gradient_checkpointing: true")
    batch = ("lower trainer.prompts_per_step or rollout.samples_per_prompt, or spread the prompts over more engines "
             "(rollout.num_workers)")
    base = ("run fewer actors on this memory (rollout.num_workers, resources.learner.num_actors) or give each "
            "bundle its own device")
    details = {("learner", "activations"): f"micro-batch {w.samples} x {seq} tokens",
               ("critic", "activations"): f"micro-batch {w.samples} x {seq} tokens",
               ("engine", "kv cache"): f"{w.rows} sequences x {seq} tokens in {cfg.model.dtype}",
               ("engine", "activations"): f"{w.rows} sequences' logits over {shape.vocab} tokens",
               ("engine", "weights"): f"{shape.num_params / 1e6:.1f}M parameters in {cfg.model.dtype}",
               **{(role, p): state for role in ("learner", "critic") for p in ("params", "grads", "optimizer")}}
    knobs = {("learner", "activations"): acts, ("critic", "activations"): acts,
             ("engine", "kv cache"): batch, ("engine", "activations"): batch,
             ("engine", "weights"): "set model.dtype: bfloat16" if cfg.model.dtype == "float32" else base,
             ("engine", "vllm reservation"): "lower rollout.kv_cache_mb or rollout.gpu_memory_utilization",
             ("learner", "reference weights"): "set algorithm.kl_coef: 0 (no reference model) or model.dtype: bfloat16",
             ("reference", "weights"): "set critic.kl_penalty_coef: 0 (no reference model) or model.dtype: bfloat16",
             ("reference", "activations"): "lower trainer.microbatch_samples",
             **{(role, "baseline"): base for role in PARTS},
             **{("learner", p): shard for p in ("params", "grads", "optimizer")},
             **{("critic", p): "shard the critic (resources.critic.num_actors, resources.critic.sharding: fsdp)"
                for p in ("params", "grads", "optimizer")}}
    if on_gpu and cfg.placement.mode == "colocated" and not cfg.placement.offload_optimizer:
        knobs[("learner", "optimizer")] = "set placement.offload_optimizer: true or " + shard
    details.update({(role, "baseline"): "python + torch + transformers + ray runtime" for role in PARTS})
    return details, knobs


def estimate(cfg, roles: dict[str, Role], shape: ModelShape, prompt_tokens: int,
             gpu_mb: float | None = None, host_total_mb: float | None = None) -> tuple[list[dict], Workload]:
    """Per-bundle estimates of the run's placement (roles as rl.build.roles_from makes them)."""
    device_mb = gpu_mb if any(r.gpus > 0 for r in roles.values()) else host_total_mb
    w = workload(cfg, roles, prompt_tokens, shape, device_mb)
    critic_w = Workload(**{**w.__dict__, "master_bytes": w.compute_bytes, "reference_in_learner": False,
                           "shard": roles["critic"].count if "critic" in roles and
                           cfg.resources.critic.sharding == "fsdp" else 1})
    per_role = {role: PARTS[role](shape, critic_w if role == "critic" else w, RUNTIME_BASELINE_MB)
                for role in roles if role in PARTS}
    p, together = cfg.placement, cfg.placement.mode == "colocated"
    moves = {"engine_sleep": cfg.rollout.sleep_between_phases or (together and p.engine_sleep),
             "offload_optimizer": together and p.offload_optimizer, "offload_params": together and p.offload_params}
    return bundle_estimates(roles, per_role, moves), w


# -- what the preflight reads: model config, prompt lengths, device memory --------------------------------
def model_shape(name: str, tokenizer=None) -> ModelShape:
    """The model's sizes from its HF config, without its weights (parameters counted on the meta device;
    tied embeddings once). tiny-llama: its random config; smollm2-135m: the cached converted folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from rl.workers.models import TINY, load_tokenizer, resolve_model_path, tiny_llama_config
    config = (tiny_llama_config(len(tokenizer or load_tokenizer(name))) if name == TINY
              else AutoConfig.from_pretrained(resolve_model_path(name)))
    with torch.device("meta"):
        num_params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    text = config.get_text_config()
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return ModelShape(num_params=num_params, hidden=text.hidden_size, layers=text.num_hidden_layers, heads=heads,
                      kv_heads=getattr(text, "num_key_value_heads", None) or heads, head_dim=head_dim,
                      intermediate=getattr(text, "intermediate_size", None) or 4 * text.hidden_size,
                      vocab=text.vocab_size)


def task_prompt_tokens(cfg, tokenizer, sample: int = 256) -> int:
    """The longest of the task's first `sample` training prompts, chat template included, in tokens
    (FALLBACK_PROMPT_TOKENS when the task cannot be built here)."""
    from envs.tasks import build_task
    from rl.data.prompts import PromptEncoder
    t = cfg.task
    try:
        task = build_task(t.name, digits=t.digits, operations=t.operations, train_size=min(t.train_size, sample),
                          eval_size=1, seed=cfg.run.seed, prompt_template=t.prompt_template,
                          system_prompt=t.system_prompt, path=t.path, eval_path=t.eval_path,
                          prompt_column=t.prompt_column, answer_column=t.answer_column)
        encode = PromptEncoder(tokenizer, t.system_prompt)
        return max(len(encode(ex)) for ex in task.train[:sample])
    except Exception:  # noqa: BLE001 - an unbuildable task fails later with its own error; size with a guess
        return FALLBACK_PROMPT_TOKENS


def host_memory_mb(field: str = "MemAvailable") -> float:
    import re
    with open("/proc/meminfo") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1)) / 1024


def gpu_memory_mb() -> float | None:
    """The first visible GPU's memory as the driver process sees it (None: it sees none)."""
    import torch
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / MIB


def check(cfg, roles: dict[str, Role], shape: ModelShape | None = None, prompt_tokens: int | None = None,
          host_mb: float | None = None, gpu_mb: float | None = None) -> list[dict]:
    """Estimates every bundle of the run's placement and raises ConfigError (one line: the bundle, its
    need, its budget, the largest part and the knob that shrinks it) when one cannot fit. shape,
    prompt_tokens, host_mb (MemAvailable) and gpu_mb are read here unless given. -> the estimates."""
    tok = None
    if shape is None or prompt_tokens is None:
        from rl.workers.models import load_tokenizer
        tok = load_tokenizer(cfg.model.name)
    shape = shape or model_shape(cfg.model.name, tok)
    prompt_tokens = prompt_tokens if prompt_tokens is not None else task_prompt_tokens(cfg, tok)
    uses_gpu = any(r.gpus > 0 for r in roles.values())
    gpu_mb = gpu_mb if gpu_mb is not None or not uses_gpu else gpu_memory_mb()
    host_mb = host_mb if host_mb is not None else host_memory_mb()
    estimates, w = estimate(cfg, roles, shape, prompt_tokens, gpu_mb, host_memory_mb("MemTotal"))
    details, knobs = explain(cfg, w, shape, uses_gpu)
    line = refusal(estimates, cfg.placement.memory_budget_mb, host_mb, gpu_mb, details, knobs)
    if line is not None:
        raise ConfigError(line)
    return estimates
