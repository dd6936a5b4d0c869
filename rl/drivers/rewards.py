"""Reward evaluation as Ray tasks, with timeouts: a failing sample is scored and counted, a failing
function is loud.

Each reward function is imported by the Ray worker itself from its recipe reference (no closures
shipped), one task per function per batch. Inside the task the batch call runs under a SIGALRM
deadline of `timeout_s`; if it raises or overruns, the samples are re-scored one at a time (each
with its own deadline) so only the offending samples get `on_error`. Raises, NaN, non-numbers and
timeouts are counted per function in the step metrics (`reward_errors/<name>`). A Ray-level backstop
catches what a signal cannot interrupt (a hang inside C code) and kills the task.

Loud, not silent: the first failure of each function is printed once (its traceback and the sample),
and a function failing on more than `rewards[i].max_error_fraction` (default 0.5) of a step's samples
stops the run with exit code 2 (RewardFailure) instead of training on `on_error` scores.

A `rewards:` entry with `model:` is scored by its reward-model actor (rl/workers/reward_model.py, started
once per run by `rl.build.reward_models_from` and passed in as `models`); one with `judge:` by a Ray task
that asks an LLM judge over HTTP (rl/workers/judge.py). Both count errors and fail loudly the same way.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import ray

from envs.rewards import load_reward
from rl.config import ConfigError, RewardConfig
from rl.run.chaos import take_reward_fault
from rl.workers.judge import batch_deadline_s, judge_batch
from rl.workers.reward_model import RewardModels

BACKSTOP_GRACE_S = 60.0  # worker start-up under load; the reward's own deadline is enforced in-task


def resolve_spec(spec: str) -> str:
    """Makes `file.py:fn` absolute so a worker with another cwd finds it."""
    if ":" in spec:
        target, name = spec.rsplit(":", 1)
        if target.endswith(".py"):
            return f"{Path(target).expanduser().resolve()}:{name}"
    return spec


def check_rewards(cfgs: list[RewardConfig]) -> None:
    """Loads every reward function in the driver once, so a missing module fails before any rollout
    (reward models fail when their actor starts, also before any rollout)."""
    for i, c in enumerate(cfgs):
        if c.kind != "fn":
            continue
        try:
            load_reward(resolve_spec(c.fn), c.style)
        except Exception as e:  # a plug-in can fail to import in any way; name the key
            raise ConfigError(f"rewards.{i}.fn: {e}") from None


class RewardTimeout(Exception):
    pass


DEADLINE_SIGNAL = signal.SIGUSR1  # not SIGALRM: libraries (math_verify) set and cancel alarms of their own


def call_with_timeout(fn, timeout_s: float, *args, **kwargs):
    """Runs fn with a deadline (Ray runs tasks on the worker's main thread), so the clock starts when the
    reward starts, not when the task was queued behind a starting worker. A timer thread signals the main
    thread with SIGUSR1 at the deadline, whose handler raises RewardTimeout: a library that uses
    `signal.alarm` for its own timeouts (math_verify does) can neither cancel nor replace it."""
    if threading.current_thread() is not threading.main_thread():
        return fn(*args, **kwargs)

    def on_deadline(signum, frame):
        raise RewardTimeout(f"reward exceeded {timeout_s} s")

    main_id, fired = threading.main_thread().ident, threading.Event()

    def fire():
        fired.set()
        signal.pthread_kill(main_id, DEADLINE_SIGNAL)

    previous = signal.signal(DEADLINE_SIGNAL, on_deadline)
    timer = threading.Timer(timeout_s, fire)
    timer.daemon = True
    timer.start()
    try:
        return fn(*args, **kwargs)
    finally:
        timer.cancel()
        if fired.is_set():  # the signal may still be pending: let it land here, not in the caller
            try:
                time.sleep(0.01)
            except RewardTimeout:
                pass
        signal.signal(DEADLINE_SIGNAL, previous)


@ray.remote(num_cpus=0.25, max_retries=1)  # a worker that died (not one that raised) is retried once
def _score_task(spec: str, style: str, prompts: list, completions: list, columns: dict,
                timeout_s: float, on_error: float, fault: tuple | None = None) -> tuple[list, int, dict | None]:
    fn = load_reward(spec, style)
    out = score_batch(_faulty(fn, *fault, timeout_s) if fault else fn, spec, prompts, completions, columns,
                      timeout_s, on_error)
    extras = {k: sum(v) / len(v) for k, v in getattr(fn, "extras", {}).items() if v}  # verl dict keys
    return (*out, extras)


def _faulty(fn, kind: str, marker: str, timeout_s: float):
    """fn whose first call raises, sleeps past its deadline, or ends its worker process (once: `marker`
    exists after the kill, so the task's retry scores normally)."""
    calls = []

    def wrapped(**kw):
        calls.append(1)
        if len(calls) == 1 and kind == "raise":
            raise RuntimeError("run.chaos: reward_raise")
        if len(calls) == 1 and kind == "hang":
            time.sleep(10 * timeout_s)  # the deadline interrupts it
        if kind == "kill_reward_worker" and not Path(marker).exists():
            Path(marker).touch()
            os._exit(1)
        return fn(**kw)
    return wrapped


@ray.remote(num_cpus=0.25, max_retries=0)
def _judge_task(judge, prompts: list, completions: list, columns: dict, on_error: float) -> tuple[list, int, dict | None]:
    values, n_err, first = [], 0, None
    for p, o, v in zip(prompts, completions, judge_batch(judge, prompts, completions, columns)):
        if isinstance(v, Exception):
            first = first or _failure(v, p, o)
        values.append(on_error if isinstance(v, Exception) else v)
        n_err += isinstance(v, Exception)
    return values, n_err, first


def score_batch(fn, spec: str, prompts: list, completions: list, columns: dict, timeout_s: float,
                on_error: float) -> tuple[list, int, dict | None]:
    """Scores a batch with TRL's keyword call (`fn(prompts=, completions=, **columns)`); if the batch
    call raises or overruns, scores one sample at a time so only the offending samples get `on_error`
    (the per-sample pass stops after 3 x timeout_s in all). -> (scores, errors, the first failure:
    {"error", "traceback", "prompt", "completion"} or None)."""
    first = None
    try:
        out = list(call_with_timeout(fn, timeout_s, prompts=prompts, completions=completions, **columns))
        if len(out) != len(completions):
            raise ValueError(f"reward {spec!r} returned {len(out)} scores for {len(completions)} samples")
        cleaned = [_clean(v, on_error) for v in out]
        if not any(e for _, e in cleaned):
            return [v for v, _ in cleaned], 0, None
        i = next(i for i, (_, e) in enumerate(cleaned) if e)
        first = _failure(ValueError(f"returned {out[i]!r}, not a finite number or None"), prompts[i], completions[i])
        return [v for v, _ in cleaned], sum(e for _, e in cleaned), first
    except Exception:  # noqa: BLE001 - a plug-in may fail in any way; re-scored one sample at a time
        pass
    values, n_err, deadline = [], 0, time.monotonic() + 3 * timeout_s
    for i, (p, o) in enumerate(zip(prompts, completions)):
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise RewardTimeout(f"per-sample budget of 3 x {timeout_s} s spent")
            one = list(call_with_timeout(fn, min(timeout_s, left), prompts=[p], completions=[o],
                                         **{k: [v[i]] for k, v in columns.items()}))
            if len(one) != 1:  # a result of the wrong length is an error, not its first element
                raise ValueError(f"reward {spec!r} returned {len(one)} scores for 1 sample")
            v, err = _clean(one[0], on_error)
            if err and first is None:
                first = _failure(ValueError(f"returned {one[0]!r}, not a finite number or None"), p, o)
        except Exception as e:  # noqa: BLE001
            v, err = on_error, True
            first = first or _failure(e, p, o)
        values.append(v)
        n_err += err
    return values, n_err, first


def _failure(e: BaseException, prompt, completion) -> dict:
    return {"error": f"{type(e).__name__}: {e}", "prompt": prompt, "completion": completion,
            "traceback": "".join(traceback.format_exception(type(e), e, e.__traceback__))}


class RewardFailure(ConfigError):
    """A reward function failed on more than `max_error_fraction` of a step's samples: the run stops
    (exit 2) instead of training on `on_error` scores."""
    label = "reward error"


@dataclass
class RewardResult:
    total: list[float]  # weighted sum per sample
    per_fn: dict[str, list[float | None]]
    errors: dict[str, int]  # raised / NaN / timed-out samples per function
    extras: dict[str, float] = field(default_factory=dict)  # "<fn>/<key>": mean of a verl dict result's other keys


def reward_names(cfgs: list[RewardConfig]) -> list[str]:
    """Metric names: the function's short name ("path/to/file.py:fn" and "pkg.mod:fn" -> "fn"), a reward
    model's folder name ("org/rm-v1" -> "rm-v1"), "judge"; suffixed #2, #3 when one name is listed twice."""
    names, seen = [], {}
    for c in cfgs:
        if c.kind == "fn":
            short = c.fn.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
        else:
            short = Path(c.model.rstrip("/")).name if c.kind == "model" else "judge"
        seen[short] = seen.get(short, 0) + 1
        names.append(short if seen[short] == 1 else f"{short}#{seen[short]}")
    return names


def example_columns(examples: list, idx: list[int]) -> dict[str, list]:
    """The dataset columns of examples[idx], one value per sample, as reward functions get them by name;
    `answer` is the reference answer (from `task.answer_column`)."""
    columns = {"answer": [examples[g].answer for g in idx]}
    for k in {k for ex in examples for k in ex.columns}:
        if k not in ("prompts", "completions", "completion_ids"):
            columns[k] = [examples[g].columns.get(k) for g in idx]
    return columns


def score(cfgs: list[RewardConfig], prompts: list, completions: list[str], columns: dict,
          completion_ids: list[list[int]] | None = None, models: RewardModels | None = None) -> RewardResult:
    """Every reward on the samples, all at once (TRL's contract for functions: keyword arguments; for
    conversational prompts, completions as [{"role": "assistant", "content": text}]; reward models and
    judges read the completion text). `models`: the run's reward-model actors, by index into `cfgs`.
    The first failure of each reward is printed once with its traceback; a reward failing on more than
    its `max_error_fraction` of the samples raises RewardFailure."""
    texts = list(completions)
    if any(not isinstance(p, str) for p in prompts):
        completions = [[{"role": "assistant", "content": t}] for t in completions]
    if completion_ids is not None:
        columns = {**columns, "completion_ids": completion_ids}
    refs = []
    for i, c in enumerate(cfgs):
        if c.kind == "model":
            actor = models.get(i) if models is not None else None
            if actor is None:
                raise ConfigError(f"rewards.{i}.model: scored without its reward-model actor (this driver does not "
                                  "start reward models; list a rule reward first for evaluation-only drivers)")
            refs.append(actor.score.remote(prompts, texts))
        elif c.kind == "judge":
            refs.append(_judge_task.remote(c.judge, prompts, texts, {k: v for k, v in columns.items()
                                                                     if k != "completion_ids"}, c.on_error))
        else:
            fault = take_reward_fault()  # run.chaos only: (kind, marker) for this batch, else None
            parts = []
            for j, idx in enumerate(chunk_indices(len(completions), c.workers)):
                pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
                parts.append((idx, _score_task.remote(resolve_spec(c.fn), c.style, pick(prompts), pick(completions),
                                                      {k: pick(v) for k, v in columns.items()}, c.timeout_s,
                                                      c.on_error, fault if j == 0 else None)))
            refs.append(parts)
    per_fn, errors, extras, n = {}, {}, {}, len(completions)
    for name, c, ref in zip(reward_names(cfgs), cfgs, refs):
        collect = {"model": _collect_model, "judge": _collect}.get(c.kind, _collect_parts)
        per_fn[name], errors[name], first, *more = collect(c, ref, n)
        extras.update({f"{name}/{k}": v for k, v in (more[0] if more else {}).items()})
        _report(name, c, errors[name], n, first)
    total = []
    for i in range(n):
        total.append(sum(c.weight * per_fn[k][i] for k, c in zip(per_fn, cfgs) if per_fn[k][i] is not None))
    return RewardResult(total=total, per_fn=per_fn, errors=errors, extras=extras)


_REPORTED: set[str] = set()  # reward specs whose first failure this process has printed


def _report(name: str, c: RewardConfig, n_err: int, n: int, first: dict | None) -> None:
    if not n_err:
        return
    what = first["error"] if first else "timed out or crashed its worker (killed by the backstop)"
    where = (f"\n  on prompt {str(first['prompt'])[:200]!r}\n  completion {str(first['completion'])[:200]!r}"
             if first else "")
    if n_err > c.max_error_fraction * n:
        raise RewardFailure(f"rewards: {c.label!r} failed on {n_err} of {n} samples (more than max_error_fraction="
                            f"{c.max_error_fraction}): {what}{where}" + (f"\n{first['traceback']}" if first else ""))
    if c.label not in _REPORTED:
        _REPORTED.add(c.label)
        print(f"reward {name} ({c.label}) failed on {n_err} of {n} samples, scored on_error={c.on_error} (printed "
              f"once; counted in reward_errors/{name}): {what}{where}\n{first['traceback'] if first else ''}",
              file=sys.stderr, flush=True)


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


def _collect(c: RewardConfig, ref, n: int) -> tuple[list, int, dict | None]:
    """The worker enforces timeout_s itself (a judge its per-call timeouts); this backstop (worker start-up,
    C-level hangs that SIGALRM cannot interrupt) scores the whole batch on_error and kills the task."""
    limit = batch_deadline_s(c.judge, n) if c.kind == "judge" else 4 * c.timeout_s
    try:
        return ray.get(ref, timeout=limit + BACKSTOP_GRACE_S)
    except (ray.exceptions.GetTimeoutError, ray.exceptions.RayTaskError, ray.exceptions.WorkerCrashedError):
        ray.cancel(ref, force=True)
        return [c.on_error] * n, n, None


def chunk_indices(n: int, parts: int) -> list[list[int]]:
    """Contiguous index chunks, at most `parts`, sizes differing by at most one.
    Example: chunk_indices(5, 2) -> [[0, 1, 2], [3, 4]]; chunk_indices(1, 4) -> [[0]]."""
    parts = max(1, min(parts, n))
    size, extra = divmod(n, parts)
    bounds = [0]
    for j in range(parts):
        bounds.append(bounds[-1] + size + (j < extra))
    return [list(range(a, b)) for a, b in zip(bounds, bounds[1:])] if n else [[]]


def _collect_parts(c: RewardConfig, parts: list, n: int) -> tuple[list, int, dict | None, dict]:
    """A rule reward scored as parallel Ray tasks (`workers`): each part collected with its own backstop,
    scores put back in sample order, errors summed, extras averaged weighted by part size."""
    values, n_err, first, sums = [None] * n, 0, None, {}
    for idx, ref in parts:
        v, err, f, *more = _collect(c, ref, len(idx))
        for i, x in zip(idx, v):
            values[i] = x
        n_err, first = n_err + err, first or f
        for k, x in (more[0] if more else {}).items():
            sums.setdefault(k, []).append((x, len(idx)))
    return values, n_err, first, {k: sum(x * w for x, w in v) / sum(w for _, w in v) for k, v in sums.items()}


def _collect_model(c: RewardConfig, ref, n: int) -> tuple[list, int, dict | None]:
    """A reward model's scores, NaN counted; a raising or dead actor, or one slower than timeout_s per
    batch_size samples, scores the batch on_error (and its first failure is reported)."""
    limit = c.timeout_s * math.ceil(n / c.batch_size) + BACKSTOP_GRACE_S
    try:
        raw = ray.get(ref, timeout=limit)
        if len(raw) != n:
            raise ValueError(f"reward model returned {len(raw)} scores for {n} samples")
    except (ray.exceptions.GetTimeoutError, ray.exceptions.RayError, ValueError) as e:
        return [c.on_error] * n, n, {"error": f"{type(e).__name__}: {str(e)[:2000]}", "prompt": "(the batch)",
                                     "completion": "(the batch)", "traceback": ""}
    cleaned = [_clean(v, c.on_error) for v in raw]
    bad = [i for i, (_, e) in enumerate(cleaned) if e]
    first = {"error": f"score {raw[bad[0]]!r} is not a finite number", "prompt": "(sample)",
             "completion": f"(sample {bad[0]})", "traceback": ""} if bad else None
    return [v for v, _ in cleaned], len(bad), first
