"""Rollouts in flight while the learner trains: `trainer.max_staleness_steps` = k (SPECS §11).

k = 0 (the default) is the synchronous loop: step s's experience is drawn when step s starts, with the
weights of version s. With k >= 1, batches are drawn by one background thread (the engines are Ray
actors: they generate while the learner actor trains) on a fixed schedule:

    batch b is drawn with weight version v(b) = max(0, b - k)        staleness s - v(s) <= k

Batches 0..k are drawn with the first weights; after step s's update is synced (version s + 1), batch
s + 1 + k is launched. Before every sync the driver waits for the draws in flight (`before_sync`), so
a draw never straddles two versions: the schedule, and with it every sample, is the same run after run,
and a `--resume` reproduces the uninterrupted run. (Consequently k > 1 buys no more overlap than k = 1
here, only a deeper queue; it matters where generation times vary, as with dynamic sampling.)

Every sample carries the weight version it was sampled with (`RolloutBatch.weight_versions`); at train
time a group with a sample older than k versions is dropped and counted (`staleness/dropped_samples`).
The queue is part of the checkpoint: `state_dict` waits for the draws in flight and stores their
results, `load_state_dict` puts them back.

`rollout_thread: true` at k = 0 runs this machinery with no overlap (batch s + 1 is launched after
sync s + 1): it must reproduce the synchronous loop exactly, the check async pipelines often lack.
"""
from __future__ import annotations

import base64
import pickle
import queue
import threading
from concurrent.futures import Future
from typing import Callable

import torch

from rl.drivers.experience import Experience, StepData


class RolloutPipeline:
    def __init__(self, experience: Experience, collect: Callable[[Experience, int], StepData],
                 max_staleness_steps: int = 0, threaded: bool | None = None):
        self.experience, self.collect, self.k = experience, collect, int(max_staleness_steps)
        self.threaded = self.k > 0 if threaded is None else bool(threaded)
        self._pool = _SerialWorker() if self.threaded else None
        self._queue: dict[int, Future] = {}

    # -- the schedule ----------------------------------------------------------------------
    def start(self, step: int, total_steps: int) -> None:
        """Launches the draws of steps step..step+k not restored from a checkpoint."""
        self.total_steps = total_steps
        if self.threaded:
            for b in range(step, min(step + self.k + 1, total_steps)):
                if b not in self._queue:
                    self._launch(b)

    def next(self, step: int) -> tuple[StepData, dict[str, float]]:
        """Step `step`'s experience, samples older than k versions dropped. -> (data, staleness metrics)"""
        if not self.threaded:
            return self.collect(self.experience, step), {}
        data = self._queue.pop(step).result()
        return drop_stale(data, step, self.k)

    def before_sync(self) -> None:
        """Waits for the draws in flight: none may straddle the coming weight update."""
        for f in self._queue.values():
            f.result()

    def after_sync(self, step: int) -> None:
        """Step `step` trained and synced (version step + 1): launches the draw of step + 1 + k."""
        b = step + 1 + self.k
        if self.threaded and b < self.total_steps:
            self._launch(b)

    def _launch(self, b: int) -> None:
        self._queue[b] = self._pool.submit(self.collect, self.experience, b)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    # -- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The experience state (sampler, allocator) after every draw so far, and those draws' results."""
        self.before_sync()
        state = self.experience.state_dict()
        if self.threaded:
            state["in_flight"] = {str(b): _encode(f.result()) for b, f in sorted(self._queue.items())}
        return state

    def load_state_dict(self, state: dict) -> None:
        self.experience.load_state_dict(state)
        for b, blob in state.get("in_flight", {}).items():
            done: Future = Future()
            done.set_result(_decode(blob))
            self._queue[int(b)] = done


class _SerialWorker:
    """One daemon thread running submitted calls in order. Daemon: after a failed step (a dead actor) a
    draw may stay blocked on its engine; it must not keep the process alive (ThreadPoolExecutor's
    threads are joined at exit)."""

    def __init__(self):
        self._jobs: queue.Queue = queue.Queue()
        threading.Thread(target=self._loop, name="rollouts", daemon=True).start()

    def submit(self, fn, *args) -> Future:
        done: Future = Future()
        self._jobs.put((done, fn, args))
        return done

    def shutdown(self) -> None:
        self._jobs.put(None)

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            done, fn, args = job
            try:
                done.set_result(fn(*args))
            except BaseException as e:  # noqa: BLE001 - handed to whoever waits on the draw
                done.set_exception(e)


def drop_stale(data: StepData, step: int, max_staleness_steps: int) -> tuple[StepData, dict[str, float]]:
    """Keeps the groups whose every sample was drawn at most `max_staleness_steps` versions before
    `step`'s weights. -> (kept data, {staleness/mean, /max over the drawn samples, /dropped_samples})"""
    versions = data.batch.weight_versions
    if versions is None:
        raise ValueError("the engines returned no weight versions; staleness cannot be bounded")
    stale = step - versions
    bad_groups = set(data.batch.group_ids[stale > max_staleness_steps].tolist())
    metrics = {"staleness/mean": float(stale.float().mean()), "staleness/max": int(stale.max()),
               "staleness/dropped_samples": int(torch.isin(data.batch.group_ids,
                                                           torch.tensor(sorted(bad_groups), dtype=torch.long)).sum())}
    if bad_groups:
        data = data.select_groups([g for g in range(len(data.examples)) if g not in bad_groups])
    return data, metrics


def _encode(data: StepData) -> str:
    return base64.b64encode(pickle.dumps(data)).decode("ascii")


def _decode(blob: str) -> StepData:
    return pickle.loads(base64.b64decode(blob))
