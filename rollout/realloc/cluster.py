"""Cluster specs for `rl plan`: hardware, models and the RLHF workload, read from YAML.

A spec is strict: an unknown key, a missing required field or a wrong type raises
ClusterSpecError naming the dotted key (the CLI prints it on one line and exits 2).

Example (recipes/clusters/llama7b-8gpu.yaml):
    hardware: {nodes: 1, gpus_per_node: 8, device_memory_gib: 80, peak_tflops: 989, ...}
    models: {actor: llama-7b, critic: llama-7b, ref: llama-7b, reward: llama-7b}
    workload: {algorithm: ppo, batch_seqs: 512, prompt_len: 1024, gen_len: 1024, minibatches: 4}
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass

import yaml

from rollout.realloc.cost_model import Hardware, LlamaShape

PRESETS = {
    "llama-7b": LlamaShape(32, 4096, 11008, 32, 32, 32000),
    "llama-13b": LlamaShape(40, 5120, 13824, 40, 40, 32000),
    "llama-34b": LlamaShape(48, 8192, 22016, 64, 8, 32000),
    "llama-70b": LlamaShape(80, 8192, 28672, 64, 8, 32000),
    # the models measured on this CPU (calibration): tiny-llama and SmolLM2-135M
    "tiny-llama": LlamaShape(2, 64, 128, 4, 2, 49152, tied_embeddings=True),
    "smollm2-135m": LlamaShape(30, 576, 1536, 9, 3, 49152, tied_embeddings=True),
}
MODEL_ROLES = ("actor", "critic", "ref", "reward")
_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


class ClusterSpecError(ValueError):
    """A cluster spec problem, one line naming the key."""


@dataclass(frozen=True)
class Workload:
    algorithm: str = "ppo"  # ppo (with critic) | grpo (no critic)
    batch_seqs: int = 512
    prompt_len: int = 1024
    gen_len: int = 1024
    minibatches: int = 4


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    hardware: Hardware
    models: dict  # role -> LlamaShape
    workload: Workload


def _typed(cls, raw, where: str):
    """Build dataclass `cls` from a mapping: unknown keys, missing fields and types are errors."""
    if not isinstance(raw, dict):
        raise ClusterSpecError(f"{where}: expected a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {where}.{close[0]}?)" if close else ""
            raise ClusterSpecError(f"{where}.{key}: unknown key{hint}")
    kwargs = {}
    for name, f in fields.items():
        if name not in raw:
            if f.default is dataclasses.MISSING:
                raise ClusterSpecError(f"{where}.{name}: missing required field")
            continue
        value, want = raw[name], _TYPES[f.type] if isinstance(f.type, str) else f.type
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise ClusterSpecError(f"{where}.{name}: expected {want.__name__}, got {value!r}")
        if want in (int, float) and value <= 0:
            raise ClusterSpecError(f"{where}.{name}: must be > 0, got {value!r}")
        kwargs[name] = value
    return cls(**kwargs)


def _model(raw, where: str) -> LlamaShape:
    if isinstance(raw, str):
        if raw not in PRESETS:
            raise ClusterSpecError(f"{where}: unknown model {raw!r}; presets: {', '.join(PRESETS)}")
        return PRESETS[raw]
    return _typed(LlamaShape, raw, where)


def parse_cluster_spec(raw, name: str = "cluster") -> ClusterSpec:
    """Validate a loaded YAML mapping into a ClusterSpec."""
    if not isinstance(raw, dict):
        raise ClusterSpecError(f"spec: expected a mapping at the top level, got {type(raw).__name__}")
    allowed = ("name", "hardware", "models", "workload")
    for key in raw:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            raise ClusterSpecError(f"{key}: unknown key" + (f" (did you mean {close[0]}?)" if close else ""))
    for key in ("hardware", "models"):
        if key not in raw:
            raise ClusterSpecError(f"{key}: missing required field")
    hardware = _typed(Hardware, raw["hardware"], "hardware")
    workload = _typed(Workload, raw.get("workload", {}), "workload")
    if workload.algorithm not in ("ppo", "grpo"):
        raise ClusterSpecError(f"workload.algorithm: expected ppo or grpo, got {workload.algorithm!r}")
    models_raw = raw["models"]
    if not isinstance(models_raw, dict):
        raise ClusterSpecError(f"models: expected a mapping, got {type(models_raw).__name__}")
    for key in models_raw:
        if key not in MODEL_ROLES:
            raise ClusterSpecError(f"models.{key}: unknown key; roles: {', '.join(MODEL_ROLES)}")
    if "actor" not in models_raw:
        raise ClusterSpecError("models.actor: missing required field")
    if workload.algorithm == "ppo" and "critic" not in models_raw:
        raise ClusterSpecError("models.critic: missing required field (workload.algorithm is ppo)")
    models = {role: _model(v, f"models.{role}") for role, v in models_raw.items()
              if not (role == "critic" and workload.algorithm == "grpo")}
    spec_name = raw.get("name", name)
    if not isinstance(spec_name, str):
        raise ClusterSpecError(f"name: expected str, got {spec_name!r}")
    return ClusterSpec(spec_name, hardware, models, workload)


def load_cluster_spec(path: str) -> ClusterSpec:
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise ClusterSpecError(f"{path}: no such cluster spec")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ClusterSpecError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return parse_cluster_spec(raw, name=p.stem)
