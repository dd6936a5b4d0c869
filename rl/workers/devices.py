"""Which device an actor computes on, and mixed precision, the same code on CPU and GPU.

An actor that asked Ray for GPUs (`num_gpus` in the recipe's `resources:`) sees only its own in
CUDA_VISIBLE_DEVICES (Ray sets it), so its device is cuda:0 of that view; an actor that asked for none
stays on the CPU and never touches CUDA (Ray 2.60 no longer hides the GPUs from it).

Mixed precision as users expect: `model.master_dtype` (fp32) holds the weights and the optimizer
state; `model.dtype` is the compute dtype of the forward (autocast), e.g. bf16.
Example: dev = actor_device(); with compute_autocast(dev, "bfloat16", "float32"): loss = f(model(x))
"""
from __future__ import annotations

import contextlib

import torch


def assigned_gpu_ids() -> list:
    """The GPU ids Ray gave this actor ([] outside Ray or without a GPU request)."""
    try:
        import ray
        return list(ray.get_gpu_ids()) if ray.is_initialized() else []
    except Exception:  # not in a Ray worker
        return []


def actor_device() -> torch.device:
    """cuda when Ray assigned this actor a GPU and CUDA works, else cpu."""
    if assigned_gpu_ids() and torch.cuda.is_available():
        return torch.device("cuda", 0)
    return torch.device("cpu")


def compute_autocast(device: torch.device, compute_dtype: str, master_dtype: str):
    """autocast to the compute dtype when it differs from the master weights' dtype, else a no-op."""
    if compute_dtype == master_dtype:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, compute_dtype))


def placement_info() -> dict:
    """Where this actor runs: the GPU ids Ray gave it, its torch device and its node."""
    import ray
    return {"gpu_ids": [str(g) for g in assigned_gpu_ids()], "device": str(actor_device()),
            "node_id": ray.get_runtime_context().get_node_id()}


def peak_memory_mb(device: torch.device, reset: bool = False) -> float:
    """The peak memory this process has used on `device` since the last reset, in MiB: CUDA's
    max_memory_allocated, or on CPU the resident set's high-water mark (VmHWM; Linux resets it through
    /proc/self/clear_refs). reset=True: start a new measurement (returns the value before it); on CPU it
    first hands the heap's free pages back to the OS (glibc malloc_trim), else memory freed earlier (e.g.
    the model's load-time copies) stays resident and hides new allocations from the high-water mark."""
    if device.type == "cuda":
        out = torch.cuda.max_memory_allocated(device) / 2**20
        if reset:
            torch.cuda.reset_peak_memory_stats(device)
        return out
    import re
    with open("/proc/self/status") as f:
        out = int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024
    if reset:
        _trim_heap()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    return out


def _trim_heap() -> None:
    import ctypes
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the mark may then include freed memory
        pass


def move_state(model: torch.nn.Module, opt, device: torch.device, optimizer: bool, params: bool) -> float:
    """Moves AdamW state (optimizer) and parameters (params) to `device` in place -> MiB moved.
    DTensors (FSDP2 shards) stay where they are."""
    from torch.distributed.tensor import DTensor
    moved = 0
    for t in [p for p in model.parameters() if not isinstance(p, DTensor)] if params else []:
        moved += t.numel() * t.element_size()
        t.data = t.data.to(device, non_blocking=True)
    for state in opt.state.values() if optimizer else ():
        for k, v in state.items():
            if torch.is_tensor(v) and not isinstance(v, DTensor) and v.device != device:
                moved += v.numel() * v.element_size()
                state[k] = v.to(device, non_blocking=True)
    if device.type == "cpu" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    return moved / 2**20
