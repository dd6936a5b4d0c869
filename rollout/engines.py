"""Engine builders by name (`rollout.engine` in recipes). A builder gets the model name and returns
an object speaking the engine protocol of rollout/types.py."""
from __future__ import annotations

from algorithms.registry import Registry

ENGINES: Registry = Registry("rollout engine")


@ENGINES.register("hf")
def build_hf(model, tokenizer, **kwargs):
    from rollout.hf_engine import HFEngine
    return HFEngine(model, tokenizer, **kwargs)
