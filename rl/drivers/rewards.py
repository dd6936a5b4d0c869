"""Reward evaluation as Ray tasks, with timeouts, that never stops the run.

Each reward function is imported by the Ray worker itself from its recipe reference (no closures
shipped), one task per function per batch. Inside the task the batch call runs under a SIGALRM
deadline of `timeout_s`; if it raises or overruns, the samples are re-scored one at a time (each
with its own deadline) so only the offending samples get `on_error`. Raises, NaN, non-numbers and
timeouts are counted per function in the step metrics. A Ray-level backstop catches what a signal
cannot interrupt (a hang inside C code) and kills the task.
"""
from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import ray

from envs.rewards import load_reward
from rl.config import RewardConfig

BACKSTOP_GRACE_S = 60.0  # worker start-up under load; the reward's own deadline is enforced in-task


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


class RewardTimeout(Exception):
    pass


def call_with_timeout(fn, timeout_s: float, *args, **kwargs):
    """Runs fn with a SIGALRM deadline (Ray runs tasks on the worker's main thread), so the clock
    starts when the reward starts, not when the task was queued behind a starting worker."""
    if threading.current_thread() is not threading.main_thread():
        return fn(*args, **kwargs)

    def on_alarm(signum, frame):
        raise RewardTimeout(f"reward exceeded {timeout_s} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        return fn(*args, **kwargs)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@ray.remote(num_cpus=0.25, max_retries=0)
def _score_task(spec: str, style: str, prompts: list[str], completions: list[str], columns: dict,
                timeout_s: float, on_error: float) -> tuple[list, int]:
    """Scores a batch; if the batch call raises or overruns, scores one sample at a time so only
    the offending samples get `on_error` (the per-sample pass stops after 3 x timeout_s in all)."""
    fn = load_reward(spec, style)
    try:
        out = list(call_with_timeout(fn, timeout_s, prompts, completions, **columns))
        if len(out) != len(completions):
            raise ValueError(f"reward {spec!r} returned {len(out)} scores for {len(completions)} samples")
        cleaned = [_clean(v, on_error) for v in out]
        return [v for v, _ in cleaned], sum(e for _, e in cleaned)
    except Exception:  # noqa: BLE001 - a plug-in may fail in any way; it must not stop the run
        pass
    values, n_err, deadline = [], 0, time.monotonic() + 3 * timeout_s
    for i, (p, o) in enumerate(zip(prompts, completions)):
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise RewardTimeout("per-sample budget spent")
            one = list(call_with_timeout(fn, min(timeout_s, left), [p], [o], **{k: [v[i]] for k, v in columns.items()}))
            if len(one) != 1:  # a result of the wrong length is an error, not its first element
                raise ValueError(f"reward {spec!r} returned {len(one)} scores for 1 sample")
            v, err = _clean(one[0], on_error)
        except Exception:  # noqa: BLE001
            v, err = on_error, True
        values.append(v)
        n_err += err
    return values, n_err


@dataclass
class RewardResult:
    total: list[float]  # weighted sum per sample
    per_fn: dict[str, list[float | None]]
    errors: dict[str, int]  # raised / NaN / timed-out samples per function


def reward_names(cfgs: list[RewardConfig]) -> list[str]:
    """Metric names: the function's short name ("path/to/file.py:fn" and "pkg.mod:fn" -> "fn"), suffixed
    #2, #3 when one name is listed twice."""
    names, seen = [], {}
    for c in cfgs:
        short = c.fn.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
        seen[short] = seen.get(short, 0) + 1
        names.append(short if seen[short] == 1 else f"{short}#{seen[short]}")
    return names


def score(cfgs: list[RewardConfig], prompts: list[str], completions: list[str], columns: dict) -> RewardResult:
    refs = [_score_task.remote(resolve_spec(c.fn), c.style, prompts, completions, columns, c.timeout_s,
                               c.on_error) for c in cfgs]
    per_fn, errors = {}, {}
    for name, c, ref in zip(reward_names(cfgs), cfgs, refs):
        per_fn[name], errors[name] = _collect(c, ref, len(completions))
    total = []
    for i in range(len(completions)):
        total.append(sum(c.weight * per_fn[n][i] for n, c in zip(per_fn, cfgs) if per_fn[n][i] is not None))
    return RewardResult(total=total, per_fn=per_fn, errors=errors)


def _clean(v, on_error: float) -> tuple[float | None, bool]:
    """A score: None (not applicable), or a finite number; anything else (a string, a bool, NaN) is an error."""
    if v is None:
        return None, False
    if isinstance(v, (str, bytes, bool)) or type(v).__name__ == "bool_":
        return on_error, True
    try:
        f = float(v)
    except (TypeError, ValueError):
        return on_error, True
    return (on_error, True) if not math.isfinite(f) else (f, False)


def _collect(c: RewardConfig, ref, n: int) -> tuple[list, int]:
    """The worker enforces timeout_s itself; this backstop (worker start-up, C-level hangs that
    SIGALRM cannot interrupt) scores the whole batch on_error and kills the task."""
    try:
        return ray.get(ref, timeout=4 * c.timeout_s + BACKSTOP_GRACE_S)
    except (ray.exceptions.GetTimeoutError, ray.exceptions.RayTaskError, ray.exceptions.WorkerCrashedError):
        ray.cancel(ref, force=True)
        return [c.on_error] * n, n
