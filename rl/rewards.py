"""Reward evaluation as Ray tasks, with timeouts, that never stops the run.

Each reward function is imported by the Ray worker itself from its recipe reference (no closures
shipped). A batch is first scored in one task per function; if that task raises or times out, the
batch is re-scored one sample per task so only the offending samples get `on_error`. Raises, NaN,
non-numbers and timeouts are counted per function in the step metrics.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import ray

from envs.rewards import load_reward
from rl.config import RewardConfig


def resolve_spec(spec: str) -> str:
    """Makes `file.py:fn` absolute so a worker with another cwd finds it."""
    if ":" in spec:
        target, name = spec.rsplit(":", 1)
        if target.endswith(".py"):
            return f"{Path(target).expanduser().resolve()}:{name}"
    return spec


def check_rewards(cfgs: list[RewardConfig]) -> None:
    """Loads every reward in the driver once, so a missing module fails before any rollout."""
    from rl.config import ConfigError
    for i, c in enumerate(cfgs):
        try:
            load_reward(resolve_spec(c.fn), c.style)
        except Exception as e:  # a plug-in can fail to import in any way; name the key
            raise ConfigError(f"rewards.{i}.fn: {e}") from None


@ray.remote(num_cpus=0.25, max_retries=0)
def _score_task(spec: str, style: str, prompts: list[str], completions: list[str], columns: dict) -> list:
    fn = load_reward(spec, style)
    out = fn(prompts, completions, **columns)
    out = list(out)
    if len(out) != len(completions):
        raise ValueError(f"reward {spec!r} returned {len(out)} scores for {len(completions)} samples")
    return out


@dataclass
class RewardResult:
    total: list[float]  # weighted sum per sample
    per_fn: dict[str, list[float | None]]
    errors: dict[str, int]  # raised / NaN / timed-out samples per function


def score(cfgs: list[RewardConfig], prompts: list[str], completions: list[str], columns: dict) -> RewardResult:
    per_fn, errors = {}, {}
    pending = {c.fn: _score_task.remote(resolve_spec(c.fn), c.style, prompts, completions, columns)
               for c in cfgs}
    for c in cfgs:
        values, n_err = _collect(c, pending[c.fn], prompts, completions, columns)
        per_fn[c.fn], errors[c.fn] = values, n_err
    total = []
    for i in range(len(completions)):
        total.append(sum(c.weight * per_fn[c.fn][i] for c in cfgs if per_fn[c.fn][i] is not None))
    return RewardResult(total=total, per_fn=per_fn, errors=errors)


def _clean(v, on_error: float) -> tuple[float | None, bool]:
    if v is None:
        return None, False
    try:
        f = float(v)
    except (TypeError, ValueError):
        return on_error, True
    return (on_error, True) if not math.isfinite(f) else (f, False)


def _collect(c: RewardConfig, ref, prompts, completions, columns) -> tuple[list, int]:
    try:
        raw = ray.get(ref, timeout=c.timeout_s)
        cleaned = [_clean(v, c.on_error) for v in raw]
        return [v for v, _ in cleaned], sum(e for _, e in cleaned)
    except (ray.exceptions.GetTimeoutError, ray.exceptions.RayTaskError):
        ray.cancel(ref, force=True)
    # one sample per task: only the samples that misbehave are scored on_error
    spec = resolve_spec(c.fn)
    refs = [_score_task.remote(spec, c.style, [p], [o], {k: [v[i]] for k, v in columns.items()})
            for i, (p, o) in enumerate(zip(prompts, completions))]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=c.timeout_s)
    ready_set = set(ready)
    values, n_err = [], 0
    for r in refs:
        if r not in ready_set:
            ray.cancel(r, force=True)
            values.append(c.on_error)
            n_err += 1
            continue
        try:
            v, err = _clean(ray.get(r)[0], c.on_error)
        except ray.exceptions.RayTaskError:
            v, err = c.on_error, True
        values.append(v)
        n_err += err
    return values, n_err
