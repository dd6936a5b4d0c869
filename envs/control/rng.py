"""Counter-based RNG for per-env resets: every random number is a pure function of
(seed, global env id, reset counter, state component), so a trajectory does not depend on how
many threads, shards or machines step the envs, nor on which other envs reset.

    h = mix(mix(mix(mix(seed) ^ env_id) ^ counter) ^ component)        (32-bit hash chain)
    u = (h >> 8) * 2^-24                                                 u in [0, 1), 24 bits

`mix` is a 2-round xor-shift-multiply finaliser (the murmur3 fmix32 shape, Appleby 2008; counter-
based generation as in Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3").
Multipliers are < 2^31 so every product of a 32-bit value fits in a signed int64: the same integer
code runs in numpy, numba and torch (which has no uint64 shifts) and gives identical bits.

Shapes: env_ids, counters [n] int64 -> [n] float32.
Example: uniform01(np, 7, np.arange(3), np.zeros(3, np.int64), 0) -> array([0.62.., 0.33.., 0.91..])
"""
from __future__ import annotations

import numpy as np

MASK32 = 0xFFFFFFFF
MUL1 = 0x7FEB352D
MUL2 = 0x2C1B3C6D
INV24 = 1.0 / (1 << 24)


def mix32(x, xp=np):
    """fmix32-shaped finaliser on int64 values in [0, 2^32); works on numpy arrays, torch tensors,
    Python ints. Example: mix32(np.int64(1)) -> a value in [0, 2^32)."""
    x = x ^ (x >> 16)
    x = (x * MUL1) & MASK32
    x = x ^ (x >> 15)
    x = (x * MUL2) & MASK32
    return x ^ (x >> 16)


def seed_key(seed: int) -> int:
    """Fold an arbitrary Python int seed into the 32-bit key of the hash chain."""
    seed = int(seed)
    return int(mix32((seed & MASK32) ^ mix32((seed >> 32) & MASK32)))


def uniform01(xp, key: int, env_ids, counters, component: int):
    """U[0,1) float32 for each (env id, counter) pair; `xp` is numpy or torch (no host sync)."""
    h = mix32(env_ids ^ key)
    h = mix32(h ^ (counters & MASK32))
    h = mix32(h ^ component)
    u = (h >> 8).to(xp.float32) if xp.__name__ == "torch" else (h >> 8).astype(np.float32)
    return u * np.float32(INV24)


def uniform_scalar(key: int, env_id: int, counter: int, component: int) -> float:
    """Pure-Python twin of `uniform01` for one draw (used by the numba kernel and tests)."""
    h = mix32((env_id ^ key) & MASK32)
    h = mix32(h ^ (counter & MASK32))
    h = mix32(h ^ component)
    return (h >> 8) * INV24
