"""One-pass bf16 delta encoding with numba (optional: rollout/delta_sync.py falls back to torch ops).

Per parameter of a bucket, one loop over its fp32 (or bf16) values: round to bf16 exactly as torch
does (round to nearest even; any NaN -> 0xFFFF), compare with the bits last shipped, and where they
differ record the position and the new bits and update the held bits in place. That is one read
of the weights and of the held bits instead of torch's separate convert, compare, nonzero and gather
passes (each a full sweep of the bucket).

Example: k = encode_f32(weights.view(np.uint32), held_bits, 0, positions, values, 0)  # numba compiled on first call
"""
from __future__ import annotations

import importlib.util

import numpy as np


def _encode_f32(src_u32, held_i16, offset, positions, values, count):
    """src_u32: fp32 bits [n]; held_i16: the bucket's held bf16 bits; -> count after this tensor."""
    for i in range(src_u32.size):
        u = np.uint32(src_u32[i])
        if (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):  # NaN
            b = np.int16(-1)  # 0xFFFF: what torch 2.13 writes for every NaN (checked in the tests)
        else:
            b = np.uint32(u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
            b = np.int16(np.uint16(b))
        j = offset + i
        if held_i16[j] != b:
            held_i16[j] = b
            positions[count] = j
            values[count] = b
            count += 1
    return count


def _encode_bits(src_i16, held_i16, offset, positions, values, count):
    """The same for weights already in bf16 (their bits as int16)."""
    for i in range(src_i16.size):
        b = src_i16[i]
        j = offset + i
        if held_i16[j] != b:
            held_i16[j] = b
            positions[count] = j
            values[count] = b
            count += 1
    return count


# numba is imported (and the kernels compiled) on first use only, in the learner: imported at module
# load it would also land in engine workers, where it breaks vLLM's start-up (llvmlite's
# "_lib_fn_wrapper object has no attribute 'get'" in EngineWorker.__init__).
AVAILABLE = importlib.util.find_spec("numba") is not None
_compiled: dict = {}


def _kernel(fn):
    if fn.__name__ not in _compiled:
        from numba import njit
        _compiled[fn.__name__] = njit(cache=True, nogil=True)(fn)
    return _compiled[fn.__name__]


def encode_f32(*args):
    return _kernel(_encode_f32)(*args)


def encode_bits(*args):
    return _kernel(_encode_bits)(*args)
