"""What a learner's checkpoint holds besides the weights: the HF export, sharded (DCP) state, RNG state."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from rl.workers.models import load_tokenizer


def save_hf_folder(model, tokenizer_name: str, path: str) -> str:
    """`save_pretrained` of `model` (safetensors) plus the tokenizer of `tokenizer_name`, written atomically."""
    import shutil
    import tempfile
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-{target.name}-"))
    model.save_pretrained(tmp, safe_serialization=True)
    load_tokenizer(tokenizer_name).save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return str(target)


def load_sharded_state(model, opt, dcp_dir: Path) -> None:
    """Model + optimizer state from a torch.distributed.checkpoint folder, resharded to however `model`
    is laid out now: any number of FSDP2 / DDP ranks, or one plain process."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    model_sd, optim_sd = get_state_dict(model, opt)  # templates: where the pieces go (optimizer state initialised)
    state = {"model": model_sd, "optimizer": optim_sd}
    dcp.load(state, checkpoint_id=str(dcp_dir))
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def sharded_extras(path: Path, rank: int, world_size: int) -> dict:
    """The scheduler + RNG state of `rank` from a sharded checkpoint (rank{r}.pt). Saved by another
    number of ranks: rank 0's schedule (the same on every rank), and a warning that the per-rank RNG
    streams cannot carry over, so the resumed run is exact in weights and optimizer, not in sampling."""
    import warnings
    mine = path / f"rank{rank}.pt"
    extra = torch.load(mine if mine.exists() else path / "rank0.pt", weights_only=False)
    if extra["world_size"] != world_size:
        warnings.warn(f"{path} was saved by {extra['world_size']} learner ranks and is loaded by {world_size}: "
                      "weights and optimizer state reshard exactly; RNG streams restart from rank 0's", stacklevel=2)
    return extra


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
