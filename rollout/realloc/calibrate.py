"""Fit the cost model's device constants to measured call times (log-space least squares).

The three constants (compute_efficiency, memory_efficiency, overhead_us_per_layer) are found by
a coarse-to-fine grid search minimising mean (log t_model - log t_measured)^2; the relative error
|t_model - t_measured| / t_measured of every measurement is reported.

`fit_constants` fits any measured quantity given as a function of the hardware (`rl plan
--calibrate`: a run's per-call times, some of them sums of calls in the run's layouts);
`fit_hardware` is it for single calls on one device.

Example: hw_fit, errors = fit_hardware(hw, [(shape, Call("inference", 4, 32, 32), 0.12), ...])
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from functools import partial

import numpy as np

from rollout.realloc.cost_model import Call, Hardware, LlamaShape, Strategy, call_seconds

ONE = Strategy(1, 1, 1)
_BOUNDS = {"compute_efficiency": (1e-3, 1.0), "memory_efficiency": (1e-3, 1.0),
           "overhead_us_per_layer": (1.0, 1e5)}


def predict(hw: Hardware, shape: LlamaShape, call: Call, strategy: Strategy = ONE) -> float:
    return call_seconds(shape, call, strategy, hw)


def _loss(hw: Hardware, models, measured) -> float:
    return float(np.mean([(math.log(f(hw)) - math.log(t)) ** 2 for f, t in zip(models, measured)]))


def fit_hardware(hw: Hardware, data: list[tuple[LlamaShape, Call, float]], rounds: int = 4,
                 points: int = 9) -> tuple[Hardware, list[float]]:
    """Returns (hardware with fitted constants, relative error per measurement)."""
    models = [partial(predict, shape=s, call=c) for s, c, _ in data]
    return fit_constants(hw, models, [t for _, _, t in data], rounds, points)


def fit_constants(hw: Hardware, models: list[Callable[[Hardware], float]], measured: list[float],
                  rounds: int = 4, points: int = 9) -> tuple[Hardware, list[float]]:
    """models[i](hw) -> modelled seconds of measured[i]. Returns (fitted hardware, relative errors)."""
    best = hw
    span = {k: (math.log10(lo), math.log10(hi)) for k, (lo, hi) in _BOUNDS.items()}
    for _ in range(rounds):
        grids = {k: np.logspace(a, b, points) for k, (a, b) in span.items()}
        best_loss = _loss(best, models, measured)
        for ce in grids["compute_efficiency"]:
            for me in grids["memory_efficiency"]:
                for ov in grids["overhead_us_per_layer"]:
                    cand = dataclasses.replace(best, compute_efficiency=float(ce),
                                               memory_efficiency=float(me), overhead_us_per_layer=float(ov))
                    loss = _loss(cand, models, measured)
                    if loss < best_loss:
                        best, best_loss = cand, loss
        width = {k: (b - a) / (points - 1) * 1.5 for k, (a, b) in span.items()}
        span = {k: (max(math.log10(_BOUNDS[k][0]), math.log10(getattr(best, k)) - w),
                    min(math.log10(_BOUNDS[k][1]), math.log10(getattr(best, k)) + w))
                for k, w in width.items()}
    errors = [abs(f(best) - t) / t for f, t in zip(models, measured)]
    return best, errors
